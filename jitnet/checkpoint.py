"""`jn.save` / `jn.load`: dicts of arrays in the safetensors format, written atomically.

The format: an 8-byte little-endian header length, a JSON header {name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw little-endian data. Written by
hand (no dependency); files load with the `safetensors` package and the other way round. A save goes
to a temporary file in the same directory, is flushed to disk, and replaces the target with
`os.replace`: an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1"}
_DTYPES["BOOL"] = "?"
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000


def save(path: str | os.PathLike, state_dict: dict, metadata: dict[str, str] | None = None) -> None:
    """Write name -> array (jn.Array, numpy array or number) to `path` as safetensors, atomically."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"jn.save: expected a dict of arrays, got {type(state_dict).__name__}")
    header, blobs, offset = {}, [], 0
    for name in sorted(state_dict):
        if not isinstance(name, str):
            raise TypeError(f"jn.save: keys must be strings, got {name!r}")
        arr = np.asarray(state_dict[name])  # tobytes() writes C order; ascontiguousarray would make 0-d 1-d
        code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        if code is None:
            raise TypeError(f"jn.save: {name!r} has dtype {arr.dtype}, which safetensors cannot store here")
        data = arr.astype(_DTYPES[code], copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for data in blobs:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file into name -> numpy array; a truncated or malformed file raises a
    ValueError naming the file and the problem."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"jn.load: {path} is not a safetensors file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(_MAX_HEADER, len(raw) - 8):
        raise ValueError(f"jn.load: {path} is truncated or not safetensors (header of {n} bytes, file {len(raw)})")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"jn.load: {path} has a malformed header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"jn.load: {path} has a malformed header (not a JSON object)")
    header.pop("__metadata__", None)
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"jn.load: {path}: bad header entry for {name!r}: {info!r}") from None
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != size or begin < 0 or end > len(data):
            raise ValueError(f"jn.load: {path} is truncated or corrupt: {name!r} needs bytes {begin}..{end}")
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out
