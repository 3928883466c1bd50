"""Device memory with explicit owners.

An allocation that leaves a program run (an output, an uploaded array) is held by exactly one
`Storage`. Arrays, and numpy views of CPU arrays, hold the Storage; when nothing holds it any more,
a weak-reference callback gives the allocation back to the pool. The pool's claim table owns the raw
buffer (and the weak reference) for as long as the claim stands, so the cyclic garbage collector
never sees the buffer as garbage, the allocator's own finalizer (numba frees device memory through
one on each allocation) never runs under a live claim, and nothing is resurrected from `__del__`.
(A weak reference with a callback, not `weakref.finalize`: the same guarantee at a third of the
cost, which every output of every call pays.) Intermediate buffers are owned by the program run
that took them (runtime/executor.py), which gives each back after its last reader.

A fresh large buffer costs page faults on first touch (a 64 MiB host output up to ~20 ms) or a
driver allocation on the GPU, so the pool keeps freed buffers, keyed by (size, dtype), up to a bound
on idle bytes; `jn.empty_cache()` releases them.
"""

from __future__ import annotations

import bisect
import sys
import threading
import weakref
from collections.abc import Callable

import numpy as np

MAX_BYTES = 1 << 31  # keep at most this much idle memory per device
MAX_PER_KEY = 8


class Storage:
    """One allocation and the claim on it. While claimed, the pool's claim table holds the raw buffer
    and a weak reference to this Storage whose callback returns the buffer to the pool; an exported
    Storage (`export`) gives up its claim, so its memory is never handed to anyone else."""

    __slots__ = ("__weakref__", "_claim", "_claims", "buf")

    def __init__(self, buf, claims: dict, reclaim: Callable):
        self.buf = buf  # flat, contiguous, on the pool's device
        self._claim = weakref.ref(self, reclaim)
        self._claims = claims
        claims[self._claim] = buf

    def export(self) -> None:
        """Shared outside jitnet (`__cuda_array_interface__`): never recycled."""
        if self._claim is not None:
            self._claims.pop(self._claim, None)
            self._claim = None

    def reclaimed(self) -> bool:
        """True once the pool took the buffer back: only an object resurrected by a finalizer can
        still reach such a Storage, and reading it would read someone else's memory."""
        return self._claim is not None and self._claim not in self._claims


class BufferPool:
    """Idle buffers of one device, and the door through which the device allocates.

    `allocate(size, dtype)` makes a fresh buffer (tests replace it with an allocator that reuses
    freed memory at once, as a GPU driver does). With `check` on, every buffer handed out is
    compared with the memory of every live Storage: an overlap means memory is about to be shared,
    and raises before any kernel can write it (JITNET_CHECK_MEMORY=1; on in CI)."""

    def __init__(self, allocate: Callable, address: Callable, check: bool = False):
        self.allocate = allocate  # (size, dtype) -> a flat contiguous buffer
        self._address = address  # buffer -> its first byte's address
        self._free: dict[tuple[int, str], list] = {}
        self._claims: dict[weakref.ref, object] = {}  # claim (a weak reference to a Storage) -> its buffer
        self._lock = threading.RLock()  # finalizers give buffers back from any thread, at any allocation
        self.idle_bytes = 0
        self.check = check
        self._held_starts: list[int] = []  # sorted start addresses of the live Storages (check only)
        self._held: dict[int, tuple[int, weakref.ref]] = {}  # start -> (end, the Storage's claim)

    def take(self, size: int, dtype: np.dtype):
        """A flat, contiguous, uninitialised buffer, owned by the caller until it gives it back
        (`give`) or hands it to a Storage (`claim`)."""
        buf = None
        with self._lock:
            bucket = self._free.get((size, dtype.char))
            if bucket:
                buf = bucket.pop()
                self.idle_bytes -= buf.nbytes
        if buf is None:
            buf = self.allocate(size, dtype)
        if self.check:
            self._check_unheld(buf)
        return buf

    def give(self, buf) -> None:
        """Take back a buffer that nobody will read or write again."""
        key = (buf.size, buf.dtype.char)
        with self._lock:
            bucket = self._free.get(key)
            if bucket is None:
                bucket = self._free[key] = []
            if len(bucket) < MAX_PER_KEY and self.idle_bytes + buf.nbytes <= MAX_BYTES:
                bucket.append(buf)
                self.idle_bytes += buf.nbytes

    def claim(self, buf) -> Storage:
        """A Storage owning `buf`, which comes back to this pool when the Storage is unreachable."""
        storage = Storage(buf, self._claims, self._reclaim)
        if self.check:
            self._hold(storage)
        return storage

    def _reclaim(self, claim: weakref.ref, _finalizing=sys.is_finalizing) -> None:  # bound early: `sys` goes at exit
        buf = self._claims.pop(claim, None)
        if buf is None or _finalizing():  # exported meanwhile; or the interpreter is tearing modules down
            return
        if self.check:
            self._unhold(buf)
        self.give(buf)

    def clear(self) -> None:
        """Release every idle buffer (to the allocator, which frees it)."""
        with self._lock:
            self._free.clear()
            self.idle_bytes = 0

    # ---- the debug check: no buffer is handed out while a live Storage holds its memory ----

    def _span(self, buf) -> tuple[int, int]:
        start = self._address(buf)
        return start, start + buf.nbytes

    def _hold(self, storage: Storage) -> None:
        start, end = self._span(storage.buf)
        if end > start:
            with self._lock:
                if start not in self._held:
                    bisect.insort(self._held_starts, start)
                self._held[start] = (end, storage._claim)  # a weak reference to the Storage

    def _unhold(self, buf) -> None:
        start, end = self._span(buf)
        with self._lock:
            if end > start and self._held.pop(start, None) is not None:
                self._held_starts.remove(start)

    def _check_unheld(self, buf) -> None:
        start, end = self._span(buf)
        if end == start:
            return
        with self._lock:
            i = bisect.bisect_right(self._held_starts, start) - 1
            for s in self._held_starts[max(i, 0) : bisect.bisect_left(self._held_starts, end)]:
                held_end, ref = self._held[s]
                if held_end > start and ref() is not None:
                    raise RuntimeError(
                        f"jitnet: memory check: the buffer handed out at {start:#x} ({buf.nbytes} bytes) "
                        f"overlaps memory at {s:#x} still held by a live Array; a program would "
                        "overwrite that Array's data"
                    )
