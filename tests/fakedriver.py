"""An allocator that treats memory the way a GPU driver and numba do, for the CPU device and for the
CUDA simulator (whose own arrays are numpy memory that nothing reuses, which hid a GPU-only bug).

Each allocation is an `_Allocation` object, like numba's `MemoryPointer`: every buffer or view of
the memory holds it in an attribute the cyclic collector sees (as a numba device array holds its
`gpu_data`), and a `weakref.finalize` on it frees the memory. Freed memory is poisoned (all bits
set: NaN for floats, -1 for ints) and handed to the very next allocation of the same size, as the
driver does. So when a collected cycle frees an allocation that jitnet still hands out, it shows up
as wrong numbers or as the pool's memory check, not as a silent pass."""

from __future__ import annotations

import weakref

import numpy as np

MAX_FREE_BYTES = 1 << 29  # freed chunks kept for reuse; beyond this they go back to numpy


class _Allocation:
    """One allocation's life: it is finalized when no buffer or view refers to it."""

    __slots__ = ("__weakref__",)


class HostBuffer(np.ndarray):
    """A CPU buffer that refers to its allocation where the collector sees it (a plain ndarray's
    references are invisible to it), and passes it on to its views."""

    def __array_finalize__(self, parent) -> None:
        self.allocation = getattr(parent, "allocation", None)


class DriverLikeAllocator:
    """`allocate(size, dtype)` for a BufferPool. `wrap` turns the memory into the device's buffer
    type (a simulator device array for CUDA); without it, buffers are `HostBuffer`s."""

    def __init__(self, wrap=None):
        self.wrap = wrap
        self._free: dict[int, list[np.ndarray]] = {}
        self.free_bytes = 0
        self.allocations = 0
        self.reused = 0  # allocations served from memory an earlier one freed

    def __call__(self, size: int, dtype) -> object:
        dtype = np.dtype(dtype)
        nbytes = size * dtype.itemsize
        chunks = self._free.get(nbytes)
        if chunks:
            chunk = chunks.pop()
            self.free_bytes -= chunk.nbytes
            self.reused += 1
        else:
            chunk = np.empty(max(nbytes, 1), np.uint8)
        self.allocations += 1
        allocation = _Allocation()
        weakref.finalize(allocation, self._release, chunk)
        buf = chunk[:nbytes].view(HostBuffer).view(dtype)
        buf.allocation = allocation
        if self.wrap is None:
            return buf
        device_buf = self.wrap(buf.view(np.ndarray))
        device_buf.allocation = allocation
        return device_buf

    def _release(self, chunk: np.ndarray) -> None:
        chunk.fill(0xFF)
        if self.free_bytes + chunk.nbytes <= MAX_FREE_BYTES:
            self._free.setdefault(chunk.nbytes, []).append(chunk)
            self.free_bytes += chunk.nbytes


def simulator_wrap(a: np.ndarray):
    """A CUDA-simulator device array over `a`'s memory (no copy)."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return FakeCUDAArray(a)
