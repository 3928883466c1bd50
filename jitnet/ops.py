"""The public ops: numpy semantics on top of the strict IR.

Each function lifts its operands to Tracers, makes broadcasting and dtype promotion explicit
(`expand` and `cast` nodes) and adds IR nodes through `trace.apply`. Called outside a trace on
concrete arrays, an op runs eagerly: it is compiled like any user function (cached per op, options
and signature) and returns a `jn.Array`.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Sequence

import numpy as np

from jitnet.errors import TraceShapeError, TraceTypeError
from jitnet.ir import dtypes, pytree, trace
from jitnet.ir.trace import Tracer, apply, is_runtime_array, lift, list_array, numbers_only, trace_error

# ---- lifting operands ----


def _as_data(x):
    """Nested lists of numbers become one array (else the compiled op would see a pytree of
    scalars); other arguments pass unchanged."""
    return list_array(x) if isinstance(x, (list, tuple)) and x and numbers_only(x) else x


def _has_tracer(tree) -> bool:
    return builtins.any(isinstance(x, Tracer) for x in pytree.flatten(tree)[0])


def _hashable(x):
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, *(_hashable(v) for v in x))
    if isinstance(x, slice):  # unhashable before Python 3.12
        return ("slice", x.start, x.stop, x.step)
    if isinstance(x, (np.dtype, type)):
        return np.dtype(x).str
    return x


_eager_cache: dict = {}


def primitive(n_arrays: int = 1):
    """Mark a public op whose first `n_arrays` positional args are array data (pytrees allowed);
    the remaining args and all keyword args are static options. Outside a trace it runs eagerly."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            arrays, static = tuple(map(_as_data, args[:n_arrays])), args[n_arrays:]
            if trace.current() is not None or _has_tracer(arrays):
                return fn(*args, **kwargs)
            key = (fn, len(arrays), _hashable(static), _hashable(tuple(sorted(kwargs.items()))))
            compiled = _eager_cache.get(key)
            if compiled is None:
                from jitnet.compiler import compile as _compile

                compiled = _compile(lambda *xs: fn(*xs, *static, **kwargs)).expect_many_signatures()
                _eager_cache[key] = compiled
            return compiled(*arrays)

        return wrapper

    return decorate


# ---- broadcasting and promotion ----


def _expand_to(t: Tracer, shape: tuple) -> Tracer:
    if t.shape == shape:
        return t
    lead = (1,) * (len(shape) - t.ndim)
    if lead:
        t = apply("reshape", (t,), t.weak, shape=lead + t.shape)
    return apply("expand", (t,), t.weak, shape=tuple(shape))


def _broadcast(op: str, ts: Sequence[Tracer]) -> list[Tracer]:
    try:
        shape = tuple(np.broadcast_shapes(*(t.shape for t in ts)))
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in ts)
        raise trace_error(TraceShapeError, op, f"shapes {shapes} do not broadcast") from None
    return [_expand_to(t, shape) for t in ts]


def _cast(t: Tracer, dtype: np.dtype) -> Tracer:
    return t if t.dtype == dtype else apply("cast", (t,), t.weak, dtype=np.dtype(dtype).str)


def _promote(ts: Sequence[Tracer]) -> tuple[np.dtype, bool]:
    dt, weak = ts[0].dtype, ts[0].weak
    for t in ts[1:]:
        dt, weak = dtypes.promote(dt, weak, t.dtype, t.weak)
    return (dtypes.weak_result(dt) if weak else dt), weak


def _apply_elementwise(op: str, *xs, float_inputs: bool = False, **attrs) -> Tracer:
    ts = [lift(x) for x in xs]
    dt, weak = _promote(ts)
    if float_inputs:
        dt = dtypes.to_float(dt)
    ts = _broadcast(op, [_cast(t, dt) for t in ts])
    return apply(op, tuple(ts), weak, **attrs)


# ---- elementwise ----


def _unary(name: str, float_inputs: bool):
    @primitive()
    def op(x):
        return _apply_elementwise(name, x, float_inputs=float_inputs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Elementwise {name}, as numpy's."
    return op


neg = _unary("neg", False)
exp = _unary("exp", True)
expm1 = _unary("expm1", True)
log = _unary("log", True)
log1p = _unary("log1p", True)
sqrt = _unary("sqrt", True)
rsqrt = _unary("rsqrt", True)
square = _unary("square", False)
reciprocal = _unary("reciprocal", True)
abs = _unary("abs", False)
sign = _unary("sign", False)
tanh = _unary("tanh", True)
sigmoid = _unary("sigmoid", True)
relu = _unary("relu", False)
sin = _unary("sin", True)
cos = _unary("cos", True)
acos = _unary("acos", True)
erf = _unary("erf", True)
erf.__doc__ = "The error function, elementwise (as scipy.special.erf; 1 ulp in float32 on the CPU)."
logical_not = _unary("logical_not", False)


def _binary(name: str, float_inputs: bool):
    @primitive(2)
    def op(a, b):
        return _apply_elementwise(name, a, b, float_inputs=float_inputs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Elementwise {name} with broadcasting, as numpy's."
    return op


add = _binary("add", False)
sub = _binary("sub", False)
mul = _binary("mul", False)
div = _binary("div", True)


def pow(a, b):
    """Elementwise a ** b with broadcasting, as numpy's: integers stay integers (exact, wrapping on
    overflow; bools count as int64). A negative integer exponent given as Python or numpy data
    raises; one in an Array or a traced value gives the truncated reciprocal (1 for a == 1, +-1
    for a == -1, else 0)."""
    host_exponent = not (isinstance(b, Tracer) or is_runtime_array(b))
    if host_exponent and _integer_data(a) and _integer_data(b) and np.any(np.asarray(b) < 0):
        raise trace_error(TraceShapeError, "pow", "integers to negative integer powers are not allowed")
    return _pow(a, b)


def _integer_data(x) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, int):
        return True
    dt = getattr(x, "dtype", None) if not isinstance(x, (list, tuple)) else list_array(x).dtype
    return dt is not None and np.dtype(dt).kind in "iu"


@primitive(2)
def _pow(a, b):
    ta, tb = lift(a), lift(b)
    if dtypes.is_bool(_promote([ta, tb])[0]):
        ta, tb = _cast(ta, dtypes.DEFAULT_INT), _cast(tb, dtypes.DEFAULT_INT)
    return _apply_elementwise("pow", ta, tb)


maximum = _binary("maximum", False)
minimum = _binary("minimum", False)
logical_and = _binary("logical_and", False)
logical_or = _binary("logical_or", False)
less = _binary("lt", False)
less_equal = _binary("le", False)
greater = _binary("gt", False)
greater_equal = _binary("ge", False)
equal = _binary("eq", False)
not_equal = _binary("ne", False)

maximum.__doc__ = "Elementwise maximum; NaN wins, as numpy's. Its gradient goes to `a` where a >= b."
minimum.__doc__ = "Elementwise minimum; NaN wins, as numpy's. Its gradient goes to `a` where a <= b."


@primitive()
def leaky_relu(x, slope: float = 0.01):
    return _apply_elementwise("leaky_relu", x, float_inputs=True, slope=float(slope))


@primitive()
def elu(x, alpha: float = 1.0):
    return _apply_elementwise("elu", x, float_inputs=True, alpha=float(alpha))


_SQRT_HALF, _SQRT_TWO_OVER_PI = math.sqrt(0.5), math.sqrt(2.0 / math.pi)


@primitive()
def gelu(x, approximate: str = "none"):
    """GELU as torch.nn.functional.gelu: x * Phi(x) through erf ("none"), or the tanh approximation
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ("tanh"). One fused elementwise kernel either way."""
    t = lift(x)
    t = _cast(t, dtypes.to_float(t.dtype))
    if approximate == "none":
        return 0.5 * t * (1.0 + erf(t * _SQRT_HALF))
    if approximate == "tanh":
        return 0.5 * t * (1.0 + tanh(_SQRT_TWO_OVER_PI * (t + 0.044715 * t * t * t)))
    raise trace_error(TraceTypeError, "gelu", f"approximate must be 'none' or 'tanh', got {approximate!r}")


@primitive(3)
def where(cond, a, b):
    """`a` where `cond` is true, else `b`; a non-bool `cond` means `cond != 0`."""
    c = lift(cond)
    if not dtypes.is_bool(c.dtype):
        c = not_equal(c, 0)
    ts = [lift(a), lift(b)]
    dt, weak = _promote(ts)
    c, ta, tb = _broadcast("where", [c] + [_cast(t, dt) for t in ts])
    return apply("where", (c, ta, tb), weak)


@primitive(3)
def clip(x, lo=None, hi=None):
    """min(max(x, lo), hi); either bound may be None."""
    out = lift(x)
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out


@primitive()
def astype(x, dtype) -> Tracer:
    t = lift(x)
    try:
        dt = dtypes.canonical(dtype)
    except TypeError as e:
        raise trace_error(TraceTypeError, "astype", str(e)) from None
    return _cast(t, dt)


# ---- reductions ----


def _axes(op: str, t: Tracer, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(t.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -builtins.max(t.ndim, 1) <= a < builtins.max(t.ndim, 1):
            raise trace_error(TraceShapeError, op, f"axis {a} is out of range for shape {t.shape}")
        out.append(int(a) % builtins.max(t.ndim, 1))
    if len(set(out)) != len(out):
        raise trace_error(TraceShapeError, op, f"repeated axis in {axis}")
    return tuple(sorted(a for a in out if a < t.ndim))


def _apply_reduce(op: str, x, axis, keepdims: bool) -> Tracer:
    t = lift(x)
    axes = _axes(op, t, axis)
    if op in ("max", "min", "argmax") and builtins.any(t.shape[a] == 0 for a in axes):
        raise trace_error(TraceShapeError, op, f"reduction over a zero-size axis of shape {t.shape} has no identity")
    if op == "logsumexp":
        t = _cast(t, dtypes.to_float(t.dtype))
    if not axes:
        return t if op != "argmax" else zeros_like(t, dtypes.int64)
    return apply(op, (t,), axes=axes, keepdims=bool(keepdims))


@primitive()
def sum(x, axis=None, keepdims: bool = False):
    return _apply_reduce("sum", x, axis, keepdims)


@primitive()
def max(x, axis=None, keepdims: bool = False):
    return _apply_reduce("max", x, axis, keepdims)


@primitive()
def min(x, axis=None, keepdims: bool = False):
    return _apply_reduce("min", x, axis, keepdims)


@primitive()
def logsumexp(x, axis=None, keepdims: bool = False):
    return _apply_reduce("logsumexp", x, axis, keepdims)


@primitive()
def mean(x, axis=None, keepdims: bool = False):
    """Mean; integer inputs average in the default float (float32)."""
    t = lift(x)
    t = _cast(t, dtypes.to_float(t.dtype))
    axes = _axes("mean", t, axis)
    n = int(np.prod([t.shape[a] for a in axes], dtype=np.int64))
    total = _apply_reduce("sum", t, axes, keepdims)
    return mul(total, 1.0 / n if n else math.nan)


@primitive()
def argmax(x, axis=None, keepdims: bool = False):
    """Index of the maximum (int64); ties and NaN go to the first, as numpy's."""
    t = lift(x)
    if axis is None:
        flat = argmax(reshape(t, (-1,)), 0)
        return reshape(flat, (1,) * t.ndim) if keepdims else flat
    return _apply_reduce("argmax", t, axis, keepdims)


# ---- row-wise ----


def _apply_rowwise(op: str, x, axis: int) -> Tracer:
    t = lift(x)
    t = _cast(t, dtypes.to_float(t.dtype))
    if t.ndim == 0:
        raise trace_error(TraceShapeError, op, "needs at least one dimension")
    (a,) = _axes(op, t, axis)
    return apply(op, (t,), axis=a)


@primitive()
def softmax(x, axis: int = -1):
    return _apply_rowwise("softmax", x, axis)


@primitive()
def log_softmax(x, axis: int = -1):
    return _apply_rowwise("log_softmax", x, axis)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """torch.nn.functional.layer_norm: over the last len(normalized_shape) axes, (x - mean) /
    sqrt(var + eps) (biased variance), times weight, plus bias (each of normalized_shape, or None)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    arrays = {"x": x} | ({} if weight is None else {"weight": weight}) | ({} if bias is None else {"bias": bias})
    return _layer_norm(arrays, tuple(int(d) for d in shape), float(eps))


@primitive()
def _layer_norm(arrays: dict, shape: tuple, eps: float):
    t = lift(arrays["x"])
    t = _cast(t, dtypes.to_float(t.dtype))
    if not shape or len(shape) > t.ndim or t.shape[t.ndim - len(shape) :] != shape:
        raise trace_error(
            TraceShapeError, "layer_norm", f"normalized_shape {shape} is not the trailing shape of the input {t.shape}"
        )
    for name in ("weight", "bias"):
        if name in arrays and tuple(lift(arrays[name]).shape) != shape:
            raise trace_error(
                TraceShapeError, "layer_norm", f"{name} has shape {lift(arrays[name]).shape}, expected {shape}"
            )
    if not eps >= 0:
        raise trace_error(TraceShapeError, "layer_norm", f"eps must be >= 0, got {eps!r}")
    axes = tuple(range(t.ndim - len(shape), t.ndim))
    if t.dtype == dtypes.float64:  # two passes: the variance of the centred values, exact to rounding
        centred = t - mean(t, axis=axes, keepdims=True)
        y = centred * rsqrt(mean(square(centred), axis=axes, keepdims=True) + eps)
    else:  # one pass: E[x] and E[x^2] in one loop (and one loop of their gradients' row sums),
        # in float64, where E[x^2] - E[x]^2 keeps 1e-8 of the variance for a mean 1e4 times the spread
        wide = _cast(t, dtypes.float64)
        m = mean(wide, axis=axes, keepdims=True)
        var = maximum(mean(square(wide), axis=axes, keepdims=True) - square(m), 0.0)
        y = _cast((wide - m) * rsqrt(var + eps), t.dtype)
    if "weight" in arrays:
        y = y * arrays["weight"]
    return y + arrays["bias"] if "bias" in arrays else y


def _band(op: str, x, k: int, lower: bool):
    t = lift(x)
    if t.ndim < 2:
        raise trace_error(TraceShapeError, op, f"needs at least 2 dimensions, got shape {t.shape}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise trace_error(TraceTypeError, op, f"k must be an integer, got {k!r}")
    return where(_band_mask(t.shape[-2:], int(k), lower), t, zeros((), t.dtype))


def _band_mask(shape: tuple, k: int, lower: bool):
    """(n, m) bools: column - row <= k (lower) or >= k."""
    n, m = shape
    offset = reshape(arange(m), (1, m)) - reshape(arange(n), (n, 1))
    return offset <= k if lower else offset >= k


@primitive()
def tril(x, k: int = 0):
    """The lower triangle of the last two axes (elements with column - row <= k), zeros above: numpy's tril."""
    return _band("tril", x, k, lower=True)


@primitive()
def triu(x, k: int = 0):
    """The upper triangle of the last two axes (column - row >= k), zeros below: numpy's triu."""
    return _band("triu", x, k, lower=False)


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None):
    """softmax(q @ k^T * scale + mask) @ v over (..., L, E), (..., S, E), (..., S, Ev) -> (..., L, Ev),
    as torch.nn.functional.scaled_dot_product_attention (no dropout): scale defaults to 1/sqrt(E);
    a bool mask keeps the positions where it is True, a float mask is added to the scores; causal
    keeps column <= row (top-left aligned, as torch's is_causal). The masking is elementwise work
    on the scores, fused into the softmax's row kernel. A row with nothing kept gives NaN, as in torch."""
    arrays = {"q": q, "k": k, "v": v} | ({} if mask is None else {"mask": mask})
    return _attention(arrays, bool(causal), None if scale is None else float(scale))


@primitive()
def _attention(arrays: dict, causal: bool, scale: float | None):
    q, k, v, mask = arrays["q"], arrays["k"], arrays["v"], arrays.get("mask")
    tq, tk, tv = lift(q), lift(k), lift(v)
    if tq.ndim < 2 or tk.ndim < 2 or tv.ndim < 2 or tq.shape[-1] != tk.shape[-1] or tk.shape[-2] != tv.shape[-2]:
        raise trace_error(
            TraceShapeError,
            "scaled_dot_product_attention",
            f"expected q (..., L, E), k (..., S, E), v (..., S, Ev); got {tq.shape}, {tk.shape}, {tv.shape}",
        )
    scale = 1.0 / math.sqrt(tq.shape[-1]) if scale is None else scale
    axes = (*range(tk.ndim - 2), tk.ndim - 1, tk.ndim - 2)
    scores = matmul(tq, transpose(tk, axes)) * scale
    big_negative = -math.inf
    if causal:
        scores = where(_band_mask(scores.shape[-2:], 0, lower=True), scores, big_negative)
    if mask is not None:
        m = lift(mask)
        scores = where(m, scores, big_negative) if dtypes.is_bool(m.dtype) else scores + m
    return matmul(softmax(scores, axis=-1), tv)


# ---- shape ----


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(d) for d in shape)


def _dims(op: str, shape, allow_infer: bool = False) -> tuple[int, ...]:
    """A shape of non-negative ints (and one -1 where `allow_infer`), or an error naming it."""
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    bad = [d for d in shape if d < 0 and not (allow_infer and d == -1)]
    if bad or (allow_infer and shape.count(-1) > 1):
        what = "non-negative sizes and at most one -1" if allow_infer else "non-negative sizes"
        raise trace_error(TraceShapeError, op, f"shape {shape} must have {what}")
    return shape


def _axis(op: str, axis, ndim: int) -> int:
    """One axis in [-ndim, ndim), made non-negative."""
    if not -ndim <= int(axis) < ndim:
        raise trace_error(TraceShapeError, op, f"axis {axis} is out of range for {ndim} dimensions")
    return int(axis) % ndim


@primitive()
def reshape(x, *shape):
    """numpy's reshape, with one -1 allowed."""
    t = lift(x)
    shape = _dims("reshape", _shape_arg(shape), allow_infer=True)
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or t.size % known:
            raise trace_error(TraceShapeError, "reshape", f"cannot reshape {t.shape} to {shape}")
        shape = tuple(t.size // known if d == -1 else d for d in shape)
    if shape == t.shape:
        return t
    return apply("reshape", (t,), t.weak, shape=shape)


@primitive()
def transpose(x, axes=None):
    t = lift(x)
    axes = tuple(reversed(range(t.ndim))) if axes is None else tuple(_axis("transpose", a, t.ndim) for a in axes)
    if sorted(axes) != list(range(t.ndim)):
        raise trace_error(
            TraceShapeError, "transpose", f"axes {axes} are not a permutation of the axes of shape {t.shape}"
        )
    if axes == tuple(range(t.ndim)):
        return t
    return apply("permute", (t,), t.weak, axes=axes)


@primitive()
def broadcast_to(x, shape):
    t = lift(x)
    shape = _dims("broadcast_to", shape)
    if len(shape) < t.ndim:
        raise trace_error(TraceShapeError, "broadcast_to", f"cannot broadcast {t.shape} to {shape}")
    return _expand_to(t, shape)


@primitive()
def expand_dims(x, axis):
    t = lift(x)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    ndim = t.ndim + len(axes)
    axes = sorted(_axis("expand_dims", a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise trace_error(TraceShapeError, "expand_dims", f"repeated axis in {axis}")
    shape, it = [], iter(t.shape)
    for d in range(ndim):
        shape.append(1 if d in axes else next(it))
    return reshape(t, tuple(shape))


@primitive()
def squeeze(x, axis=None):
    t = lift(x)
    if axis is None:
        axes = [d for d, n in enumerate(t.shape) if n == 1]
    else:
        axes = _axes("squeeze", t, axis)
        bad = [a for a in axes if t.shape[a] != 1]
        if bad:
            raise trace_error(TraceShapeError, "squeeze", f"axis {bad[0]} of shape {t.shape} is not 1")
    return reshape(t, tuple(n for d, n in enumerate(t.shape) if d not in axes))


@primitive()
def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Merge dims start_dim..end_dim (all of them by default, like numpy's flatten)."""
    t = lift(x)
    if t.ndim == 0:
        return reshape(t, (1,))
    s, e = _axis("flatten", start_dim, t.ndim), _axis("flatten", end_dim, t.ndim)
    if s > e:
        raise trace_error(TraceShapeError, "flatten", f"start_dim {start_dim} comes after end_dim {end_dim}")
    merged = int(np.prod(t.shape[s : e + 1], dtype=np.int64))
    return reshape(t, t.shape[:s] + (merged,) + t.shape[e + 1 :])


@primitive()
def concatenate(xs, axis: int = 0):
    if isinstance(xs, Tracer):  # one array: its rows, as numpy iterates it
        xs = [getitem(xs, i) for i in range(xs.shape[0])] if xs.ndim else [xs]
    ts = [lift(x) for x in xs]
    if not ts:
        raise trace_error(TraceShapeError, "concatenate", "needs at least one array")
    dt, weak = _promote(ts)
    ts = [_cast(t, dt) for t in ts]
    if builtins.any(t.ndim != ts[0].ndim or t.ndim == 0 for t in ts):
        raise trace_error(TraceShapeError, "concatenate", f"needs arrays of one rank >= 1, got {[t.shape for t in ts]}")
    a = _axis("concatenate", axis, ts[0].ndim)
    ts = [t for t in ts if t.shape[a] > 0] or ts[:1]
    if len(ts) == 1:
        return ts[0]
    return apply("concat", tuple(ts), weak, axis=a)


@primitive()
def pad(x, pad_width, value: float = 0.0):
    """Constant padding with numpy's pad_width forms: n, (lo, hi), or one pair per dim."""
    t = lift(x)
    w = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (t.ndim, 2))
    widths = tuple((int(lo), int(hi)) for lo, hi in w)
    if builtins.any(lo < 0 or hi < 0 for lo, hi in widths):
        raise trace_error(
            TraceShapeError, "pad", f"pad widths must be non-negative, got {pad_width} for shape {t.shape}"
        )
    if builtins.all(lo == 0 and hi == 0 for lo, hi in widths):
        return t
    return apply("pad", (t,), t.weak, widths=widths, value=float(value))


def _integer_array(i) -> bool:
    if isinstance(i, (Tracer,)) or is_runtime_array(i):
        return i.dtype.kind in "iu" and not dtypes.is_bool(i.dtype)
    return isinstance(i, (np.ndarray, list)) and np.asarray(i).dtype.kind in "iu"


def getitem(x, index):
    """Basic indexing (ints, slices, None, Ellipsis), and one integer array among them: x[idx] and
    x[:, idx] gather along that axis (`take`) after the basic part is applied."""
    index = index if isinstance(index, tuple) else (index,)
    arrays = [k for k, i in enumerate(index) if _integer_array(i)]
    if len(arrays) > 1:
        raise trace_error(TraceTypeError, "getitem", "only one integer array per index is supported")
    if arrays:
        (k,) = arrays
        if builtins.any(i is None or i is Ellipsis for i in index[:k]):
            raise trace_error(TraceTypeError, "getitem", "an integer array after None or ... is not supported")
        # the dims before it are all kept (slices: their basic part is applied first) or dropped (ints)
        basic = tuple(slice(None) if j == k else i for j, i in enumerate(index))
        axis = builtins.sum(1 for i in index[:k] if isinstance(i, slice))
        return take(_basic_getitem(x, basic), index[k], axis)
    return _basic_getitem(x, index)


@primitive()
def _basic_getitem(x, index: tuple):
    t = lift(x)
    for i in index:
        basic = i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice))
        if not basic or isinstance(i, (bool, np.bool_)):
            raise trace_error(
                TraceTypeError,
                "getitem",
                f"only basic indexing (ints, slices, None, ...) is supported, got a {type(i).__name__}",
            )
    ellipses = [k for k, i in enumerate(index) if i is Ellipsis]
    if len(ellipses) > 1:
        raise trace_error(TraceShapeError, "getitem", "an index can only have a single ellipsis ('...')")
    n_dims = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_dims > t.ndim:
        raise trace_error(TraceShapeError, "getitem", f"too many indices for shape {t.shape}")
    fill = (slice(None),) * (t.ndim - n_dims)
    index = index[: ellipses[0]] + fill + index[ellipses[0] + 1 :] if ellipses else index + fill
    slices, out_shape, dim = [], [], 0
    for i in index:
        if i is None:
            out_shape.append(1)
            continue
        n = t.shape[dim]
        if isinstance(i, slice):
            b, e, s = i.indices(n)
            slices.append((b, e, s))
            out_shape.append(len(range(b, e, s)))
        else:
            if not -n <= i < n:
                raise trace_error(TraceShapeError, "getitem", f"index {i} is out of bounds for axis {dim} of size {n}")
            i = int(i) % n
            slices.append((i, i + 1, 1))
        dim += 1
    if builtins.any(sl != (0, n, 1) for sl, n in zip(slices, t.shape)):
        t = apply("slice", (t,), t.weak, slices=tuple(slices))
    return reshape(t, tuple(out_shape))


# ---- gather and scatter ----


def _host_indices(indices) -> np.ndarray | None:
    """Indices given as host data (numpy, lists, numbers): known now, so checked now."""
    if isinstance(indices, Tracer) or is_runtime_array(indices):
        return None
    return np.asarray(_as_data(indices))


def _gather_axis(op: str, x, indices, axis: int) -> int:
    """The axis (normalised) that `op` gathers from or scatters into, with host indices checked."""
    shape = np.shape(_as_data(x))
    a = _axis(op, axis, len(shape))
    _check_indices(op, indices, shape[a], a)
    return a


def _check_indices(op: str, indices, n: int, axis: int) -> None:
    """An IndexError for host indices outside [-n, n); indices computed at run time are clamped."""
    host = _host_indices(indices)
    if host is None:
        return
    if host.dtype.kind not in "iu" or host.dtype == np.bool_:
        raise trace_error(TraceTypeError, op, f"indices must be integers, got {host.dtype}")
    bad = host[(host < -n) | (host >= n)]
    if bad.size:
        raise IndexError(f"{op}: index {int(bad.reshape(-1)[0])} is out of bounds for axis {axis} with size {n}")


def take(x, indices, axis: int | None = None):
    """numpy's take: x's elements at integer `indices` along `axis` (x flattened when None); the
    result's shape is x.shape[:axis] + indices.shape + x.shape[axis + 1:]. Negative indices count
    from the end. Host indices (numpy, lists) out of range raise IndexError; indices computed at run
    time (Arrays, traced values) are clamped to the axis, never read out of bounds. Its gradient is
    a scatter-add (`scatter_add`), correct with repeated indices."""
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return _take(x, indices, _gather_axis("take", x, indices, axis))


@primitive(2)
def _take(x, indices, axis: int):
    t, ind = lift(x), lift(indices)
    if ind.dtype.kind not in "iu" or dtypes.is_bool(ind.dtype):
        raise trace_error(TraceTypeError, "take", f"indices must be integers, got {ind.dtype}")
    return apply("take", (t, ind), t.weak, axis=axis)


def take_along_axis(x, indices, axis: int):
    """numpy's take_along_axis: out[..., j, ...] = x[..., indices[..., j, ...], ...] along `axis`,
    indices of x's rank broadcasting against x in the other axes. Out-of-range indices as `take`."""
    return _take_along_axis(x, indices, _gather_axis("take_along_axis", x, indices, axis))


@primitive(2)
def _take_along_axis(x, indices, a: int):
    t, ind = lift(x), lift(indices)
    if ind.ndim != t.ndim:
        raise trace_error(
            TraceShapeError, "take_along_axis", f"indices of rank {ind.ndim} for an array of rank {t.ndim}"
        )
    n = t.shape[a]
    shape = tuple(
        builtins.max(p, q) if d != a else q for d, (p, q) in enumerate(zip(t.shape, ind.shape))
    )  # the result's
    ind = broadcast_to(ind, shape)
    ind = astype(ind, dtypes.DEFAULT_INT)
    ind = clip(where(ind < 0, ind + n, ind), 0, builtins.max(n - 1, 0))  # clamped along the axis, as take
    # flat positions into x: the axis' index times its stride, plus every other axis' own offset
    strides = [int(np.prod(t.shape[d + 1 :], dtype=np.int64)) for d in range(t.ndim)]
    flat = ind * strides[a]
    for d in range(t.ndim):
        if d != a:
            positions = reshape(arange(shape[d]), tuple(shape[d] if e == d else 1 for e in range(t.ndim)))
            flat = flat + positions * strides[d]
    full = broadcast_to(t, tuple(shape[d] if d != a else n for d in range(t.ndim)))
    return _take(reshape(full, (-1,)), flat, 0)


def scatter_add(x, indices, values, axis: int = 0):
    """x with `values` added at `indices` along `axis` (as torch's index_add / numpy's add.at):
    out[..., indices[j], ...] += values[..., j, ...], repeated indices accumulating, in the order
    of j on every backend. values.shape == x.shape[:axis] + indices.shape + x.shape[axis + 1:]."""
    return _scatter_add(x, indices, values, _gather_axis("scatter_add", x, indices, axis))


@primitive(3)
def _scatter_add(x, indices, values, axis: int):
    t, ind, v = lift(x), lift(indices), lift(values)
    if ind.dtype.kind not in "iu" or dtypes.is_bool(ind.dtype):
        raise trace_error(TraceTypeError, "scatter_add", f"indices must be integers, got {ind.dtype}")
    want = t.shape[:axis] + ind.shape + t.shape[axis + 1 :]
    if v.shape != want:
        raise trace_error(TraceShapeError, "scatter_add", f"values have shape {v.shape}, expected {want}")
    v = _cast(v, t.dtype)
    added = apply("scatter_add", (v, astype(ind, dtypes.DEFAULT_INT)), axis=axis, shape=t.shape)
    return t + added


def index_add(x, axis: int, index, source):
    """torch's index_add: x with source's slices added at `index` along `axis` (see scatter_add)."""
    return scatter_add(x, index, source, axis)


# ---- linear algebra and NN ----


@primitive(2)
def matmul(a, b):
    """numpy's matmul: 2-D, batched with broadcasting batch dims, and 1-D operands."""
    ta, tb = lift(a), lift(b)
    if ta.ndim == 0 or tb.ndim == 0:
        raise trace_error(TraceShapeError, "matmul", f"needs arrays of rank >= 1, got {ta.shape} @ {tb.shape}")
    if ta.shape[-1] != tb.shape[-2 if tb.ndim > 1 else 0]:
        raise trace_error(TraceShapeError, "matmul", f"contraction sizes differ: {ta.shape} @ {tb.shape}")
    dt, weak = _promote([ta, tb])
    if dtypes.is_bool(dt):
        raise trace_error(TraceTypeError, "matmul", "needs numeric inputs, got bool")
    ta, tb = _cast(ta, dt), _cast(tb, dt)
    squeeze_a, squeeze_b = ta.ndim == 1, tb.ndim == 1
    if squeeze_a:
        ta = reshape(ta, (1, ta.shape[0]))
    if squeeze_b:
        tb = reshape(tb, (tb.shape[0], 1))
    if ta.ndim > 2 and tb.ndim == 2:  # a stack of rows times one matrix: one 2-D product, whose
        # weight gradient is one 2-D product too (not a batch of them summed)
        out = apply("matmul", (reshape(ta, (-1, ta.shape[-1])), tb), weak)
        return reshape(out, ta.shape[:-1] + (() if squeeze_b else out.shape[-1:]))
    rank = builtins.max(ta.ndim, tb.ndim)
    ta = reshape(ta, (1,) * (rank - ta.ndim) + ta.shape)
    tb = reshape(tb, (1,) * (rank - tb.ndim) + tb.shape)
    out = apply("matmul", (ta, tb), weak)
    shape = out.shape[:-2] + (() if squeeze_a else out.shape[-2:-1]) + (() if squeeze_b else out.shape[-1:])
    return reshape(out, shape)


def _pair(op: str, name: str, v) -> tuple[int, int]:
    """An int or a pair of ints, as PyTorch's kernel_size, stride and padding (the shape rule checks
    their ranges)."""
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and builtins.all(isinstance(u, (int, np.integer)) for u in v):
        return (int(v[0]), int(v[1]))
    raise trace_error(TraceTypeError, op, f"{name} must be an int or a pair of ints, got {v!r}")


@primitive(2)
def conv2d(x, w, stride=1, padding=0):
    """Cross-correlation of x (N, C, H, W) with w (O, C, kh, kw), as PyTorch's conv2d."""
    tx, tw = lift(x), lift(w)
    dt = dtypes.to_float(_promote([tx, tw])[0])
    stride, padding = _pair("conv2d", "stride", stride), _pair("conv2d", "padding", padding)
    return apply("conv2d", (_cast(tx, dt), _cast(tw, dt)), stride=stride, padding=padding)


def _pool(op: str, x, kernel_size, stride, padding) -> Tracer:
    t = lift(x)
    t = _cast(t, dtypes.to_float(t.dtype))
    k = _pair(op, "kernel_size", kernel_size)
    s = k if stride is None else _pair(op, "stride", stride)
    return apply(op, (t,), kernel=k, stride=s, padding=_pair(op, "padding", padding))


@primitive()
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over windows of x (N, C, H, W); padding counts as -inf."""
    return _pool("max_pool2d", x, kernel_size, stride, padding)


@primitive()
def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over windows of x (N, C, H, W); padded zeros count, as PyTorch's default."""
    return _pool("avg_pool2d", x, kernel_size, stride, padding)


@primitive()
def one_hot(labels, num_classes: int):
    """float32 one-hot rows; labels outside [0, num_classes) give all-zero rows."""
    t = lift(labels)
    if not dtypes.is_int(t.dtype):
        raise trace_error(TraceTypeError, "one_hot", f"labels must be integers, got {t.dtype.name}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 0:
        raise trace_error(TraceShapeError, "one_hot", f"num_classes must be a non-negative int, got {num_classes!r}")
    classes = arange(num_classes, dtype=t.dtype)
    return astype(equal(expand_dims(t, -1), classes), dtypes.DEFAULT_FLOAT)


_FMIX32 = ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, 1))  # murmur3's finaliser: (shift, multiplier) rounds


def _fmix32(t: Tracer, key: Tracer) -> Tracer:
    """murmur3's 32-bit finaliser of (t ^ key): a bijection that scatters every input bit."""
    zero = _expand_to(trace.const(np.int64(0)), t.shape)
    for n, (shift, mult) in enumerate(_FMIX32):
        k = _expand_to(key, t.shape) if n == 0 else zero
        t = apply("mix32", (t, k), shift=shift, lo=mult & 0xFFFF, hi=mult >> 16)
    return t


def random_bits(shape, seed) -> Tracer:
    """32-bit random integers (int64 values in [0, 2**32)), a hash of (seed mod 2**32, flat element
    index): counter-based, so every backend and the interpreter give the same bits, a kernel computes
    them where they are used, and a new seed (a runtime input) gives a fresh stream without recompiling."""
    s = lift(seed)
    if s.ndim != 0 or not dtypes.is_int(s.dtype):
        raise trace_error(
            TraceTypeError, "random_bits", f"seed must be an integer scalar, got {s.dtype.name} {s.shape}"
        )
    s = _cast(s, dtypes.int64)
    k1 = _fmix32(s, trace.const(np.int64(0)))
    k2 = _fmix32(s, trace.const(np.int64(0x9E3779B9)))
    n = int(np.prod(shape, dtype=np.int64))
    counter = reshape(arange(n, dtype=dtypes.int64), tuple(shape))
    return _fmix32(_fmix32(counter, k1), k2)


@primitive(2)
def _dropout(x, seed, rate: float):
    t = lift(x)
    t = _cast(t, dtypes.to_float(t.dtype))
    if rate == 0:
        return t
    keep = greater_equal(random_bits(t.shape, seed), round(rate * 2.0**32))
    if rate == 1:
        return where(keep, t, 0)
    return where(keep, div(t, 1.0 - rate), 0)


def dropout(x, rate: float, seed):
    """Inverted dropout, as PyTorch's: each element is zeroed with probability `rate`, the kept ones
    scaled by 1 / (1 - rate). The mask is a hash of (seed, element index) computed inside the kernel
    (no mask array, none stored for the backward, which recomputes it); `seed` is a runtime int, so
    pass a new one each step."""
    if isinstance(rate, Tracer) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise trace_error(TraceTypeError, "dropout", f"rate must be a Python float, got {type(rate).__name__}")
    if not 0.0 <= float(rate) <= 1.0:
        raise trace_error(TraceShapeError, "dropout", f"rate must be in [0, 1], got {rate}")
    return _dropout(x, seed, rate=float(rate))


# ---- constructors (inside and outside compiled code) ----


def _constructor_result(value: Tracer):
    """Outside a trace, constructors return concrete Arrays."""
    if trace.current() is not None:
        return value
    from jitnet.runtime.array import asarray

    return asarray(_const_value(value))


def _const_value(t: Tracer) -> np.ndarray:
    from jitnet.ir.interpret import evaluate

    return evaluate(t.node)


def full(shape, fill_value, dtype=None):
    shape = _dims("full", shape)
    dt = dtypes.scalar_dtype(fill_value) if dtype is None else dtypes.canonical(dtype)
    value = trace.const(np.asarray(fill_value, dtype=dt))
    return _constructor_result(_expand_to(value, shape))


def zeros(shape, dtype=dtypes.DEFAULT_FLOAT):
    return full(shape, 0, dtype)


def ones(shape, dtype=dtypes.DEFAULT_FLOAT):
    return full(shape, 1, dtype)


def zeros_like(x, dtype=None):
    return full(x.shape, 0, x.dtype if dtype is None else dtype)


def ones_like(x, dtype=None):
    return full(x.shape, 1, x.dtype if dtype is None else dtype)


def arange(start, stop=None, step=1, dtype=None):
    """numpy's arange; integer arguments give int64, any float gives float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        is_int = builtins.all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dt = dtypes.DEFAULT_INT if is_int else dtypes.DEFAULT_FLOAT
    else:
        dt = dtypes.canonical(dtype)
    if step == 0:
        raise trace_error(TraceShapeError, "arange", "step must not be zero")
    n = builtins.max(0, math.ceil((stop - start) / step))
    node = apply("iota", (), shape=(n,), axis=0, start=start, step=step, dtype=dt.str)
    return _constructor_result(node)


# ---- operators for Tracer and Array ----


def _swap(fn):
    return lambda a, b: fn(b, a)


_OPERATORS = {
    "__add__": add,
    "__radd__": _swap(add),
    "__sub__": sub,
    "__rsub__": _swap(sub),
    "__mul__": mul,
    "__rmul__": _swap(mul),
    "__truediv__": div,
    "__rtruediv__": _swap(div),
    "__pow__": pow,
    "__rpow__": _swap(pow),
    "__matmul__": matmul,
    "__rmatmul__": _swap(matmul),
    "__neg__": neg,
    "__abs__": abs,
    "__lt__": less,
    "__le__": less_equal,
    "__gt__": greater,
    "__ge__": greater_equal,
    "__eq__": equal,
    "__ne__": not_equal,
    "__and__": logical_and,
    "__or__": logical_or,
    "__invert__": logical_not,
    "__getitem__": getitem,
    "reshape": reshape,
    "transpose": lambda x, *axes: transpose(x, _shape_arg(axes) if axes else None),
    "sum": sum,
    "mean": mean,
    "max": max,
    "min": min,
    "argmax": argmax,
    "astype": astype,
    "flatten": flatten,
    "squeeze": squeeze,
    "T": property(lambda x: transpose(x)),
}


def install_operators(cls: type) -> None:
    for name, fn in _OPERATORS.items():
        setattr(cls, name, fn)
    cls.__hash__ = object.__hash__  # __eq__ is elementwise, identity stays the hash


install_operators(Tracer)
