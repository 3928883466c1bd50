"""Every VJP rule of the op table against float64 central finite differences, and the tie rules.

Each case is a function of one or more float64 arrays. The test differentiates
f(*xs) = sum(op(*xs) * R) with a fixed random R (so the cotangent reaching the op is not all ones;
R is a runtime argument, so no part of the gradient is constant-folded at trace time) with
`jn.grad` (compiled for the CPU, computing in float64) and compares it with central
differences of f evaluated by the numpy reference interpreter. Inputs are drawn away from the
points where an op is not differentiable: away from 0 for abs/relu/..., positive for log, sqrt and
pow bases, inside (-1, 1) for acos, and well separated values (no ties) for max/min/maximum/pools.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

import jitnet as jn
from jitnet.ir import opdefs as op_table

EPS = 1e-6
RTOL, ATOL = 1e-5, 1e-6


# ---- input domains (each returns a float64 array of the given shape) ----


def anyv(rng, shape):
    """Values in ±[0.3, 1.5]: away from 0 (kinks of abs/relu/leaky_relu/elu)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 1.5, size=shape)


def pos(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def unit(rng, shape):
    return rng.uniform(-0.8, 0.8, size=shape)


def distinct(rng, *shapes):
    """Arrays whose values, all together, differ pairwise by at least 0.15 (no ties within eps)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    n = sum(sizes)
    values = (rng.permutation(n) - n / 2) * 0.25 + rng.uniform(-0.05, 0.05, size=n)
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(values[start : start + size].reshape(shape))
        start += size
    return tuple(out)


# ---- the cases: (id, function, make(rng) -> tuple of float64 arrays) ----

CASES: list = []


def case(name, fn, make, eps=EPS, rtol=RTOL, atol=ATOL):
    CASES.append(pytest.param(fn, make, eps, rtol, atol, id=name))


def shaped(domain, *shapes):
    return lambda rng: tuple(domain(rng, s) for s in shapes)


def spaced(*shapes):
    return lambda rng: distinct(rng, *shapes)


UNARY = {
    "neg": (jn.neg, anyv),
    "exp": (jn.exp, anyv),
    "expm1": (jn.expm1, anyv),
    "log": (jn.log, pos),
    "log1p": (jn.log1p, pos),
    "sqrt": (jn.sqrt, pos),
    "rsqrt": (jn.rsqrt, pos),
    "square": (jn.square, anyv),
    "reciprocal": (jn.reciprocal, anyv),
    "abs": (jn.abs, anyv),
    "tanh": (jn.tanh, anyv),
    "sigmoid": (jn.sigmoid, anyv),
    "sin": (jn.sin, anyv),
    "cos": (jn.cos, anyv),
    "acos": (jn.acos, unit),
    "erf": (jn.erf, anyv),
    "gelu": (jn.gelu, anyv),
    "relu": (jn.relu, anyv),
    "leaky_relu": (lambda x: jn.leaky_relu(x, 0.2), anyv),
    "elu": (lambda x: jn.elu(x, 0.7), anyv),
}
for _name, (_fn, _domain) in UNARY.items():
    case(_name, _fn, shaped(_domain, (3, 4)))
for _name in ("exp", "tanh", "relu", "rsqrt"):
    case(f"{_name}-0d", UNARY[_name][0], shaped(UNARY[_name][1], ()))
case("sigmoid-3d", jn.sigmoid, shaped(anyv, (2, 3, 2)))

BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 3), ()), ((4,), (3, 4)), ((2, 1, 3), (4, 1))]
BINARY = {
    "add": (lambda a, b: a + b, shaped),
    "sub": (lambda a, b: a - b, shaped),
    "mul": (lambda a, b: a * b, shaped),
    "div": (lambda a, b: a / b, shaped),
    "maximum": (jn.maximum, None),
    "minimum": (jn.minimum, None),
}
for _name, (_fn, _maker) in BINARY.items():
    for _sa, _sb in BROADCAST_PAIRS:
        _make = spaced(_sa, _sb) if _maker is None else _maker(anyv, _sa, _sb)
        case(f"{_name}-{_sa}-{_sb}", _fn, _make)
for _sa, _sb in BROADCAST_PAIRS:
    case(f"pow-{_sa}-{_sb}", jn.pow, lambda rng, _sa=_sa, _sb=_sb: (pos(rng, _sa), anyv(rng, _sb) * 2))
case("pow-const-exponent", lambda x: x**2.5, shaped(pos, (3, 4)))
case("pow-const-base", lambda x: jn.pow(1.7, x), shaped(anyv, (3, 4)))
case("square-via-pow2", lambda x: x**2, shaped(anyv, (3, 4)))

# where: a constant mask, and a mask computed from the input (the comparison has no gradient)
_MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])
case("where-const-mask", lambda a, b: jn.where(_MASK, a, b), shaped(anyv, (3, 4), (3, 4)))
case("where-broadcast", lambda a, b: jn.where(_MASK, a, b), shaped(anyv, (3, 1), (1, 4)))
case("where-scalar-branch", lambda a, b: jn.where(_MASK, a, b), shaped(anyv, (), (3, 4)))
case("where-traced-mask", lambda a, b: jn.where(a > b, a * b, jn.exp(b)), spaced((3, 4), (3, 4)))

# cast float64 -> float32 -> float64: linear in x, so a larger step loses nothing to truncation
# while float32 rounding (about 1e-7 relative per value) stays well under the tolerance.
case("cast-f64-f32-f64", lambda x: jn.astype(jn.astype(x, jn.float32), jn.float64), shaped(anyv, (3, 4)), 1e-2, 1e-4)
# float32 exp in the loop: its rounding (about 6e-8 relative) over a step of 2e-3 bounds the error.
case(
    "cast-f64-f32-f64-nonlinear",
    lambda x: jn.exp(jn.astype(x, jn.float32)).astype(jn.float64) * x,
    shaped(anyv, (2, 3)),
    1e-3,
    3e-4,
    1e-5,
)

# ---- movement ----
X234 = shaped(anyv, (2, 3, 4))
case("reshape", lambda x: jn.reshape(x, (4, 6)), X234)
case("reshape-minus-one", lambda x: x.reshape(3, -1, 2), X234)
case("flatten", jn.flatten, X234)
case("transpose-default", lambda x: x.T, X234)
case("transpose-axes", lambda x: jn.transpose(x, (1, 2, 0)), X234)
case("transpose-then-reshape", lambda x: jn.transpose(x, (2, 0, 1)).reshape(8, 3), X234)
case("broadcast_to", lambda x: jn.broadcast_to(x, (2, 3, 4)), shaped(anyv, (3, 1)))
case("broadcast_to-scalar", lambda x: jn.broadcast_to(x, (2, 3)), shaped(anyv, ()))
case("expand_dims-squeeze", lambda x: jn.squeeze(jn.expand_dims(x, 1) * 2.0, 1), shaped(anyv, (3, 4)))
SLICES = {
    "basic": (slice(None), slice(1, 3), slice(None)),
    "step2": (slice(None), slice(None), slice(None, None, 2)),
    "step3-offset": (slice(1, None), slice(None), slice(1, None, 3)),
    "neg-step": (slice(None, None, -1), slice(None), slice(None)),
    "neg-step2": (slice(None), slice(None, None, -2), slice(3, 0, -2)),
    "neg-bounds": (slice(-1, None), slice(-3, -1), slice(-2, None)),
    "int-index": (1, slice(None), 2),
    "newaxis": (slice(None), None, slice(None), slice(0, 3, 2)),
    "ellipsis": (Ellipsis, slice(0, 3, 2)),
}
for _name, _index in SLICES.items():
    case(f"slice-{_name}", lambda x, _index=_index: x[_index], shaped(anyv, (2, 3, 5)))
case("slice-twice", lambda x: x[:, ::2][1:, ::-1], shaped(anyv, (4, 5)))
case("pad", lambda x: jn.pad(x, ((1, 2), (0, 1))), shaped(anyv, (3, 4)))
case("pad-value", lambda x: jn.pad(x, 2, value=-1.5), shaped(anyv, (2, 3)))
case("pad-then-slice", lambda x: jn.pad(x, ((1, 1), (2, 0)))[1:, ::2], shaped(anyv, (3, 4)))
case("concat-axis0", lambda a, b: jn.concatenate([a, b], axis=0), shaped(anyv, (2, 3), (4, 3)))
case("concat-axis1-three", lambda a, b, c: jn.concatenate([a, b, c], axis=1), shaped(anyv, (2, 1), (2, 3), (2, 2)))
case("concat-same-input", lambda a: jn.concatenate([a, a * 2.0, a], axis=-1), shaped(anyv, (2, 3)))
case("take-repeated", lambda a: jn.take(a, np.array([[2, 0], [2, -1]]), 1), shaped(anyv, (3, 4)))
case("scatter_add-repeated", lambda a, v: jn.scatter_add(a, np.array([1, 1, 0]), v, 0), shaped(anyv, (2, 3), (3, 3)))

# ---- reductions and row-wise ----
REDUCE_AXES = [
    (None, False),
    (None, True),
    (0, True),
    (1, False),
    (-1, False),
    ((0, 2), True),
    ((2, 0), False),
    ((0, 1, 2), False),
]
for _axis, _keep in REDUCE_AXES:
    _suffix = f"{_axis}-{'keep' if _keep else 'drop'}"
    case(f"sum-{_suffix}", lambda x, _a=_axis, _k=_keep: jn.sum(x, _a, keepdims=_k), X234)
    case(f"mean-{_suffix}", lambda x, _a=_axis, _k=_keep: jn.mean(x, _a, keepdims=_k), X234)
    case(f"max-{_suffix}", lambda x, _a=_axis, _k=_keep: jn.max(x, _a, keepdims=_k), spaced((2, 3, 4)))
    case(f"min-{_suffix}", lambda x, _a=_axis, _k=_keep: jn.min(x, _a, keepdims=_k), spaced((2, 3, 4)))
    case(f"logsumexp-{_suffix}", lambda x, _a=_axis, _k=_keep: jn.logsumexp(x, _a, keepdims=_k), X234)
case("max-all-times-x", lambda x: x.max() * x, spaced((5,)))
for _axis in (0, 1, -1):
    case(f"softmax-{_axis}", lambda x, _a=_axis: jn.softmax(x, _a), shaped(anyv, (2, 3, 4)))
    case(f"log_softmax-{_axis}", lambda x, _a=_axis: jn.log_softmax(x, _a), shaped(anyv, (2, 3, 4)))
case("softmax-1d", jn.softmax, shaped(anyv, (5,)))
case("log_softmax-wide", lambda x: jn.log_softmax(x * 3.0, 0), shaped(anyv, (6, 2)))

# ---- matmul ----
MATMUL = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (3, 4, 2)),
    ((1, 3, 4), (2, 4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
]
for _sa, _sb in MATMUL:
    case(f"matmul-{_sa}-{_sb}", lambda a, b: a @ b, shaped(anyv, _sa, _sb))
case("matmul-transposed", lambda a, b: a.T @ b, shaped(anyv, (4, 3), (4, 2)))

# ---- conv2d and pools ----
CONVS = [  # x shape, w shape, stride, padding
    ((2, 3, 6, 6), (4, 3, 3, 3), 1, 0),
    ((2, 2, 7, 7), (3, 2, 3, 3), 2, 1),
    ((1, 2, 8, 8), (2, 2, 3, 3), 2, 0),  # a row and a column no window reaches
    ((1, 2, 5, 6), (3, 2, 2, 3), 1, 2),  # non-square kernel, odd size, padding 2
    ((2, 1, 7, 5), (2, 1, 3, 2), (2, 1), (1, 0)),
    ((1, 3, 5, 5), (2, 3, 1, 1), 2, 0),
    ((1, 2, 4, 4), (2, 2, 4, 4), 1, 0),  # kernel the size of the input
]
for _sx, _sw, _stride, _pad in CONVS:
    case(
        f"conv2d-{_sx}-{_sw}-s{_stride}-p{_pad}",
        lambda x, w, _s=_stride, _p=_pad: jn.conv2d(x, w, stride=_s, padding=_p),
        shaped(anyv, _sx, _sw),
    )
for _sx, _sw, _stride, _pad in CONVS[:2]:  # the gradient ops' own VJPs (second derivatives of conv2d)
    for _arg in (0, 1):
        case(
            f"conv2d-grad{_arg}-{_sx}-{_sw}-s{_stride}-p{_pad}",
            lambda x, w, _s=_stride, _p=_pad, _a=_arg: jn.grad(
                lambda x, w: jn.sum(jn.conv2d(x, w, stride=_s, padding=_p) ** 2), argnums=_a
            )(x, w),
            shaped(anyv, _sx, _sw),
        )
POOLS = [  # x shape, kernel, stride, padding
    ((1, 2, 4, 4), 2, None, 0),
    ((2, 1, 5, 5), 2, None, 0),  # windows that do not divide the input
    ((1, 2, 5, 5), 3, 2, 0),  # stride < kernel: windows overlap
    ((1, 2, 5, 6), 3, 2, 1),  # padding
    ((1, 1, 6, 7), (2, 3), (1, 2), (1, 1)),
    ((1, 1, 7, 5), (3, 2), 1, (1, 0)),
]
for _sx, _k, _s, _p in POOLS:
    case(
        f"max_pool2d-{_sx}-k{_k}-s{_s}-p{_p}",
        lambda x, _k=_k, _s=_s, _p=_p: jn.max_pool2d(x, _k, _s, _p),
        spaced(_sx),
    )
    case(
        f"avg_pool2d-{_sx}-k{_k}-s{_s}-p{_p}",
        lambda x, _k=_k, _s=_s, _p=_p: jn.avg_pool2d(x, _k, _s, _p),
        shaped(anyv, _sx),
    )

# ---- a few compositions (rules meeting each other) ----
case("mlp", lambda x, w, b: jn.sum(jn.tanh(x @ w + b), 1), shaped(anyv, (3, 4), (4, 5), (5,)))


def layernorm(x):
    centred = x - x.mean(-1, keepdims=True)
    return centred * jn.rsqrt((centred**2).mean(-1, keepdims=True) + 1e-5)


case("layernorm", layernorm, shaped(anyv, (3, 5)))
case(
    "conv-relu-pool",
    lambda x, w: jn.max_pool2d(jn.relu(jn.conv2d(x, w, padding=1)) + 0.01 * x[:, :1], 2),
    shaped(anyv, (1, 2, 5, 5), (1, 2, 3, 3)),
)


# ---- the check ----


def _seed(request) -> int:
    return zlib.crc32(request.node.callspec.id.encode())


def _objective(fn):
    """sum(fn(*xs) * r). The weights r are a runtime argument (the last), not a constant: with
    constant weights the gradient of a linear op is constant-folded at trace time by the numpy
    interpreter and no kernel would compute it."""
    return lambda *args: jn.sum(fn(*args[:-1]) * args[-1])


def _numeric_grads(f, args, r, eps):
    fwd = jn.compile(f, backend="interpret")
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            xs = [x.copy() for x in args]
            xs[i][idx] = a[idx] + eps
            up = float(np.asarray(fwd(*xs, r)))
            xs[i][idx] = a[idx] - eps
            down = float(np.asarray(fwd(*xs, r)))
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def _prepare(fn, make, seed):
    rng = np.random.default_rng(seed)
    args = tuple(np.asarray(a, dtype=np.float64) for a in make(rng))
    out = np.asarray(jn.compile(fn, backend="interpret")(*args))
    r = rng.standard_normal(out.shape)
    return args, r


@pytest.mark.parametrize("fn, make, eps, rtol, atol", CASES)
def test_vjp_matches_finite_differences(request, fn, make, eps, rtol, atol):
    args, r = _prepare(fn, make, _seed(request))
    f = _objective(fn)
    got = jn.grad(f, argnums=tuple(range(len(args))))(*args, r)
    want = _numeric_grads(f, args, r, eps)
    assert isinstance(got, tuple) and len(got) == len(args)
    for i, (g, w, a) in enumerate(zip(got, want, args)):
        g = np.asarray(g)
        assert g.shape == a.shape, f"grad {i}: shape {g.shape} != {a.shape}"
        assert g.dtype == np.float64, f"grad {i}: dtype {g.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"gradient of argument {i}")


def _differentiable_ops() -> set[str]:
    """Ops whose VJP rule can return a gradient. `tag` (the differentiation marker) is removed by
    simplify before any graph is lowered, so it cannot show up in one."""
    return {name for name, op in op_table.OPS.items() if op.vjp not in (None, op_table._no_grad)} - {"tag"}


def test_every_differentiable_op_is_covered():
    seen = set()
    for param in CASES:
        fn, make, *_ = param.values
        args, r = _prepare(fn, make, 0)
        graph = jn.compile(_objective(fn), backend="interpret").lower(*args, r).graph
        seen |= {node.op for node in graph.nodes()}
    missing = _differentiable_ops() - seen
    assert not missing, f"no finite-difference case traces through {sorted(missing)}"
    assert {"matmul", "conv2d", "max_pool2d", "avg_pool2d", "slice", "pad", "concat", "cast"} <= seen


# ---- the documented tie rules ----


def _grads(fn, *args):
    return [np.asarray(g) for g in jn.grad(lambda *xs: jn.sum(fn(*xs)), argnums=tuple(range(len(args))))(*args)]


Z = np.array([-1.0, 0.0, 2.0])


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda z: jn.maximum(z, 0.0), [0.0, 1.0, 1.0]),  # API.md: maximum(z, 0)'(0) = 1
        (lambda z: jn.maximum(0.0, z), [0.0, 0.0, 1.0]),  # the tie goes to the first argument
        (lambda z: jn.minimum(z, 0.0), [1.0, 1.0, 0.0]),
        (lambda z: jn.minimum(0.0, z), [1.0, 0.0, 0.0]),
        (jn.relu, [0.0, 0.0, 1.0]),
        (jn.abs, [-1.0, 0.0, 1.0]),
        (jn.sign, [0.0, 0.0, 0.0]),
        (lambda z: jn.leaky_relu(z, 0.25), [0.25, 0.25, 1.0]),  # leaky_relu'(0) = slope
        (lambda z: jn.clip(z, 0.0, 2.0), [0.0, 1.0, 1.0]),  # maximum then minimum: both ties to z
    ],
    ids=["maximum(z,0)", "maximum(0,z)", "minimum(z,0)", "minimum(0,z)", "relu", "abs", "sign", "leaky_relu", "clip"],
)
def test_unary_tie_rules(fn, expected):
    (g,) = _grads(fn, Z)
    np.testing.assert_array_equal(g, expected)


def test_float64_gradient_keeps_the_precision_of_python_scalars():
    x = np.array([-1.0, 2.0])
    (g,) = _grads(lambda x: jn.leaky_relu(x, 0.1), x)  # the rule's g * slope
    np.testing.assert_array_equal(g, [0.1, 1.0])
    (g,) = _grads(lambda x: x * 0.1, x)
    np.testing.assert_array_equal(g, [0.1, 0.1])


def test_maximum_minimum_tie_on_equal_arrays():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 5.0, 0.0])
    np.testing.assert_array_equal(_grads(jn.maximum, a, b), [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(_grads(jn.minimum, a, b), [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("reduce", [jn.max, jn.min])
def test_extremum_reduction_splits_ties_evenly(reduce):
    sign = 1.0 if reduce is jn.max else -1.0
    x = sign * np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, -1.0, 4.0, 5.0]])
    (g,) = _grads(lambda x: reduce(x, axis=1) * np.array([1.0, 3.0, 10.0]), x)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5, 0], [0.75] * 4, [5.0, 0, 0, 5.0]], rtol=1e-12)
    (g,) = _grads(lambda x: reduce(x, axis=0, keepdims=True), x)
    np.testing.assert_allclose(g, [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1]], rtol=1e-12)
    (g,) = _grads(reduce, x)  # over everything: the two 5s (or -5s) tie
    np.testing.assert_allclose(g, [[0, 0, 0, 0], [0, 0, 0, 0], [0.5, 0, 0, 0.5]], rtol=1e-12)


def test_max_pool_routes_a_tied_window_to_its_first_maximum():
    """max_pool2d's rule (its VJP reference): each window's gradient goes to the first maximum in
    row-major window order, as PyTorch's."""
    x = np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [0.0, 2.0, 2.0]]]])
    (g,) = _grads(lambda x: jn.max_pool2d(x, 2, 1) * np.array([[[[1.0, 10.0], [100.0, 1000.0]]]]), x)
    # windows: top-left all 1s -> (0, 0); top-right max 2 at (1, 2); bottom-left max 2 at (2, 1);
    # bottom-right 2s at (1, 2), (2, 1), (2, 2) -> the first, (1, 2)
    np.testing.assert_array_equal(g, [[[[1.0, 0.0, 0.0], [0.0, 0.0, 1010.0], [0.0, 100.0, 0.0]]]])


def test_where_sends_gradient_only_to_the_chosen_branch():
    cond = np.array([[True, False], [False, True]])
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[5.0], [6.0]])  # broadcast: its gradient sums the rows' unchosen entries
    w = np.array([[1.0, 10.0], [100.0, 1000.0]])
    ga, gb = _grads(lambda a, b: jn.where(cond, a, b) * w, a, b)
    np.testing.assert_array_equal(ga, [[1.0, 0.0], [0.0, 1000.0]])
    np.testing.assert_array_equal(gb, [[10.0], [100.0]])
    # the same value on both sides: each side contributes where it is chosen
    (g,) = _grads(lambda x: jn.where(x > 2.5, x * 3.0, x * x), a)
    np.testing.assert_array_equal(g, [[2.0, 4.0], [3.0, 3.0]])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_vjp_gives_zero_gradients_to_integer_and_bool_inputs(dtype):
    x = np.array([[0.5, -1.0, 2.0]])
    n = np.array([[1, 0, 3]]).astype(dtype)
    out, vjp_fn = jn.vjp(lambda x, n: x * n, x, n)
    ct = np.array([[2.0, 3.0, 4.0]])
    gx, gn = vjp_fn(ct)
    np.testing.assert_array_equal(np.asarray(out), x * n)
    np.testing.assert_array_equal(np.asarray(gx), ct * n)
    gn = np.asarray(gn)
    assert gn.shape == n.shape and gn.dtype == n.dtype
    assert not gn.any()


def test_vjp_integer_input_used_through_a_cast_gets_zero_gradient():
    x = np.array([1.0, 2.0])
    n = np.array([3, 4], np.int32)
    _, vjp_fn = jn.vjp(lambda x, n: x * n.astype(jn.float64) + jn.exp(n.astype(jn.float64)), x, n)
    gx, gn = vjp_fn(np.ones(2))
    np.testing.assert_array_equal(np.asarray(gx), [3.0, 4.0])
    assert np.asarray(gn).dtype == np.int32 and not np.asarray(gn).any()


@pytest.mark.parametrize("arg", [np.array([1, 2], np.int32), np.array([True, False]), 3])
def test_grad_with_respect_to_an_integer_raises(arg):
    with pytest.raises(
        jn.TraceError, match=r"(?s)argument 0 has dtype (int|bool).*only float inputs can be differentiated"
    ):
        jn.grad(lambda n: jn.sum(n * 2.0))(arg)


def test_grad_of_integer_argument_raises_even_when_another_is_float():
    with pytest.raises(jn.TraceError, match="argument 1 has dtype int64"):
        jn.grad(lambda x, n: jn.sum(x * n), argnums=(0, 1))(np.ones(2), np.array([1, 2], np.int64))


@pytest.mark.parametrize(
    "fn, shape",
    [
        (lambda x: x * 2.0, "shape (3,)"),
        (lambda x: jn.sum(x, keepdims=True), "shape (1,)"),
        (lambda x: jn.sum(x) > 0, "dtype bool"),
    ],
)
def test_grad_of_non_scalar_output_raises(fn, shape):
    with pytest.raises(jn.TraceError, match="must return a float scalar, got .*" + re.escape(shape)):
        jn.grad(fn)(np.ones(3))
