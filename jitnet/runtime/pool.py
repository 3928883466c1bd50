"""Buffer reuse. A fresh large buffer costs page faults on first touch (a 64 MiB host output up to
~20 ms) or a driver allocation on the GPU, so freed buffers are kept, keyed by (size, dtype), and
handed out again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_BYTES = 1 << 31  # keep at most this much idle memory per device
MAX_PER_KEY = 8


class BufferPool:
    def __init__(self, allocate: Callable):
        self._allocate = allocate  # (size, dtype) -> a flat contiguous buffer
        self._free: dict[tuple[int, str], list] = {}
        self.idle_bytes = 0

    def take(self, size: int, dtype: np.dtype):
        """A flat, contiguous, uninitialised buffer."""
        bucket = self._free.get((size, dtype.char))
        if bucket:
            buf = bucket.pop()
            self.idle_bytes -= buf.nbytes
            return buf
        return self._allocate(size, dtype)

    def give(self, buf) -> None:
        """Return a buffer nobody else references."""
        bucket = self._free.setdefault((buf.size, buf.dtype.char), [])
        if len(bucket) < MAX_PER_KEY and self.idle_bytes + buf.nbytes <= MAX_BYTES:
            bucket.append(buf)
            self.idle_bytes += buf.nbytes

    def clear(self) -> None:
        self._free.clear()
        self.idle_bytes = 0
