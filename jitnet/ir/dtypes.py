"""The dtypes jitnet computes in, and how they combine.

Promotion follows numpy for arrays, with Python scalars "weak" (as in JAX and NEP 50): a float32 array
times 2.5 stays float32, an int32 array plus 1 stays int32, an int array times 0.5 becomes the default
float. Integer true division and the mean of integers also give the default float, float32.

A Python float is held in float64 until it meets an operand, so `float64_array * 0.1` keeps every
digit of 0.1; weak values alone compute in the defaults (float32, int64).
"""

from __future__ import annotations

import numpy as np

bool_ = np.dtype(np.bool_)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)

SUPPORTED = (bool_, int32, int64, float32, float64)
DEFAULT_FLOAT = float32
DEFAULT_INT = int64

_KIND_RANK = {"b": 0, "i": 1, "f": 2}


def canonical(dtype) -> np.dtype:
    """The supported numpy dtype for `dtype`, or a TypeError that names what is supported."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"not a dtype: {dtype!r}") from e
    if not dt.isnative:  # big-endian data computes in the native dtype of the same kind
        dt = dt.newbyteorder("=")
    if dt not in SUPPORTED:
        names = ", ".join(d.name for d in SUPPORTED)
        raise TypeError(f"unsupported dtype {dt.name}; jitnet computes in {names}")
    return dt


def is_float(dt: np.dtype) -> bool:
    return dt.kind == "f"


def is_int(dt: np.dtype) -> bool:
    return dt.kind == "i"


def is_bool(dt: np.dtype) -> bool:
    return dt.kind == "b"


def scalar_dtype(value) -> np.dtype:
    """The dtype a Python scalar takes when it enters a computation (weakly typed)."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return DEFAULT_INT
    if isinstance(value, (float, np.floating)):
        return DEFAULT_FLOAT
    raise TypeError(f"unsupported scalar {value!r} of type {type(value).__name__}")


def weak_storage(value) -> np.dtype:
    """The dtype a Python scalar is held in before it meets an operand: its full precision."""
    dt = scalar_dtype(value)
    return float64 if dt.kind == "f" else dt


def promote(a: np.dtype, a_weak: bool, b: np.dtype, b_weak: bool) -> tuple[np.dtype, bool]:
    """Result dtype of a binary op, and whether the result is still weak."""
    if a_weak and not b_weak:
        return _promote_weak(b, a), False
    if b_weak and not a_weak:
        return _promote_weak(a, b), False
    if a_weak and b_weak:
        return weak_result(np.promote_types(a, b)), True
    return np.promote_types(a, b), False


def weak_result(dt: np.dtype) -> np.dtype:
    """Weak values computed on their own take the default dtype of their kind."""
    return {"b": bool_, "i": DEFAULT_INT, "f": DEFAULT_FLOAT}[dt.kind]


def _promote_weak(strong: np.dtype, weak: np.dtype) -> np.dtype:
    if _KIND_RANK[weak.kind] <= _KIND_RANK[strong.kind]:
        return strong
    return DEFAULT_FLOAT if weak.kind == "f" else DEFAULT_INT if strong.kind == "b" else strong


def to_float(dt: np.dtype) -> np.dtype:
    """The float dtype an op with a float result (exp, true division, mean) computes in."""
    return dt if is_float(dt) else DEFAULT_FLOAT


def short_name(dt: np.dtype) -> str:
    return {"b": "bool", "i": f"i{dt.itemsize * 8}", "f": f"f{dt.itemsize * 8}"}[dt.kind]
