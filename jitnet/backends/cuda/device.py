"""The CUDA device: numba device arrays; and whether a GPU (or numba's simulator) is there."""

from __future__ import annotations

import functools
import os

from jitnet.backends.cuda.support import check_cuda_packages
from jitnet.runtime.device import Device, check_memory
from jitnet.runtime.memory import BufferPool


@functools.cache
def simulator() -> bool:
    """NUMBA_ENABLE_CUDASIM=1: kernels run in numba's CUDA simulator (Python threads, numpy memory)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.cache
def cuda_available() -> bool:
    """A usable CUDA device (numba's simulator counts: it runs the same kernels, slowly)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # no numba.cuda, no driver, a broken toolkit: all mean "no GPU"
        return False


class CudaDevice(Device):
    kind = "cuda"

    def __init__(self):
        from numba import cuda

        def address(buf) -> int:
            if simulator():
                return buf.ctypes.data  # a simulator array forwards to the numpy array it wraps
            return buf.device_ctypes_pointer.value or 0  # None for an empty array

        super().__init__(BufferPool(cuda.device_array, address, check=check_memory()))

    def put(self, host):
        buf = self.pool.allocate(host.size, host.dtype)  # through the pool's allocator, not its free lists
        self.copy_into(buf, host)
        return buf

    def get(self, buf):
        return buf.copy_to_host()

    def copy_into(self, out, src) -> None:
        if out.size:  # numba compares the strides of empty arrays too, and they differ
            out.copy_to_device(src)


_device: list[CudaDevice] = []


def cuda_device() -> CudaDevice:
    """The GPU; a clear error where none can be used."""
    if not _device:
        if not cuda_available():
            raise RuntimeError(
                "jitnet: no usable CUDA GPU (numba.cuda.is_available() is False: install the 'cuda' "
                "extra, check the driver with nvidia-smi, or set NUMBA_ENABLE_CUDASIM=1 for the "
                "simulator); use device('cpu')"
            )
        if not simulator():
            check_cuda_packages()  # a numpy that numba-cuda cannot compile with: say so, by name
        _device.append(CudaDevice())
    return _device[0]


def preferred() -> bool:
    """The default backend when a real GPU is usable (the simulator is for tests, never the default)."""
    return cuda_available() and not simulator()
