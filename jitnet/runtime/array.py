"""`jn.Array`: a Storage on a device with a shape. The Array holds its Storage (runtime/memory.py),
and so do the numpy views it hands out on the CPU; the memory goes back to the device's pool when
the last of them is gone."""

from __future__ import annotations

import numpy as np

from jitnet.backends import device as as_device
from jitnet.backends import host_device
from jitnet.ir import dtypes
from jitnet.runtime.device import Device
from jitnet.runtime.memory import Storage


class _HostView:
    """The base object of a numpy view of a CPU Array: it holds the Storage, so the memory is not
    reused while the view lives (a plain numpy view would hold only the raw buffer)."""

    __slots__ = ("__array_interface__", "storage")

    def __init__(self, storage: Storage, shape: tuple):
        self.storage = storage
        buf = storage.buf
        self.__array_interface__ = {
            "shape": shape,
            "typestr": buf.dtype.str,
            "data": (buf.ctypes.data, True),  # read-only
            "version": 3,
        }


class Array:
    __slots__ = ("__weakref__", "_storage", "device", "dtype", "shape")
    _jitnet_array = True
    __array_priority__ = 1000  # numpy defers to our operators

    def __init__(self, storage: Storage, shape: tuple, device: Device):
        self._storage = storage  # its flat, contiguous buffer is on `device`
        self.shape = tuple(shape)
        self.dtype = np.dtype(storage.buf.dtype)
        self.device = device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self) -> np.ndarray:
        """The data on the host: a read-only view for CPU arrays (copy it to modify), a copy for GPU ones."""
        if self.device.host:
            self.buffer()  # the checks
            return np.asarray(_HostView(self._storage, self.shape))
        host = self.device.get(self.buffer()).reshape(self.shape)
        host.flags.writeable = False
        return host

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        if dtype is not None and np.dtype(dtype) != out.dtype:
            return out.astype(dtype)
        return out.copy() if copy else out

    def buffer(self):
        """The flat device buffer; a clear error once `assign` has moved it into another Array."""
        storage = self._storage
        if storage is None:
            raise RuntimeError("jitnet: this Array was moved into another by assign(..., move=True) and has no data")
        if storage.reclaimed():
            raise RuntimeError(
                "jitnet: this Array was resurrected after its memory went back to the pool (a __del__ "
                "that stored it somewhere); its data is gone"
            )
        return storage.buf

    def assign(self, value: Array | np.ndarray, move: bool = False) -> None:
        """Replace the contents with `value` (same shape and dtype), keeping this Array's identity:
        how parameters and optimizer state are updated in place, so references held elsewhere see
        the new values. move=True takes over the buffer of a jitnet Array on the same device (no
        copy) and leaves `value` without data; otherwise the data are copied. This Array's old
        memory goes back to the pool once nothing else (a numpy view) holds it."""
        if not isinstance(value, Array):
            value = asarray(value, device=self.device, dtype=self.dtype)
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(
                f"assign: value of shape {value.shape} and dtype {value.dtype} does not match "
                f"the array's shape {self.shape} and dtype {self.dtype}"
            )
        if value is self:
            return
        if move and value.device is self.device:
            value.buffer()  # the checks
            self._storage, value._storage = value._storage, None
            return
        src = value.buffer() if value.device is self.device else value.device.get(value.buffer())
        self.device.copy_into(self.buffer(), src)

    @property
    def __cuda_array_interface__(self) -> dict:
        """Zero-copy export of a GPU array (CuPy, PyTorch, numba). Its memory is never recycled: the
        consumer may hold the pointer for as long as it holds this Array."""
        buf = self.buffer()
        if not hasattr(buf, "__cuda_array_interface__"):
            raise AttributeError("__cuda_array_interface__ exists only for arrays on the 'cuda' device")
        self._storage.export()
        return buf.reshape(self.shape).__cuda_array_interface__

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


def asarray(x, device=None, dtype=None) -> Array:
    """Wrap or move data: Arrays pass through (or move between devices), numpy data and Python
    numbers are copied in, to the host unless `device` says otherwise (as torch.tensor: pass
    device=jn.default_device() to follow JITNET_BACKEND). Python floats become float32 and ints
    int64 (the defaults); numpy arrays keep their dtype."""
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
    dev = dev or host_device()
    host = np.ascontiguousarray(arr, dtype=dtypes.canonical(arr.dtype)).reshape(-1)
    return Array(dev.storage(host), arr.shape, dev)
