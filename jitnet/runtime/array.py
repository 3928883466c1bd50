"""`jn.Array`: a buffer on a device with a shape. The runtime owns the flat buffer; when the last
reference to an Array it allocated goes away, the buffer returns to its device's pool for reuse."""

from __future__ import annotations

import sys

import numpy as np

from jitnet.ir import dtypes
from jitnet.runtime.device import Device
from jitnet.runtime.device import device as as_device


class Array:
    __slots__ = ("__weakref__", "_buf", "_owned", "device", "dtype", "shape")
    _jitnet_array = True
    __array_priority__ = 1000  # numpy defers to our operators

    def __init__(self, buf, shape: tuple, device: Device, owned: bool = False):
        self._buf = buf  # flat, contiguous, on `device`
        self.shape = tuple(shape)
        self.dtype = np.dtype(buf.dtype)
        self.device = device
        self._owned = owned  # allocated by the runtime, so recycled when unreferenced

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self) -> np.ndarray:
        """The data on the host: a read-only view for CPU arrays (copy it to modify), a copy for GPU ones."""
        view = self.device.get(self.buffer()).reshape(self.shape)
        view.flags.writeable = False
        return view

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        if dtype is not None and np.dtype(dtype) != out.dtype:
            return out.astype(dtype)
        return out.copy() if copy else out

    def buffer(self):
        """The flat device buffer; a clear error once `assign` has moved it into another Array."""
        if self._buf is None:
            raise RuntimeError("jitnet: this Array was moved into another by assign(..., move=True) and has no data")
        return self._buf

    def assign(self, value: Array | np.ndarray, move: bool = False) -> None:
        """Replace the contents with `value` (same shape and dtype), keeping this Array's identity:
        how parameters and optimizer state are updated in place, so references held elsewhere see
        the new values. move=True takes over the buffer of a jitnet Array on the same device (no
        copy) and leaves `value` without data; otherwise the data are copied."""
        if not isinstance(value, Array):
            value = asarray(value, device=self.device, dtype=self.dtype)
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(
                f"assign: value of shape {value.shape} and dtype {value.dtype} does not match "
                f"the array's shape {self.shape} and dtype {self.dtype}"
            )
        if value is self:
            return
        if move and value.device is self.device and value._owned:
            old, old_owned = self._buf, self._owned
            self._buf, self._owned = value._buf, True
            value._buf, value._owned = None, False
            if old_owned and sys.getrefcount(old) <= 2:
                self.device.pool.give(old)
            return
        src = value.buffer() if value.device is self.device else self.device.put(value.device.get(value.buffer()))
        self.device.copy_into(self._buf, src)

    @property
    def __cuda_array_interface__(self) -> dict:
        """Zero-copy export of a GPU array (CuPy, PyTorch, numba). Its buffer is never recycled."""
        if self.device.kind != "cuda":
            raise AttributeError("__cuda_array_interface__ exists only for arrays on the 'cuda' device")
        self._owned = False
        return self.buffer().reshape(self.shape).__cuda_array_interface__

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", threshold=20)
        return f"jn.Array({body}, dtype={self.dtype.name}, device={self.device.kind!r})"

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs an array of one element, got shape {self.shape}")
        return self.numpy().reshape(-1)[0].item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __del__(self, _refcount=sys.getrefcount):  # bound early: at interpreter exit `sys` may be gone
        if self._owned and self._buf is not None:
            buf = self._buf
            # Recycle only when nothing else holds the buffer (slot + local + argument); a numpy
            # view of a CPU buffer keeps a reference to it.
            if _refcount(buf) <= 3:
                self.device.pool.give(buf)


def asarray(x, device=None, dtype=None) -> Array:
    """Wrap or move data: Arrays pass through (or move between devices), numpy data and Python
    numbers are copied in. Python floats become float32 and ints int64 (the defaults); numpy
    arrays keep their dtype."""
    dev = as_device(device) if device is not None else None
    if isinstance(x, Array):
        if (dev is None or dev is x.device) and (dtype is None or np.dtype(dtype) == x.dtype):
            return x
        dev = dev or x.device
        x = x.numpy()
    if dtype is None and not isinstance(x, (np.ndarray, np.generic)):
        arr = np.asarray(x)
        if arr.dtype.kind == "f":
            arr = arr.astype(dtypes.DEFAULT_FLOAT)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(dtypes.DEFAULT_INT)
    else:
        arr = np.asarray(x, dtype=dtype)
    dt = dtypes.canonical(arr.dtype)
    dev = dev or as_device("cpu")
    host = np.empty(arr.size, dt)
    host[...] = arr.reshape(-1)
    return Array(dev.put(host), arr.shape, dev, owned=True)
