"""Devices. The CPU is always there; CUDA comes with the `cuda` extra and a usable GPU.

A device knows how to allocate (through its buffer pool) and how to move flat buffers between
itself and the host. Buffers are flat and contiguous: numpy arrays on the CPU, numba device arrays
on the GPU.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jitnet.runtime.pool import BufferPool

BACKENDS = ("cpu", "cuda", "interpret")


class Device:
    kind = ""

    def __init__(self, pool: BufferPool):
        self.pool = pool

    def __repr__(self) -> str:
        return f"device({self.kind!r})"

    def put(self, host: np.ndarray):
        """A flat contiguous host array as a buffer on this device."""
        raise NotImplementedError

    def get(self, buf) -> np.ndarray:
        """A buffer of this device as a flat host array."""
        raise NotImplementedError

    def copy(self, buf):
        out = self.pool.take(buf.size, buf.dtype)
        self.copy_into(out, buf)
        return out


class CpuDevice(Device):
    kind = "cpu"

    def put(self, host: np.ndarray) -> np.ndarray:
        return host

    def get(self, buf: np.ndarray) -> np.ndarray:
        return buf

    @staticmethod
    def copy_into(out, buf) -> None:
        np.copyto(out, buf)


class CudaDevice(Device):
    kind = "cuda"

    def __init__(self):
        from numba import cuda

        self._cuda = cuda
        super().__init__(BufferPool(cuda.device_array))

    def put(self, host: np.ndarray):
        return self._cuda.to_device(host)

    def get(self, buf) -> np.ndarray:
        return buf.copy_to_host()

    @staticmethod
    def copy_into(out, buf) -> None:
        out.copy_to_device(buf)


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


_CPU = CpuDevice(BufferPool(np.empty))


@functools.cache
def _cuda_device() -> CudaDevice:
    return CudaDevice()


def device(kind: str | Device) -> Device:
    """`jn.device("cpu")` or `jn.device("cuda")`; a clear error where the device cannot be used."""
    if isinstance(kind, Device):
        return kind
    if kind == "cpu":
        return _CPU
    if kind == "cuda":
        if not cuda_available():
            raise RuntimeError(
                "jitnet: no usable CUDA GPU (numba.cuda.is_available() is False: install the 'cuda' "
                "extra, check the driver with nvidia-smi, or set NUMBA_ENABLE_CUDASIM=1 for the "
                "simulator); use device('cpu')"
            )
        return _cuda_device()
    raise ValueError(f"unknown device {kind!r}; expected 'cpu' or 'cuda'")


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
