"""The op table: every op of the IR is defined here, once.

Each entry gives the op's kind (which decides how it fuses), its shape and dtype rules, its numpy
reference (the interpreter runs these), its codegen hook (for elementwise ops a scalar emitter, for
reductions the name of the combining rule) and its VJP rule.

A VJP rule is written with the same public ops a user writes, so the backward graph is an ordinary
graph that fuses and compiles like any other: `vjp(jn, g, out, *inputs, **attrs)` gets the ops
namespace `jn` (passed in, so that this table does not import the layer above it), the output
cotangent `g`, the op's output and inputs as tracers, and returns one cotangent (or None: no
gradient) per input. A rule that needs an op with no public function (the conv and pool gradients)
builds its node with `jn.apply(op, inputs, **attrs)`, which the caller (jitnet/ir/backward.py) adds
to the namespace. Tie rules: maximum/minimum send the gradient to the first argument on ties;
max/min reductions split it evenly among tied maxima; relu'(0) = 0, leaky_relu'(0) = slope,
abs'(0) = sign'(x) = 0 (PyTorch's conventions).

The IR is strict: elementwise ops take inputs of one shape and (except `where` and comparisons'
result) one dtype. Broadcasting and dtype promotion are made explicit by the tracing layer as
`expand` and `cast` nodes, so every rule here stays simple and every gradient has a place to land.

Scalar emitters (tinygrad's `code_for_op`): `scalar(d, args, attrs, in_dtype, out_dtype) -> str`
builds one Python expression from the inputs' already rendered expressions `args`, asking the
backend's dialect `d` (a `Spelling`) for whatever backends spell differently: literals in a dtype,
math functions, casts, select, sign, pow and maximum/minimum. `in_dtype` is the dtype of input 0
(of `a` for where), `out_dtype` the op's result dtype.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from jitnet.ir import dtypes


class Kind(str, enum.Enum):
    """What an op is, and what a fused kernel is: an ELEMENTWISE, REDUCE, ROWWISE or EXTERN kernel is
    named by the kind of the op that shapes its loops. A str, so `kind == "reduce"` reads as it says."""

    SOURCE = "source"  # input, capture, const, iota
    ELEMENTWISE = "elementwise"
    MOVEMENT = "movement"  # a view: index arithmetic in the consumer, never a copy
    REDUCE = "reduce"  # reduces `axes` of one input; elementwise producers fuse in
    ROWWISE = "rowwise"  # softmax-like: same shape out, statistics along one axis
    EXTERN = "extern"  # matmul, conv, pools: own kernels, materialised inputs

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Spelling(Protocol):
    """What a scalar emitter may ask of a backend's dialect (`jitnet.codegen.expr.Dialect`), declared
    here so that the op table does not import the codegen layer above it."""

    def literal(self, value, dtype: np.dtype) -> str: ...
    def cast(self, expr: str, dtype: np.dtype) -> str: ...
    def math(self, name: str, arg: str, dtype: np.dtype) -> str: ...
    def select(self, cond: str, a: str, b: str) -> str: ...
    def sign(self, a: str, dtype: np.dtype) -> str: ...
    def power(self, a: str, b: str, dtype: np.dtype) -> str: ...
    def extremum(self, name: str, a: str, b: str, dtype: np.dtype) -> str: ...


# (dialect, rendered inputs, attrs, dtype of input 0, result dtype) -> one Python expression
ScalarEmitter = Callable[[Spelling, list[str], dict, np.dtype, np.dtype], str]


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: Kind
    shape: Callable  # (input shapes, attrs) -> output shape; raises ValueError naming the problem
    dtype: Callable  # (input dtypes, attrs) -> output dtype
    ref: Callable  # numpy reference: (*arrays, **attrs) -> array
    scalar: ScalarEmitter | None = None  # elementwise codegen hook
    reduce: str | None = None  # reduction codegen hook: sum, max, min, argmax, logsumexp
    cost: int = 1  # rough arithmetic cost per element, for recompute-or-materialise decisions
    vjp: Callable | None = None  # (jn, g, out, *inputs, **attrs) -> cotangent per input


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


def _def_elementwise(name, ref, scalar, dtype=_same_dtype, cost=1, vjp=None):
    _register(OpDef(name, Kind.ELEMENTWISE, _same_shape, dtype, _quiet(ref), scalar=scalar, cost=cost, vjp=vjp))


def _no_grad(jn, g, out, *xs, **attrs):
    return (None,) * len(xs)


# ---- scalar emitters for the common shapes of expression ----


def _call(name: str) -> ScalarEmitter:
    """name(x) for a math function, spelled by the dialect for the dtype (vm.exp_f32, math.exp, ...)."""
    return lambda d, a, attrs, dt, out: d.math(name, a[0], dt)


def _prefix(op: str) -> ScalarEmitter:
    return lambda d, a, attrs, dt, out: f"({op}{a[0]})"


def _infix(op: str) -> ScalarEmitter:
    return lambda d, a, attrs, dt, out: f"({a[0]} {op} {a[1]})"


def _extremum(name: str) -> ScalarEmitter:
    return lambda d, a, attrs, dt, out: d.extremum(name, a[0], a[1], dt)


# ---- elementwise ----


def _sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_ref(x):
    """numpy has no erf: math.erf per element (float64, correctly rounded to a few ulp), cast back."""
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _sign_ref(x):
    return np.sign(x)


def _maximum_ref(a, b):
    return np.maximum(a, b)


def _minimum_ref(a, b):
    return np.minimum(a, b)


def _relu_scalar(d, a, attrs, dt, out):
    zero = d.literal(0, dt)
    return d.select(f"{a[0]} < {zero}", zero, a[0])


def _leaky_relu_scalar(d, a, attrs, dt, out):
    return d.select(f"{a[0]} < {d.literal(0, dt)}", f"{a[0]} * {d.literal(attrs['slope'], dt)}", a[0])


def _elu_scalar(d, a, attrs, dt, out):
    return d.select(
        f"{a[0]} > {d.literal(0, dt)}", a[0], f"{d.literal(attrs['alpha'], dt)} * {d.math('expm1', a[0], dt)}"
    )


_def_elementwise("neg", np.negative, _prefix("-"), _no_bool, vjp=lambda jn, g, out, x: (-g,))
_def_elementwise("exp", np.exp, _call("exp"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g * out,))
_def_elementwise("expm1", np.expm1, _call("expm1"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g * (out + 1),))
_def_elementwise("log", np.log, _call("log"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g / x,))
_def_elementwise("log1p", np.log1p, _call("log1p"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g / (x + 1),))
_def_elementwise("sqrt", np.sqrt, _call("sqrt"), _float_only, cost=4, vjp=lambda jn, g, out, x: (g * 0.5 / out,))
_def_elementwise(
    "rsqrt",
    lambda x: 1 / np.sqrt(x),
    lambda d, a, attrs, dt, out: f"({d.literal(1, dt)} / {d.math('sqrt', a[0], dt)})",
    _float_only,
    cost=4,
    vjp=lambda jn, g, out, x: (g * -0.5 * out * out * out,),
)
_def_elementwise(
    "square",
    np.square,
    lambda d, a, attrs, dt, out: f"({a[0]} * {a[0]})",
    _no_bool,
    vjp=lambda jn, g, out, x: (g * 2 * x,),
)
_def_elementwise(
    "reciprocal",
    lambda x: 1 / x,
    lambda d, a, attrs, dt, out: f"({d.literal(1, dt)} / {a[0]})",
    _float_only,
    cost=2,
    vjp=lambda jn, g, out, x: (-g * out * out,),
)
_def_elementwise("abs", np.abs, _call("abs"), _no_bool, vjp=lambda jn, g, out, x: (g * jn.sign(x),))
_def_elementwise("sign", _sign_ref, lambda d, a, attrs, dt, out: d.sign(a[0], dt), _no_bool, vjp=_no_grad)
_def_elementwise("tanh", np.tanh, _call("tanh"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g * (1 - out * out),))
_def_elementwise(
    "sigmoid", _sigmoid_ref, _call("sigmoid"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g * out * (1 - out),)
)
_def_elementwise(
    "erf",
    _erf_ref,
    _call("erf"),
    _float_only,
    cost=8,
    vjp=lambda jn, g, out, x: (g * _TWO_OVER_SQRT_PI * jn.exp(-x * x),),
)
_def_elementwise("sin", np.sin, _call("sin"), _float_only, cost=8, vjp=lambda jn, g, out, x: (g * jn.cos(x),))
_def_elementwise("cos", np.cos, _call("cos"), _float_only, cost=8, vjp=lambda jn, g, out, x: (-g * jn.sin(x),))
_def_elementwise(
    "acos", np.arccos, _call("acos"), _float_only, cost=8, vjp=lambda jn, g, out, x: (-g * jn.rsqrt(1 - x * x),)
)
_def_elementwise(
    "relu",
    lambda x: np.where(x < 0, 0, x).astype(x.dtype),
    _relu_scalar,
    _no_bool,
    # in terms of the output (out > 0 exactly where x > 0): the backward then needs only what the
    # forward stores, so a matmul/conv's bias and relu stay fused in its epilogue
    vjp=lambda jn, g, out, x: (jn.where(out > 0, g, 0),),
)
_def_elementwise(
    "leaky_relu",
    lambda x, slope: np.where(x < 0, x * x.dtype.type(slope), x).astype(x.dtype),
    _leaky_relu_scalar,
    _float_only,
    vjp=lambda jn, g, out, x, slope: (jn.where(x > 0, g, g * slope),),
)
_def_elementwise(
    "elu",
    lambda x, alpha: np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(x)).astype(x.dtype),
    _elu_scalar,
    _float_only,
    cost=8,
    vjp=lambda jn, g, out, x, alpha: (jn.where(x > 0, g, g * (out + alpha)),),
)
_def_elementwise("logical_not", np.logical_not, _prefix("not "), _bool_only, vjp=_no_grad)
_def_elementwise("add", np.add, _infix("+"), _no_bool, vjp=lambda jn, g, out, a, b: (g, g))
_def_elementwise("sub", np.subtract, _infix("-"), _no_bool, vjp=lambda jn, g, out, a, b: (g, -g))
_def_elementwise("mul", np.multiply, _infix("*"), _no_bool, vjp=lambda jn, g, out, a, b: (g * b, g * a))
_def_elementwise(
    "div", np.true_divide, _infix("/"), _float_only, cost=2, vjp=lambda jn, g, out, a, b: (g / b, -g * out / b)
)


def _pow_vjp(jn, g, out, a, b):
    # PyTorch's masks: d/da is 0 where b == 0, d/db is 0 where a == 0 and b >= 0 (no 0 * inf = NaN).
    da = jn.where(b == 0, 0, g * b * jn.pow(a, b - 1))
    db = jn.where((a == 0) & (b >= 0), 0, g * out * jn.log(a))
    return da, db


def _pow_ref(a, b):
    """numpy's power; for integers a negative exponent gives the truncated reciprocal (1 for a == 1,
    +-1 for a == -1, else 0), where numpy raises: the exponent may be runtime data."""
    if not dtypes.is_int(a.dtype):
        return np.power(a, b)
    whole = np.power(a, np.maximum(b, 0))
    odd = (b & 1).astype(bool)
    reciprocal = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
    return np.where(b < 0, reciprocal, whole).astype(a.dtype)


_def_elementwise("pow", _pow_ref, lambda d, a, attrs, dt, out: d.power(a[0], a[1], dt), _no_bool, cost=16, vjp=_pow_vjp)
_def_elementwise(
    "maximum",
    _maximum_ref,
    _extremum("maximum"),
    _no_bool,
    vjp=lambda jn, g, out, a, b: (jn.where(a >= b, g, 0), jn.where(a >= b, 0, g)),
)
_def_elementwise(
    "minimum",
    _minimum_ref,
    _extremum("minimum"),
    _no_bool,
    vjp=lambda jn, g, out, a, b: (jn.where(a <= b, g, 0), jn.where(a <= b, 0, g)),
)
_def_elementwise("logical_and", np.logical_and, _infix("and"), _bool_only, vjp=_no_grad)
_def_elementwise("logical_or", np.logical_or, _infix("or"), _bool_only, vjp=_no_grad)
for _name, _np_fn, _sym in (
    ("lt", np.less, "<"),
    ("le", np.less_equal, "<="),
    ("gt", np.greater, ">"),
    ("ge", np.greater_equal, ">="),
    ("eq", np.equal, "=="),
    ("ne", np.not_equal, "!="),
):
    _def_elementwise(_name, _np_fn, _infix(_sym), _to_bool, vjp=_no_grad)


def _int64_only(dts, attrs):
    dt = _same_dtype(dts, attrs)
    if dt != dtypes.int64:
        raise TypeError(f"needs int64 inputs, got {dt.name}")
    return dt


def _mix32_ref(x, key, shift, lo, hi):
    y = (x ^ key) & 0xFFFFFFFF
    z = y ^ (y >> shift)
    return ((z * lo) + (((z * hi) & 0xFFFF) << 16)) & 0xFFFFFFFF


def _mix32_scalar(d, a, attrs, dt, out):
    """_mix32_ref as plain int64 arithmetic, the same in every backend (no literals needed)."""
    y = f"(({a[0]} ^ {a[1]}) & 4294967295)"
    z = f"({y} ^ ({y} >> {attrs['shift']}))"
    return f"((({z} * {attrs['lo']}) + ((({z} * {attrs['hi']}) & 65535) << 16)) & 4294967295)"


# One round of a 32-bit integer hash (the rounds of murmur3's finaliser), for counter-based random
# numbers (dropout): ((x ^ key) ^ ((x ^ key) >> shift)) * (hi * 2**16 + lo) mod 2**32 on int64 values,
# the product split in 16-bit halves so that nothing overflows in any backend.
_def_elementwise(
    "mix32",
    _mix32_ref,
    _mix32_scalar,
    _int64_only,
    vjp=_no_grad,
)


def _cast_dtype(dts, attrs):
    return np.dtype(attrs["dtype"])


def _where_dtype(dts, attrs):
    if not dtypes.is_bool(dts[0]):
        raise TypeError(f"where's condition must be bool, got {dts[0].name}")
    return _same_dtype(dts[1:], attrs)


def _cast_vjp(jn, g, out, x, dtype):
    """Gradients flow between float dtypes only; an integer or bool side has none."""
    return (jn.astype(g, x.dtype) if dtypes.is_float(x.dtype) and dtypes.is_float(out.dtype) else None,)


_register(
    OpDef(
        "cast",
        Kind.ELEMENTWISE,
        _same_shape,
        _cast_dtype,
        _quiet(lambda x, dtype: x.astype(dtype)),
        scalar=lambda d, a, attrs, dt, out: d.cast(a[0], out),
        vjp=_cast_vjp,
    )
)
_register(
    OpDef(
        "where",
        Kind.ELEMENTWISE,
        _same_shape,
        _where_dtype,
        _quiet(np.where),
        scalar=lambda d, a, attrs, dt, out: d.select(a[0], a[1], a[2]),
        vjp=lambda jn, g, out, c, a, b: (None, jn.where(c, g, 0), jn.where(c, 0, g)),
    )
)
# An identity that marks a value being differentiated, so that two arguments holding the same
# value still get separate gradients (attrs: a unique id). Removed by simplify after autodiff.
_register(
    OpDef(
        "tag",
        Kind.ELEMENTWISE,
        _same_shape,
        _same_dtype,
        lambda x, id: x,
        scalar=lambda d, a, attrs, dt, out: a[0],
        cost=0,
        vjp=lambda jn, g, out, x, id: (g,),
    )
)


# ---- sources ----


def _def_source(name, shape, dtype, ref):
    _register(OpDef(name, Kind.SOURCE, shape, dtype, ref))


def _attr_shape(shapes, attrs):
    return attrs["shape"]


def _attr_dtype(dts, attrs):
    return np.dtype(attrs["dtype"])


def _no_ref(**attrs):
    raise RuntimeError("inputs are bound by the caller")


_def_source("input", _attr_shape, _attr_dtype, _no_ref)  # attrs: slot, shape, dtype
_def_source("capture", _attr_shape, _attr_dtype, _no_ref)  # attrs: slot (index into Graph.captured), shape, dtype
_def_source(
    "const", lambda s, a: a["value"].value.shape, lambda d, a: a["value"].value.dtype, lambda value: value.value
)


def _iota_ref(shape, axis, start, step, dtype):
    line = (start + step * np.arange(shape[axis])).astype(dtype)
    return np.broadcast_to(line.reshape([-1 if d == axis else 1 for d in range(len(shape))]), shape).copy()


_def_source("iota", _attr_shape, _attr_dtype, _iota_ref)  # start + step * index along `axis`


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
    def python_slice(b, e, s):  # undo the normalisation: an end of -1 means "past index 0"
        return slice(0, 0) if not len(range(b, e, s)) else slice(b, e if e >= 0 else None, s)

    return x[tuple(python_slice(*sl) for sl in slices)]


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


def _def_movement(name, shape, ref, vjp):
    _register(OpDef(name, Kind.MOVEMENT, shape, _same_dtype, ref, cost=0, vjp=vjp))


def _unexpand(jn, g, shape):
    """Sum g over the dims that were broadcast from size 1 up to g's shape."""
    axes = tuple(d for d, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return jn.sum(g, axes, keepdims=True) if axes else g


def _dilate(jn, t, axis, step):
    """Insert step - 1 zeros between consecutive elements along axis (views only)."""
    n = t.shape[axis]
    if step == 1 or n <= 1:
        return t
    t = jn.expand_dims(t, axis + 1)
    widths = [(0, 0)] * t.ndim
    widths[axis + 1] = (0, step - 1)
    t = jn.reshape(jn.pad(t, widths), t.shape[:axis] + (n * step,) + t.shape[axis + 2 :])
    return _along(jn, t, axis, slice(0, (n - 1) * step + 1))


def _along(jn, t, axis, index):
    return jn.getitem(t, (slice(None),) * axis + (index,))


def _pad_or_crop(jn, t, axis, lo, hi):
    """Pad (positive) or crop (negative) lo and hi elements at the ends of axis."""
    if lo < 0 or hi < 0:
        t = _along(jn, t, axis, slice(max(-lo, 0), t.shape[axis] - max(-hi, 0)))
        lo, hi = max(lo, 0), max(hi, 0)
    widths = [(0, 0)] * t.ndim
    widths[axis] = (lo, hi)
    return jn.pad(t, widths)


def _slice_vjp(jn, g, out, x, slices):
    """Scatter g back to the sliced positions: flip negative steps, dilate by the step, pad."""
    if g.size == 0:
        return (jn.zeros(x.shape, g.dtype),)
    for d, (begin, _, step) in enumerate(slices):
        n = g.shape[d]
        if step < 0:
            g = _along(jn, g, d, slice(None, None, -1))
            begin, step = begin + (n - 1) * step, -step
        g = _dilate(jn, g, d, step)
        g = _pad_or_crop(jn, g, d, begin, x.shape[d] - begin - g.shape[d])
    return (g,)


def _concat_vjp(jn, g, out, *xs, axis):
    cts, offset = [], 0
    for x in xs:
        cts.append(_along(jn, g, axis, slice(offset, offset + x.shape[axis])))
        offset += x.shape[axis]
    return tuple(cts)


_def_movement(
    "reshape", _reshape_shape, lambda x, shape: x.reshape(shape), lambda jn, g, out, x, shape: (jn.reshape(g, x.shape),)
)
_def_movement(
    "permute",
    _permute_shape,
    lambda x, axes: x.transpose(axes),
    lambda jn, g, out, x, axes: (jn.transpose(g, tuple(int(a) for a in np.argsort(axes))),),
)
_def_movement(
    "expand",
    _expand_shape,
    lambda x, shape: np.broadcast_to(x, shape),
    lambda jn, g, out, x, shape: (_unexpand(jn, g, x.shape),),
)
# slices: ((begin, end, step), ...) normalised as by slice.indices; end -1 means "past the start"
_def_movement("slice", _slice_shape, _slice_ref, _slice_vjp)
_def_movement(
    "pad",
    _pad_shape,
    lambda x, widths, value: np.pad(x, widths, constant_values=x.dtype.type(value)),
    lambda jn, g, out, x, widths, value: (
        jn.getitem(g, tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))),
    ),
)
_def_movement("concat", _concat_shape, lambda *xs, axis: np.concatenate(xs, axis=axis), _concat_vjp)


# ---- gather and its transpose: data-dependent indices along one axis ----
# An index i into an axis of n counts from the end when negative (i + n), as numpy's; one still
# outside [0, n) is clamped to it (the public ops raise where the indices are host data, so only
# indices computed at run time can be out of range: they never read or write out of bounds).


def clamp_indices(ind: np.ndarray, n: int) -> np.ndarray:
    ind = np.where(ind < 0, ind + n, ind)
    return np.clip(ind, 0, max(n - 1, 0))


def _take_shape(shapes, attrs):
    x, ind = shapes
    a = attrs["axis"]
    if not 0 <= a < len(x):
        raise ValueError(f"take: axis {a} out of range for shape {x}")
    if x[a] == 0 and math.prod(ind):
        raise ValueError(f"take: cannot take indices from an empty axis {a} of shape {x}")
    return x[:a] + ind + x[a + 1 :]


def _take_dtype(dts, attrs):
    if dts[1].kind not in "iu":
        raise TypeError(f"take: indices must be integers, got {dts[1].name}")
    return dts[0]


def _take_ref(x, ind, axis):
    return np.take(x, clamp_indices(ind, x.shape[axis]), axis=axis)


def _take_vjp(jn, g, out, x, ind, axis):
    return jn.apply("scatter_add", (g, jn.astype(ind, "int64")), axis=axis, shape=x.shape), None


_register(OpDef("take", Kind.MOVEMENT, _take_shape, _take_dtype, _quiet(_take_ref), cost=0, vjp=_take_vjp))


def _scatter_add_shape(shapes, attrs):
    g, ind = shapes
    shape, a = tuple(attrs["shape"]), attrs["axis"]
    if g != shape[:a] + ind + shape[a + 1 :]:
        raise ValueError(f"scatter_add: values of shape {g} do not fit indices {ind} into axis {a} of {shape}")
    return shape


def _scatter_add_dtype(dts, attrs):
    if dts[1] != np.int64:  # one kernel per value dtype: narrower indices are widened first
        raise TypeError(f"scatter_add: indices must be int64, got {dts[1].name}")
    return dts[0]


def _scatter_add_ref(g, ind, axis, shape):
    """out[..., ind[j], ...] += g[..., j, ...], in the order of j (every backend adds in that order)."""
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out = np.zeros((outer, n, inner), g.dtype)
    np.add.at(out, (slice(None), clamp_indices(ind.reshape(-1), n), slice(None)), g.reshape(outer, -1, inner))
    return out.reshape(shape)


def _scatter_add_vjp(jn, g, out, values, ind, axis, shape):
    return jn.apply("take", (g, ind), axis=axis), None


_register(
    OpDef(
        "scatter_add",
        Kind.EXTERN,
        _scatter_add_shape,
        _scatter_add_dtype,
        _quiet(_scatter_add_ref),
        cost=100,
        vjp=_scatter_add_vjp,
    )
)


# ---- reductions ----


def _reduce_shape(shapes, attrs):
    (src,), axes, keep = shapes, attrs["axes"], attrs["keepdims"]
    return tuple(1 if d in axes else n for d, n in enumerate(src) if keep or d not in axes)


def _sum_dtype(dts, attrs):
    return dtypes.int64 if dts[0].kind in "bi" else dts[0]


def _def_reduce(name, dtype, ref, reduce, vjp, cost=1):
    _register(OpDef(name, Kind.REDUCE, _reduce_shape, dtype, _quiet(ref), reduce=reduce, cost=cost, vjp=vjp))


def _to_input(jn, t, x, axes, keepdims):
    """A reduction's result (or cotangent) broadcast back over the reduced input's shape."""
    if not keepdims:
        t = jn.reshape(t, tuple(1 if d in axes else n for d, n in enumerate(x.shape)))
    return jn.broadcast_to(t, x.shape)


def _extremum_vjp(jn, g, out, x, axes, keepdims):
    """Split the gradient evenly among the elements equal to the extremum."""
    hit = jn.astype(x == _to_input(jn, out, x, axes, keepdims), g.dtype)
    count = jn.sum(hit, axes, keepdims=True)
    return (hit * _to_input(jn, g, x, axes, keepdims) / count,)


def _sum_ref(x, axes, keepdims):
    """Floats add up in float64 and round once, as the kernels accumulate: numpy's float32 sum along
    a leading axis adds row after row in float32, which drifts (~1e-5 relative over 1e5 rows)."""
    out = _sum_dtype([x.dtype], 0)
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=np.float64 if x.dtype.kind == "f" else out).astype(out)


def _logsumexp_ref(x, axes, keepdims):
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    out = np.log(_sum_ref(np.exp(x - m), axes, True)) + m
    return out if keepdims else np.squeeze(out, axis=axes)


def _argmax_ref(x, axes, keepdims):
    (axis,) = axes
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64)


_def_reduce(
    "sum",
    _sum_dtype,
    _sum_ref,
    "sum",
    lambda jn, g, out, x, axes, keepdims: (_to_input(jn, g, x, axes, keepdims),),
)
_def_reduce("max", _no_bool, lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims), "max", _extremum_vjp)
_def_reduce("min", _no_bool, lambda x, axes, keepdims: np.min(x, axis=axes, keepdims=keepdims), "min", _extremum_vjp)
# argmax: one axis; ties and NaN go to the first, as numpy
_def_reduce("argmax", lambda d, a: dtypes.int64, _argmax_ref, "argmax", _no_grad)
_def_reduce(
    "logsumexp",
    _float_only,
    _logsumexp_ref,
    "logsumexp",
    lambda jn, g, out, x, axes, keepdims: (
        _to_input(jn, g, x, axes, keepdims) * jn.exp(x - _to_input(jn, out, x, axes, keepdims)),
    ),
    cost=8,
)


# ---- row-wise (statistics along one axis, result of the input's shape) ----


def _softmax_ref(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / _sum_ref(e, axis, True)


def _log_softmax_ref(x, axis):
    z = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return z - np.log(_sum_ref(np.exp(z), axis, True))


def _rowwise_shape(shapes, attrs):
    return shapes[0]


def _softmax_vjp(jn, g, out, x, axis):
    return (out * (g - jn.sum(g * out, axis, keepdims=True)),)


def _log_softmax_vjp(jn, g, out, x, axis):
    return (g - jn.exp(out) * jn.sum(g, axis, keepdims=True),)


def _def_rowwise(name, ref, vjp):
    _register(OpDef(name, Kind.ROWWISE, _rowwise_shape, _float_only, _quiet(ref), cost=8, vjp=vjp))


_def_rowwise("softmax", _softmax_ref, _softmax_vjp)
_def_rowwise("log_softmax", _log_softmax_ref, _log_softmax_vjp)


# ---- extern: matmul, conv, pools ----


def _matmul_shape(shapes, attrs):
    a, b = shapes
    if len(a) < 2 or len(a) != len(b) or a[-1] != b[-2]:
        raise ValueError(f"matmul needs (..., M, K) @ (..., K, N), got {a} @ {b}")
    batch = np.broadcast_shapes(a[:-2], b[:-2])
    return tuple(batch) + (a[-2], b[-1])


def _conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _check_window(**pairs) -> None:
    """Kernel sizes and strides are positive, paddings non-negative (else a division by zero or a
    silent crop, not a shape)."""
    for name, pair in pairs.items():
        lowest = 0 if name == "padding" else 1
        if len(pair) != 2 or any(v < lowest for v in pair):
            bound = "non-negative" if lowest == 0 else "positive"
            raise ValueError(f"{name} must be two {bound} ints, got {pair}")


def _conv2d_shape(shapes, attrs):
    x, w = shapes
    s, p = attrs["stride"], attrs["padding"]
    _check_window(stride=s, padding=p)
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
    _check_window(kernel=k, stride=s, padding=p)
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


def _def_extern(name, shape, dtype, ref, vjp=None):
    _register(OpDef(name, Kind.EXTERN, shape, dtype, _quiet(ref), cost=100, vjp=vjp))


def _swap_last(jn, t):
    return jn.transpose(t, tuple(range(t.ndim - 2)) + (t.ndim - 1, t.ndim - 2))


def _matmul_vjp(jn, g, out, a, b):
    ga = jn.matmul(g, _swap_last(jn, b))
    gb = jn.matmul(_swap_last(jn, a), g)
    return _unexpand(jn, ga, a.shape), _unexpand(jn, gb, b.shape)


def _conv2d_vjp(jn, g, out, x, w, stride, padding):
    """The input gradient is the transposed convolution of g with w, the weight gradient the
    correlation of x with g: ops of their own, so each is one kernel reading g, w and x in place."""
    gx = jn.apply("conv2d_input_grad", (g, w), stride=stride, padding=padding, in_shape=x.shape)
    gw = jn.apply("conv2d_weight_grad", (x, g), stride=stride, padding=padding, w_shape=w.shape)
    return gx, gw


def _conv2d_input_grad_vjp(jn, u, out, g, w, stride, padding, in_shape):
    """gx = T(g, w) is linear in g and in w, with <u, T(g, w)> = <conv2d(u, w), g>."""
    gw = jn.apply("conv2d_weight_grad", (u, g), stride=stride, padding=padding, w_shape=w.shape)
    return jn.conv2d(u, w, stride=stride, padding=padding), gw


def _conv2d_weight_grad_vjp(jn, v, out, x, g, stride, padding, w_shape):
    """gw = T(x, g) is linear in x and in g, with <v, T(x, g)> = <conv2d(x, v), g>."""
    gx = jn.apply("conv2d_input_grad", (g, v), stride=stride, padding=padding, in_shape=x.shape)
    return gx, jn.conv2d(x, v, stride=stride, padding=padding)


def _conv2d_input_grad_shape(shapes, attrs):
    g, w = shapes
    x = tuple(attrs["in_shape"])
    if len(g) != 4 or len(w) != 4 or _conv2d_shape([x, w], attrs) != tuple(g):
        raise ValueError(f"conv2d input grad: cotangent {g} and weight {w} do not fit input {x}")
    return x


def _conv2d_weight_grad_shape(shapes, attrs):
    x, g = shapes
    w = tuple(attrs["w_shape"])
    if len(x) != 4 or len(g) != 4 or _conv2d_shape([x, w], attrs) != tuple(g):
        raise ValueError(f"conv2d weight grad: input {x} and cotangent {g} do not fit weight {w}")
    return w


def _conv2d_input_grad_ref(g, w, stride, padding, in_shape):
    """Each output cell's cotangent, spread over the input pixels its window read, times the weight."""
    (ph, pw), (n, c, h, wd) = padding, in_shape
    gp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), np.result_type(g, w))
    for window, (i, j) in zip(_window_offsets(w.shape[2:], stride, g.shape[2:]), np.ndindex(*w.shape[2:])):
        gp[window] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j], optimize=True)
    return gp[:, :, ph : ph + h, pw : pw + wd]


def _conv2d_weight_grad_ref(x, g, stride, padding, w_shape):
    win = _windows(x, w_shape[2:], stride, padding, 0)
    return np.einsum("nchwij,nohw->ocij", win, g, optimize=True).astype(x.dtype)


def _pool_vjp(op):
    def vjp(jn, g, out, x, kernel, stride, padding):
        inputs = (x, g) if op == "max_pool2d_vjp" else (g,)
        return (jn.apply(op, inputs, kernel=kernel, stride=stride, padding=padding, in_shape=x.shape),)

    return vjp


def _window_offsets(kernel, stride, out_hw):
    """For each offset (i, j) of a pooling window, the strided slices of the padded input it covers."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield np.s_[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _max_pool_vjp_ref(x, g, kernel, stride, padding, in_shape):
    """Route each window's gradient to its maximum, the first in row-major window order on ties."""
    (ph, pw), (h, w) = padding, in_shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    best = _max_pool_ref(x, kernel, stride, padding)
    gp, taken = np.zeros_like(xp), np.zeros(g.shape, bool)
    for window in _window_offsets(kernel, stride, g.shape[2:]):
        v = xp[window]
        hit = ((v == best) | ((v != v) & (best != best))) & ~taken
        gp[window] += np.where(hit, g, 0)
        taken |= hit
    return gp[:, :, ph : ph + h, pw : pw + w]


def _avg_pool_vjp_ref(g, kernel, stride, padding, in_shape):
    (ph, pw), (n, c, h, w) = padding, in_shape
    gp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), g.dtype)
    share = g / g.dtype.type(kernel[0] * kernel[1])
    for window in _window_offsets(kernel, stride, g.shape[2:]):
        gp[window] += share
    return gp[:, :, ph : ph + h, pw : pw + w]


def _pool_grad_shape(shapes, attrs):
    return attrs["in_shape"]


_def_extern("matmul", _matmul_shape, _no_bool, np.matmul, _matmul_vjp)
_def_extern("conv2d", _conv2d_shape, _float_only, _conv2d_ref, _conv2d_vjp)
_def_extern("conv2d_input_grad", _conv2d_input_grad_shape, _float_only, _conv2d_input_grad_ref, _conv2d_input_grad_vjp)
_def_extern(
    "conv2d_weight_grad", _conv2d_weight_grad_shape, _float_only, _conv2d_weight_grad_ref, _conv2d_weight_grad_vjp
)
_def_extern("max_pool2d", _pool_shape, _float_only, _max_pool_ref, _pool_vjp("max_pool2d_vjp"))
_def_extern("avg_pool2d", _pool_shape, _float_only, _avg_pool_ref, _pool_vjp("avg_pool2d_vjp"))
_def_extern("max_pool2d_vjp", _pool_grad_shape, _same_dtype, _max_pool_vjp_ref)
_def_extern("avg_pool2d_vjp", _pool_grad_shape, _float_only, _avg_pool_vjp_ref)
