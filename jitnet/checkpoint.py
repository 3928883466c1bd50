"""`jn.save` / `jn.load`: dicts of arrays in the safetensors format, written atomically.

The format: an 8-byte little-endian header length, a JSON header {name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw little-endian data. Written by
hand (no dependency); files load with the `safetensors` package and the other way round, and `load`
rejects what that package rejects. A save goes to a temporary file `<target>.<host>-<pid>.<random>.tmp`
in the same directory, is flushed to disk, and replaces the target with `os.replace`: an interrupted
save leaves the previous checkpoint intact, and the next save of that target removes the temporary
files of writers on this host whose process is gone (never one a live process may still be writing).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import struct
import tempfile

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1"}
_DTYPES.update({"U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"})
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000  # the safetensors package's limit
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())


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
    folder, base = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{base}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise type(e)(e.errno, f"jn.save: cannot write {path} (in {folder}): {e.strerror}") from None
    _remove_stale_temp_files(folder, base)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for data in blobs:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise type(e)(e.errno, f"jn.save: cannot write {path}: {e.strerror}") from e
        raise


def _remove_stale_temp_files(folder: str, base: str) -> None:
    """Delete the temporary files that killed saves of `base` left: only this host's, and only those
    whose writer process is gone (its pid is in the name), so a concurrent save is never disturbed."""
    pattern = re.compile(re.escape(base) + r"\.([A-Za-z0-9]*)-(\d+)\.\w+\.tmp")
    for name in os.listdir(folder):
        m = pattern.fullmatch(name)
        if m and m[1] == _HOST and not _alive(int(m[2])):
            with contextlib.suppress(OSError):  # best effort: another save may have removed it first
                os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (on Windows, where signal 0 would kill it, always assumed)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file into name -> numpy array. The header is checked as the safetensors
    package checks it (known dtypes, non-negative integer shapes and offsets, tensors contiguous in
    offset order and covering the data section exactly, each holding shape product x itemsize bytes,
    `__metadata__` a str -> str dict): a truncated or malformed file raises a ValueError naming the file,
    the tensor and the problem."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"jn.load: {path} is not a safetensors file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(_MAX_HEADER, len(raw) - 8):
        raise ValueError(f"jn.load: {path} is truncated or not safetensors (header of {n} bytes, file {len(raw)})")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"jn.load: {path} has a malformed header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"jn.load: {path} has a malformed header (not a JSON object)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _corrupt(path, f"__metadata__ must map strings to strings, got {metadata!r}")
    data = memoryview(raw)[8 + n :]
    entries = sorted((_entry(path, name, info) for name, info in header.items()), key=lambda e: e[3])
    out, offset = {}, 0
    for name, code, shape, (begin, end) in entries:
        if begin != offset:
            raise _corrupt(
                path,
                f"tensor {name!r} starts at byte {begin} of the data, expected {offset} (tensors must be contiguous, without overlaps or gaps)",
            )
        dtype = np.dtype(_DTYPES[code])
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise _corrupt(
                path,
                f"tensor {name!r} ({code}, shape {list(shape)}) needs {nbytes} bytes, its data_offsets [{begin}, {end}] hold {end - begin}",
            )
        if end > len(data):
            raise _corrupt(path, f"tensor {name!r} needs bytes {begin}..{end} of the data, the file has {len(data)}")
        try:
            out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        except ValueError as e:  # numpy's limits: more than 64 dims, a zero-size shape too large to index
            raise _corrupt(path, f"tensor {name!r} of shape {list(shape)}: {e}") from None
        offset = end
    if offset != len(data):
        raise _corrupt(path, f"the tensors cover {offset} bytes of data, but {len(data)} follow the header")
    return out


def _corrupt(path: str, problem: str) -> ValueError:
    return ValueError(f"jn.load: {path} is truncated or corrupt: {problem}")


def _unique_keys(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return out


def _index(v) -> bool:
    """A JSON value the format allows as a dimension or offset (a Rust usize)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def _entry(path: str, name: str, info) -> tuple:
    """(name, dtype code, shape, (begin, end)) of one header entry, checked."""
    if not isinstance(info, dict):
        raise _corrupt(path, f"tensor {name!r}: header entry {info!r} is not an object")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if code not in _DTYPES:
        raise _corrupt(path, f"tensor {name!r} has dtype {code!r}; jn.load reads {', '.join(_DTYPES)}")
    if not isinstance(shape, list) or not all(_index(d) for d in shape):
        raise _corrupt(path, f"tensor {name!r} has shape {shape!r}; expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_index(v) for v in offsets):
        raise _corrupt(
            path, f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end], non-negative integers"
        )
    return name, code, tuple(shape), tuple(offsets)
