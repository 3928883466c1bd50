"""What every device is: a buffer pool and transfers of flat buffers to and from the host.

Each backend package brings its device (backends/cpu/device.py, backends/cuda/device.py); the
registry (jitnet/backends) hands them out by name. Buffers are flat and contiguous.
"""

from __future__ import annotations

import os

import numpy as np

from jitnet.runtime.memory import BufferPool, Storage


def check_memory() -> bool:
    """JITNET_CHECK_MEMORY: every pool checks that no two live buffers overlap (see memory.py)."""
    return os.environ.get("JITNET_CHECK_MEMORY", "0") not in ("", "0")


class Device:
    kind = ""  # the name it is registered under
    host = False  # the host reads its buffers in place (no copy to see them)

    def __init__(self, pool: BufferPool):
        self.pool = pool

    def __repr__(self) -> str:
        return f"device({self.kind!r})"

    def put(self, host: np.ndarray):
        """A flat contiguous host array as a buffer on this device, owned by the caller."""
        raise NotImplementedError

    def get(self, buf) -> np.ndarray:
        """A buffer of this device as a flat host array (on a host device, the buffer itself)."""
        raise NotImplementedError

    def copy_into(self, out, src) -> None:
        """Copy a buffer of this device, or a host array, into `out`."""
        raise NotImplementedError

    def storage(self, src) -> Storage:
        """A new Storage holding a copy of `src` (a buffer of this device or a flat host array)."""
        buf = self.pool.take(src.size, np.dtype(src.dtype))
        self.copy_into(buf, src)
        return self.pool.claim(buf)
