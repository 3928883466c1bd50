"""The CPU device: numpy buffers, read by the kernels in place."""

from __future__ import annotations

import functools

import numpy as np

from jitnet.runtime.device import Device, check_memory
from jitnet.runtime.memory import BufferPool


class CpuDevice(Device):
    kind = "cpu"
    host = True

    def __init__(self):
        super().__init__(BufferPool(np.empty, lambda buf: buf.ctypes.data, check=check_memory()))

    def put(self, host: np.ndarray) -> np.ndarray:
        return host  # the kernels read host memory in place

    def get(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def copy_into(self, out, src) -> None:
        np.copyto(out, src)


@functools.cache
def cpu_device() -> CpuDevice:
    return CpuDevice()
