"""Devices. The CPU is always there; CUDA comes with the `cuda` extra and a usable GPU.

A device allocates through its buffer pool (runtime/memory.py) and moves flat buffers between
itself and the host. Buffers are flat and contiguous: numpy arrays on the CPU, numba device arrays
on the GPU.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jitnet.runtime.cuda_support import check_cuda_packages
from jitnet.runtime.memory import BufferPool, Storage

BACKENDS = ("cpu", "cuda", "interpret")


def _check_memory() -> bool:
    return os.environ.get("JITNET_CHECK_MEMORY", "0") not in ("", "0")


class Device:
    kind = ""

    def __init__(self, pool: BufferPool):
        self.pool = pool

    def __repr__(self) -> str:
        return f"device({self.kind!r})"

    def put(self, host: np.ndarray):
        """A flat contiguous host array as a buffer on this device, owned by the caller."""
        raise NotImplementedError

    def get(self, buf) -> np.ndarray:
        """A buffer of this device as a flat host array (on the CPU, the buffer itself)."""
        raise NotImplementedError

    def copy_into(self, out, src) -> None:
        """Copy a buffer of this device, or a host array, into `out`."""
        raise NotImplementedError

    def storage(self, src) -> Storage:
        """A new Storage holding a copy of `src` (a buffer of this device or a flat host array)."""
        buf = self.pool.take(src.size, np.dtype(src.dtype))
        self.copy_into(buf, src)
        return self.pool.claim(buf)


class CpuDevice(Device):
    kind = "cpu"

    def __init__(self):
        super().__init__(BufferPool(np.empty, lambda buf: buf.ctypes.data, check=_check_memory()))

    def put(self, host: np.ndarray) -> np.ndarray:
        return host  # the kernels read host memory in place

    def get(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def copy_into(self, out, src) -> None:
        np.copyto(out, src)


class CudaDevice(Device):
    kind = "cuda"

    def __init__(self):
        from numba import cuda

        def address(buf) -> int:
            if simulator():
                return buf.ctypes.data  # a simulator array forwards to the numpy array it wraps
            return buf.device_ctypes_pointer.value or 0  # None for an empty array

        super().__init__(BufferPool(cuda.device_array, address, check=_check_memory()))

    def put(self, host: np.ndarray):
        buf = self.pool.allocate(host.size, host.dtype)  # through the pool's allocator, not its free lists
        self.copy_into(buf, host)
        return buf

    def get(self, buf) -> np.ndarray:
        return buf.copy_to_host()

    def copy_into(self, out, src) -> None:
        if out.size:  # numba compares the strides of empty arrays too, and they differ
            out.copy_to_device(src)


@functools.cache
def simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.cache
def cuda_available() -> bool:
    """A usable CUDA device (numba's simulator counts: it runs the same kernels, slowly)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # no numba.cuda, no driver, a broken toolkit: all mean "no GPU"
        return False


_devices: dict[str, Device] = {"cpu": CpuDevice()}


def device(kind: str | Device) -> Device:
    """`jn.device("cpu")` or `jn.device("cuda")`; a clear error where the device cannot be used."""
    if isinstance(kind, Device):
        return kind
    if kind in _devices:
        return _devices[kind]
    if kind == "cuda":
        if not cuda_available():
            raise RuntimeError(
                "jitnet: no usable CUDA GPU (numba.cuda.is_available() is False: install the 'cuda' "
                "extra, check the driver with nvidia-smi, or set NUMBA_ENABLE_CUDASIM=1 for the "
                "simulator); use device('cpu')"
            )
        if not simulator():
            check_cuda_packages()  # a numpy that numba-cuda cannot compile with: say so, by name
        _devices["cuda"] = CudaDevice()
        return _devices["cuda"]
    raise ValueError(f"unknown device {kind!r}; expected 'cpu' or 'cuda'")


def empty_cache() -> None:
    """Release the idle buffers every device's pool keeps for reuse (as `torch.cuda.empty_cache`).
    Memory held by live Arrays stays; the pools refill as programs run."""
    for dev in _devices.values():
        dev.pool.clear()


def default_backend() -> str:
    """JITNET_BACKEND if set, else the GPU when a real one is usable, else the CPU."""
    backend = os.environ.get("JITNET_BACKEND", "").strip().lower()
    if backend:
        if backend not in BACKENDS:
            raise ValueError(f"JITNET_BACKEND={backend!r} is not one of {BACKENDS}")
        return backend
    return "cuda" if cuda_available() and not simulator() else "cpu"


def default_device() -> Device:
    backend = default_backend()
    return device("cpu" if backend == "interpret" else backend)
