"""The op table: every op of the IR is defined here, once.

Each entry gives the op's kind (which decides how it fuses), its shape and dtype rules, its numpy
reference (the interpreter runs these), and its codegen hook: for elementwise ops a scalar expression
in a tiny backend-neutral language, for reductions the name of the combining rule. The VJP rules live
in `jitnet.ir.vjp` keyed by the same names.

The IR is strict: elementwise ops take inputs of one shape and (except `where` and comparisons'
result) one dtype. Broadcasting and dtype promotion are made explicit by the tracing layer as
`expand` and `cast` nodes, so every rule here stays simple and every gradient has a place to land.

Scalar expression language: `{0}`, `{1}`, ... are the inputs, `{name}` an attribute; calls to
exp, expm1, log, log1p, sqrt, tanh, sigmoid, sin, cos, acos, pow, abs, sign, maximum, minimum,
select(cond, a, b), cast(x) and lit(number) (a literal in the dtype of input 0) are rendered by each
backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jitnet.ir import dtypes


class Kind(enum.Enum):
    SOURCE = "source"  # input, capture, const, iota
    ELEMENTWISE = "elementwise"
    MOVEMENT = "movement"  # a view: index arithmetic in the consumer, never a copy
    REDUCE = "reduce"  # reduces `axes` of one input; elementwise producers fuse in
    ROWWISE = "rowwise"  # softmax-like: same shape out, statistics along one axis
    EXTERN = "extern"  # matmul, conv, pools: own kernels, materialised inputs


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: Kind
    shape: Callable  # (input shapes, attrs) -> output shape; raises ValueError naming the problem
    dtype: Callable  # (input dtypes, attrs) -> output dtype
    ref: Callable  # numpy reference: (*arrays, **attrs) -> array
    scalar: str | None = None  # elementwise codegen hook
    reduce: str | None = None  # reduction codegen hook: sum, max, min, argmax, logsumexp
    cost: int = 1  # rough arithmetic cost per element, for recompute-or-materialise decisions


OPS: dict[str, OpDef] = {}


def _register(op: OpDef) -> None:
    assert op.name not in OPS, op.name
    OPS[op.name] = op


# ---- rules shared by many ops ----


def _same_shape(shapes, attrs):
    for s in shapes[1:]:
        if s != shapes[0]:
            raise ValueError(f"elementwise inputs must have one shape, got {shapes}")
    return shapes[0]


def _same_dtype(dts, attrs):
    for d in dts[1:]:
        if d != dts[0]:
            raise TypeError(f"elementwise inputs must have one dtype, got {[d.name for d in dts]}")
    return dts[0]


def _float_only(dts, attrs):
    dt = _same_dtype(dts, attrs)
    if not dtypes.is_float(dt):
        raise TypeError(f"needs a float input, got {dt.name}")
    return dt


def _no_bool(dts, attrs):
    dt = _same_dtype(dts, attrs)
    if dtypes.is_bool(dt):
        raise TypeError("needs a numeric input, got bool")
    return dt


def _bool_only(dts, attrs):
    dt = _same_dtype(dts, attrs)
    if not dtypes.is_bool(dt):
        raise TypeError(f"needs bool inputs, got {dt.name}")
    return dt


def _to_bool(dts, attrs):
    _same_dtype(dts, attrs)
    return dtypes.bool_


def _quiet(fn):
    """numpy reference without floating-point warnings: NaN and inf are results, not errors."""

    def ref(*args, **attrs):
        with np.errstate(all="ignore"):
            return np.asarray(fn(*args, **attrs))

    ref.__name__ = getattr(fn, "__name__", "ref")
    return ref


def _elementwise(name, ref, scalar, dtype=_same_dtype, cost=1):
    _register(OpDef(name, Kind.ELEMENTWISE, _same_shape, dtype, _quiet(ref), scalar=scalar, cost=cost))


# ---- elementwise ----


def _sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _sign_ref(x):
    return np.sign(x)


def _maximum_ref(a, b):
    return np.maximum(a, b)


def _minimum_ref(a, b):
    return np.minimum(a, b)


_elementwise("neg", np.negative, "(-{0})", _no_bool)
_elementwise("exp", np.exp, "exp({0})", _float_only, cost=8)
_elementwise("expm1", np.expm1, "expm1({0})", _float_only, cost=8)
_elementwise("log", np.log, "log({0})", _float_only, cost=8)
_elementwise("log1p", np.log1p, "log1p({0})", _float_only, cost=8)
_elementwise("sqrt", np.sqrt, "sqrt({0})", _float_only, cost=4)
_elementwise("rsqrt", lambda x: 1 / np.sqrt(x), "(lit(1) / sqrt({0}))", _float_only, cost=4)
_elementwise("square", np.square, "({0} * {0})", _no_bool)
_elementwise("reciprocal", lambda x: 1 / x, "(lit(1) / {0})", _float_only, cost=2)
_elementwise("abs", np.abs, "abs({0})", _no_bool)
_elementwise("sign", _sign_ref, "sign({0})", _no_bool)
_elementwise("tanh", np.tanh, "tanh({0})", _float_only, cost=8)
_elementwise("sigmoid", _sigmoid_ref, "sigmoid({0})", _float_only, cost=8)
_elementwise("sin", np.sin, "sin({0})", _float_only, cost=8)
_elementwise("cos", np.cos, "cos({0})", _float_only, cost=8)
_elementwise("acos", np.arccos, "acos({0})", _float_only, cost=8)
_elementwise("relu", lambda x: np.where(x < 0, 0, x).astype(x.dtype), "select({0} < lit(0), lit(0), {0})", _no_bool)
_elementwise(
    "leaky_relu",
    lambda x, slope: np.where(x < 0, x * x.dtype.type(slope), x).astype(x.dtype),
    "select({0} < lit(0), {0} * lit({slope}), {0})",
    _float_only,
)
_elementwise(
    "elu",
    lambda x, alpha: np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(x)).astype(x.dtype),
    "select({0} > lit(0), {0}, lit({alpha}) * expm1({0}))",
    _float_only,
    cost=8,
)
_elementwise("logical_not", np.logical_not, "(not {0})", _bool_only)
_elementwise("add", np.add, "({0} + {1})", _no_bool)
_elementwise("sub", np.subtract, "({0} - {1})", _no_bool)
_elementwise("mul", np.multiply, "({0} * {1})", _no_bool)
_elementwise("div", np.true_divide, "({0} / {1})", _float_only, cost=2)
_elementwise("pow", np.power, "pow({0}, {1})", _float_only, cost=16)
_elementwise("maximum", _maximum_ref, "maximum({0}, {1})", _no_bool)
_elementwise("minimum", _minimum_ref, "minimum({0}, {1})", _no_bool)
_elementwise("logical_and", np.logical_and, "({0} and {1})", _bool_only)
_elementwise("logical_or", np.logical_or, "({0} or {1})", _bool_only)
for _name, _np_fn, _sym in (
    ("lt", np.less, "<"),
    ("le", np.less_equal, "<="),
    ("gt", np.greater, ">"),
    ("ge", np.greater_equal, ">="),
    ("eq", np.equal, "=="),
    ("ne", np.not_equal, "!="),
):
    _elementwise(_name, _np_fn, f"({{0}} {_sym} {{1}})", _to_bool)


def _cast_dtype(dts, attrs):
    return np.dtype(attrs["dtype"])


def _where_dtype(dts, attrs):
    if not dtypes.is_bool(dts[0]):
        raise TypeError(f"where's condition must be bool, got {dts[0].name}")
    return _same_dtype(dts[1:], attrs)


_register(
    OpDef(
        "cast", Kind.ELEMENTWISE, _same_shape, _cast_dtype, _quiet(lambda x, dtype: x.astype(dtype)), scalar="cast({0})"
    )
)
_register(OpDef("where", Kind.ELEMENTWISE, _same_shape, _where_dtype, _quiet(np.where), scalar="select({0}, {1}, {2})"))


# ---- sources ----


def _source(name, shape, dtype, ref):
    _register(OpDef(name, Kind.SOURCE, shape, dtype, ref))


def _attr_shape(shapes, attrs):
    return attrs["shape"]


def _attr_dtype(dts, attrs):
    return np.dtype(attrs["dtype"])


def _no_ref(**attrs):
    raise RuntimeError("inputs are bound by the caller")


_source("input", _attr_shape, _attr_dtype, _no_ref)  # attrs: slot, shape, dtype
_source("capture", _attr_shape, _attr_dtype, _no_ref)  # attrs: slot (index into Graph.captured), shape, dtype
_source("const", lambda s, a: a["value"].value.shape, lambda d, a: a["value"].value.dtype, lambda value: value.value)


def _iota_ref(shape, axis, start, step, dtype):
    line = (start + step * np.arange(shape[axis])).astype(dtype)
    return np.broadcast_to(line.reshape([-1 if d == axis else 1 for d in range(len(shape))]), shape).copy()


_source("iota", _attr_shape, _attr_dtype, _iota_ref)  # start + step * index along `axis`


# ---- movement (views) ----


def _reshape_shape(shapes, attrs):
    (src,), dst = shapes, attrs["shape"]
    if int(np.prod(src)) != int(np.prod(dst)):
        raise ValueError(f"cannot reshape {src} to {dst}: sizes differ")
    return dst


def _permute_shape(shapes, attrs):
    (src,), axes = shapes, attrs["axes"]
    if sorted(axes) != list(range(len(src))):
        raise ValueError(f"axes {axes} are not a permutation of the {len(src)} dims of {src}")
    return tuple(src[a] for a in axes)


def _expand_shape(shapes, attrs):
    (src,), dst = shapes, attrs["shape"]
    if len(src) != len(dst) or any(s not in (1, d) for s, d in zip(src, dst)):
        raise ValueError(f"cannot broadcast {src} to {dst}")
    return dst


def _slice_shape(shapes, attrs):
    return tuple(len(range(b, e, s)) for b, e, s in attrs["slices"])


def _slice_ref(x, slices):
    return x[tuple(slice(b, e if e >= 0 else None, s) for b, e, s in slices)]


def _pad_shape(shapes, attrs):
    (src,), widths = shapes, attrs["widths"]
    if len(widths) != len(src) or any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"pad widths {widths} must be one non-negative (lo, hi) pair per dim of {src}")
    return tuple(d + lo + hi for d, (lo, hi) in zip(src, widths))


def _concat_shape(shapes, attrs):
    axis, first = attrs["axis"], shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for d, (a, b) in enumerate(zip(s, first)) if d != axis):
            raise ValueError(f"cannot concatenate shapes {shapes} along axis {axis}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1 :]


def _movement(name, shape, ref, dtype=_same_dtype):
    _register(OpDef(name, Kind.MOVEMENT, shape, dtype, ref, cost=0))


_movement("reshape", _reshape_shape, lambda x, shape: x.reshape(shape))
_movement("permute", _permute_shape, lambda x, axes: x.transpose(axes))
_movement("expand", _expand_shape, lambda x, shape: np.broadcast_to(x, shape))
_movement(
    "slice", _slice_shape, _slice_ref
)  # slices: ((begin, end, step), ...) normalised; end -1 means "to the start"
_movement("pad", _pad_shape, lambda x, widths, value: np.pad(x, widths, constant_values=x.dtype.type(value)))
_movement("concat", _concat_shape, lambda *xs, axis: np.concatenate(xs, axis=axis))


# ---- reductions ----


def _reduce_shape(shapes, attrs):
    (src,), axes, keep = shapes, attrs["axes"], attrs["keepdims"]
    return tuple(1 if d in axes else n for d, n in enumerate(src) if keep or d not in axes)


def _sum_dtype(dts, attrs):
    return dtypes.int64 if dts[0].kind in "bi" else dts[0]


def _reduce(name, dtype, ref, reduce, cost=1):
    _register(OpDef(name, Kind.REDUCE, _reduce_shape, dtype, _quiet(ref), reduce=reduce, cost=cost))


def _logsumexp_ref(x, axes, keepdims):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axes)


def _argmax_ref(x, axes, keepdims):
    (axis,) = axes
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64)


_reduce(
    "sum",
    _sum_dtype,
    lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims, dtype=_sum_dtype([x.dtype], 0)),
    "sum",
)
_reduce("max", _no_bool, lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims), "max")
_reduce("min", _no_bool, lambda x, axes, keepdims: np.min(x, axis=axes, keepdims=keepdims), "min")
_reduce("argmax", lambda d, a: dtypes.int64, _argmax_ref, "argmax")  # one axis; ties and NaN: the first, as numpy
_reduce("logsumexp", _float_only, _logsumexp_ref, "logsumexp", cost=8)


# ---- row-wise (statistics along one axis, result of the input's shape) ----


def _softmax_ref(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_ref(x, axis):
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _rowwise_shape(shapes, attrs):
    return shapes[0]


_register(OpDef("softmax", Kind.ROWWISE, _rowwise_shape, _float_only, _quiet(_softmax_ref), cost=8))
_register(OpDef("log_softmax", Kind.ROWWISE, _rowwise_shape, _float_only, _quiet(_log_softmax_ref), cost=8))


# ---- extern: matmul, conv, pools ----


def _matmul_shape(shapes, attrs):
    a, b = shapes
    if len(a) < 2 or len(a) != len(b) or a[-1] != b[-2]:
        raise ValueError(f"matmul needs (..., M, K) @ (..., K, N), got {a} @ {b}")
    batch = np.broadcast_shapes(a[:-2], b[:-2])
    return tuple(batch) + (a[-2], b[-1])


def _conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _conv2d_shape(shapes, attrs):
    x, w = shapes
    s, p = attrs["stride"], attrs["padding"]
    if len(x) != 4 or len(w) != 4 or x[1] != w[1]:
        raise ValueError(f"conv2d needs x (N, C, H, W) and w (O, C, kh, kw), got x {x}, w {w}")
    ho, wo = _conv_out(x[2], w[2], s[0], p[0]), _conv_out(x[3], w[3], s[1], p[1])
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d kernel {w[2:]} does not fit input {x[2:]} with padding {p}")
    return (x[0], w[0], ho, wo)


def _windows(x, kernel, stride, padding, fill):
    """(N, C, Ho, Wo, kh, kw) view of the padded input's sliding windows."""
    (ph, pw), (sh, sw) = padding, stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))
    return win[:, :, ::sh, ::sw]


def _conv2d_ref(x, w, stride, padding):
    win = _windows(x, w.shape[2:], stride, padding, 0)
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True).astype(x.dtype)


def _pool_shape(shapes, attrs):
    (x,) = shapes
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    if len(x) != 4:
        raise ValueError(f"pooling needs (N, C, H, W), got {x}")
    if any(pi * 2 > ki for pi, ki in zip(p, k)):
        raise ValueError(f"pool padding {p} must be at most half the kernel {k}")
    ho, wo = _conv_out(x[2], k[0], s[0], p[0]), _conv_out(x[3], k[1], s[1], p[1])
    if ho <= 0 or wo <= 0:
        raise ValueError(f"pool kernel {k} does not fit input {x[2:]}")
    return (x[0], x[1], ho, wo)


def _max_pool_ref(x, kernel, stride, padding):
    return _windows(x, kernel, stride, padding, -np.inf).max(axis=(4, 5))


def _avg_pool_ref(x, kernel, stride, padding):
    # PyTorch's default count_include_pad=True: padded zeros count in the average.
    return (_windows(x, kernel, stride, padding, 0).sum(axis=(4, 5)) / (kernel[0] * kernel[1])).astype(x.dtype)


def _extern(name, shape, dtype, ref):
    _register(OpDef(name, Kind.EXTERN, shape, dtype, _quiet(ref), cost=100))


_extern("matmul", _matmul_shape, _no_bool, np.matmul)
_extern("conv2d", _conv2d_shape, _float_only, _conv2d_ref)
_extern("max_pool2d", _pool_shape, _float_only, _max_pool_ref)
_extern("avg_pool2d", _pool_shape, _float_only, _avg_pool_ref)
