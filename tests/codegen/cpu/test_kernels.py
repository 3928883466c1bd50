"""Generated CPU kernels against the numpy reference interpreter, op by op and case by case."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from helpers import COMPARISONS, assert_same, check

import jitnet as jn
from jitnet.codegen.cpu.kernels import PARALLEL_MIN_WORK

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def randint(*shape, dtype=np.int32, lo=-5, hi=6):
    return rng.integers(lo, hi, shape).astype(dtype)


X = randn(3, 5)
INTS = randint(3, 5)
X3 = randn(3, 5, 7)
SPECIAL = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3, 20.0, -20.0, 88.0, -100.0, 0.99],
    dtype=np.float32,
)
TRANSCENDENTAL = dict(rtol=2e-5, atol=1e-6)

# ---- elementwise ----

FLOAT_UNARY = {
    "neg": jn.neg,
    "exp": jn.exp,
    "expm1": jn.expm1,
    "log": jn.log,
    "log1p": jn.log1p,
    "sqrt": jn.sqrt,
    "rsqrt": jn.rsqrt,
    "square": jn.square,
    "reciprocal": jn.reciprocal,
    "abs": jn.abs,
    "sign": jn.sign,
    "tanh": jn.tanh,
    "sigmoid": jn.sigmoid,
    "sin": jn.sin,
    "cos": jn.cos,
    "acos": jn.acos,
    "relu": jn.relu,
    "leaky_relu": lambda x: jn.leaky_relu(x, 0.2),
    "elu": lambda x: jn.elu(x, 1.5),
}


@pytest.mark.parametrize("name", list(FLOAT_UNARY))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_float(name, dtype):
    """Random values and the special ones (NaN, infinities, signed zeros, large) in one array."""
    x = np.concatenate([X.reshape(-1) * 3, SPECIAL]).astype(dtype).reshape(-1, 1, 31)
    check(FLOAT_UNARY[name], x, **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["neg", "abs", "sign", "square", "relu", "exp", "sqrt"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_unary_int(name, dtype):
    """Integer inputs: kept integer where the op allows, promoted to float32 otherwise."""
    check(FLOAT_UNARY[name], randint(2, 7, dtype=dtype, lo=0 if name == "sqrt" else -5), **TRANSCENDENTAL)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: jn.abs(a) ** b,
    "maximum": jn.maximum,
    "minimum": jn.minimum,
    **COMPARISONS,
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_float(name):
    a = randn(3, 4)
    b = randn(4)
    a[0, :2] = b[:2]  # some equal pairs for the comparisons
    check(BINARY[name], a, b, **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "maximum", "minimum", "lt", "eq", "ne", "div"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_binary_int(name, dtype):
    a, b = randint(3, 4, dtype=dtype), randint(3, 1, dtype=dtype, lo=1)
    check(BINARY[name], a, b)


BROADCASTS = [
    ((3, 4), ()),
    ((3, 4), (4,)),
    ((3, 4), (3, 1)),
    ((3, 1), (1, 4)),
    ((2, 1, 4), (3, 1)),
    ((1,), (2, 3, 1, 4)),
    ((), ()),
    ((0, 4), (4,)),
    ((1, 1), (1,)),
]


@pytest.mark.parametrize("a_shape, b_shape", BROADCASTS, ids=[f"{a}-{b}" for a, b in BROADCASTS])
@pytest.mark.parametrize("name", ["add", "maximum"])
def test_broadcasting(name, a_shape, b_shape):
    check(BINARY[name], randn(*a_shape), randn(*b_shape))


@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_python_scalar_operands(scalar):
    check(lambda a: (a * scalar - scalar) / (1 + scalar), X)
    check(lambda a: scalar * a + scalar, randint(3, 4))


def test_runtime_scalar_argument():
    check(lambda a, s: a * s + s, X, 1.5)
    check(lambda a, n: a + n, randint(3, 4), 7)


NAN_PAIRS = np.array(
    [[np.nan, 1.0, np.nan, -np.inf, np.inf, 0.0], [1.0, np.nan, np.nan, np.nan, -np.inf, -0.0]], dtype=np.float32
)


@pytest.mark.parametrize("op", [jn.maximum, jn.minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(op):
    got = check(op, NAN_PAIRS[0], NAN_PAIRS[1])
    want = np.maximum(*NAN_PAIRS) if op is jn.maximum else np.minimum(*NAN_PAIRS)
    np.testing.assert_array_equal(np.isnan(np.asarray(got)), np.isnan(want))


def test_clip_propagates_nan():
    got = check(lambda a: jn.clip(a, -1.0, 1.0), SPECIAL)
    np.testing.assert_array_equal(np.asarray(got), np.clip(SPECIAL, -1, 1))


@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("to", ["bool", "int32", "int64", "float32", "float64"])
def test_casts(dtype, to):
    x = np.array([-2.7, -1.0, 0.0, 0.5, 3.9, 100.25], dtype=np.float64).astype(dtype)
    check(lambda a: a.astype(to), x)


def test_bool_ops():
    a, b = X > 0, randn(3, 5) > 0.5
    check(lambda a, b: (a & ~b) | (a == b), a, b)
    check(lambda a, b: (a != b, a < b, a >= b), a, b)


@pytest.mark.parametrize(
    "cond, a, b",
    [
        (X > 0, X, -X),
        (X > 0, X, 0.0),
        (randint(3, 5), randint(3, 5, dtype=np.int64), 7),
        (X[:, :1] > 0, randn(5), randn(3, 1)),
        (X > 0, randint(3, 5) > 0, True),
    ],
    ids=["same_shape", "scalar_branch", "int_cond", "broadcast", "bool_values"],
)
def test_where(cond, a, b):
    check(jn.where, cond, a, b)


def test_one_hot():
    check(lambda y: jn.one_hot(y, 5), np.array([0, 4, 2, -1, 5, 2], dtype=np.int64))
    check(lambda y: jn.one_hot(y, 3), np.array([[0, 1], [2, 2]], dtype=np.int32))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x + jn.arange(5),
        lambda x: x * jn.arange(0.5, 3.0, 0.5),
        lambda x: jn.arange(10, 0, -3) + x,
        lambda x: jn.zeros((2, 5)) + jn.ones(5) * x,
        lambda x: jn.full((3, 1), 7, dtype="int32") * x,
        lambda x: jn.zeros_like(x, dtype="int64") + jn.ones_like(x),
    ],
    ids=["arange", "arange_float", "arange_neg", "zeros_ones", "full_int", "zeros_like"],
)
def test_constructors(fn):
    check(fn, np.float32(1.5))
    check(fn, np.int64(-2))


def test_constructors_broadcast_in_kernel():
    check(lambda x: x + jn.arange(5, dtype="float32"), X)
    check(lambda x: x - jn.arange(3)[:, None], X)


# ---- non-contiguous inputs, size-0 and size-1 dims, 0-d arrays ----

BASE = randn(6, 8)


@pytest.mark.parametrize(
    "x",
    [BASE.T, BASE[::-1], BASE[::2, ::-3], BASE[:, 1:7:2].T, np.broadcast_to(BASE[:1], (4, 8)), np.asfortranarray(BASE)],
    ids=["transposed", "reversed", "strided", "sliced_transposed", "broadcast_view", "fortran"],
)
def test_noncontiguous_inputs(x):
    check(lambda a: jn.exp(a) * 2 - a, x)
    check(lambda a: a.sum(0) + a.max(0), x)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 0, 3), (1,), (4, 1), (1, 1, 5)])
def test_degenerate_shapes(shape):
    x = randn(*shape)
    check(lambda a: jn.tanh(a) + 1, x)
    check(lambda a: (a.sum(-1), a.sum(0, keepdims=True), a.mean(0)), x)


@pytest.mark.parametrize("shape", [(1,), (4, 1), (2, 1, 3)])
def test_extremes_over_size_one_dims(shape):
    x = randn(*shape)
    check(lambda a: (a.max(0), a.min(-1), jn.argmax(a, 0), jn.logsumexp(a, -1)), x)
    check(lambda a: (jn.softmax(a, 0), jn.log_softmax(a, -1)), x)


def test_zero_d():
    s = np.float32(-1.25)
    check(lambda a: (jn.exp(a), jn.log(-a), jn.relu(a), jn.tanh(a)), s)
    check(lambda a: jn.sigmoid(a) * jn.abs(a), s)
    check(lambda a, b: jn.where(a > b, a, b), s, np.float32(2))
    check(lambda a: a.sum(), s)
    check(lambda a, b: a + b, s, X)
    check(lambda a: a.reshape(1, 1), s)


def test_size_zero_reductions():
    empty = np.zeros((3, 0), np.float32)
    check(lambda a: (a.sum(1), a.mean(1), a.sum()), empty)
    check(lambda a: (a.max(0), a.min(0), jn.argmax(a, 0)), empty)


# ---- reductions ----

AXES = [None, 0, 1, 2, (0, 1), (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduce_axes(op, axis, keepdims):
    check(lambda a: getattr(jn, op)(a, axis, keepdims=keepdims), X3)


@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("op", ["min", "mean", "logsumexp"])
def test_reduce_axes_more_ops(op, axis):
    check(lambda a: getattr(jn, op)(a, axis), X3, **TRANSCENDENTAL)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -2])
def test_argmax_axes(axis, keepdims):
    x = np.round(X3 * 2) / 2  # ties
    check(lambda a: jn.argmax(a, axis, keepdims=keepdims), x)


def test_negative_axes():
    check(lambda a: (a.sum(-1), jn.max(a, (-1, 0), keepdims=True), jn.argmax(a, -2), jn.softmax(a, -3)), X3)


@pytest.mark.parametrize("n", [1, 3, 17, 513, 1031])
def test_odd_sizes(n):
    x = randn(3, n)
    check(lambda a: (a.sum(1), a.min(1), jn.argmax(a, 1), jn.logsumexp(a, 1), jn.softmax(a)), x, **TRANSCENDENTAL)


EXTREMES = np.array(
    [
        [1.0, np.nan, 3.0, np.nan, 9.0],
        [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
        [2.0, 5.0, 5.0, -1.0, 5.0],
        [np.inf, 0.0, np.inf, 1.0, np.nan],
        [np.nan, np.nan, np.nan, np.nan, np.nan],
        [-3.0, -3.0, -3.0, -3.0, -3.0],
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("axis", [0, 1, None])
@pytest.mark.parametrize("op", ["max", "min", "argmax", "sum"])
def test_reduce_special_values(op, axis):
    """NaN wins max/min as in numpy; argmax picks the first maximum, or the first NaN."""
    got = check(lambda a: getattr(jn, op)(a, axis), EXTREMES)
    with np.errstate(invalid="ignore"):
        want = getattr(np, op)(EXTREMES, axis)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("axis", [1, None])
def test_logsumexp_infinities(axis):
    x = np.array([[np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, 1.0]], dtype=np.float32)
    check(lambda a: jn.logsumexp(a, axis), x if axis else x[:1])


def test_logsumexp_with_minus_inf_entries_and_nan():
    x = np.array([[-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    check(lambda a: jn.logsumexp(a, 1), x)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_int(dtype):
    x = randint(4, 6, dtype=dtype)
    x[1] = np.iinfo(dtype).min
    x[2] = np.iinfo(dtype).max
    check(lambda a: (a.sum(1), a.max(1), a.min(0), jn.argmax(a, 1), a.sum()), x)


def test_reduce_bool():
    m = X3 > 0.3
    check(lambda a: (a.sum(), a.sum(1), jn.sum(a, (0, 2), keepdims=True)), m)


def test_argmax_bool():
    check(lambda a: jn.argmax(a > 0, 1), X)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: (a.max(1), jn.argmax(a, 1)),
        lambda a: a.sum(1) + a.max(1) - a.min(1),
        lambda a: jn.sum(a * a, 0) / jn.sum(jn.abs(a), 0),
        lambda a: (jn.logsumexp(a, 1), a.sum(1)),
    ],
    ids=["max_argmax", "three_reductions", "two_sums", "lse_and_sum"],
)
def test_several_reductions_of_one_input(fn):
    check(fn, X3[0], **TRANSCENDENTAL)


# ---- row-wise ----


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_rowwise_axes(op, axis):
    check(lambda a: getattr(jn, op)(a * 4, axis), X3, **TRANSCENDENTAL)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_rowwise_special_values(op):
    x = np.array(
        [[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [1e4, -1e4, 1e4]],
        dtype=np.float32,
    )
    check(lambda a: getattr(jn, op)(a), x)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: jn.softmax(a * 2 + 1) * 3 - 1,
        lambda a: jn.log_softmax(jn.exp(a), 0) + a,
        lambda a: jn.softmax(a.T),
        lambda a: jn.softmax(INTS + a[:, ::-1]),
        lambda a: jn.log_softmax(a.astype("float64")),
    ],
    ids=["epilogue", "exp_producer", "transposed", "int_plus_reversed", "f64"],
)
def test_rowwise_fusion(fn):
    check(fn, X, **TRANSCENDENTAL)


# ---- views: pad, concatenate, slicing, reshape ----


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: a[1:, ::2],
        lambda a: a[::-1],
        lambda a: a[::-2, 4:0:-3] * 2,
        lambda a: a[:, -1] + a[-1, None, :3].T,
        lambda a: a[None, 1, ::-1, None],
        lambda a: a[2:1] + 1,
        lambda a: jn.pad(a, 1),
        lambda a: jn.pad(a, ((0, 2), (3, 0)), value=-7.5),
        lambda a: jn.pad(a[::-1, ::2], ((1, 1), (2, 0))) + 1,
        lambda a: jn.pad(a, 2)[::-3, 1::2],
        lambda a: jn.concatenate([a, a * 2, -a], 0),
        lambda a: jn.concatenate([a[:, :2], a[:, ::-1]], 1),
        lambda a: jn.concatenate([a[:, :0], a.T.T], 1),
        lambda a: jn.concatenate([a, jn.pad(a, ((0, 0), (1, 1)))[:, ::3]], -1)[::-1],
        lambda a: a.T.reshape(5, 3),
        lambda a: a[::-1].T.reshape(15),
        lambda a: a.reshape(5, 3).T.reshape(15)[::2],
        lambda a: jn.broadcast_to(a[:, :1], (3, 5)).reshape(5, 3),
        lambda a: jn.transpose(a.reshape(3, 5, 1) + a.T.reshape(1, 5, 3), (1, 2, 0)).reshape(-1),
        lambda a: jn.flatten(jn.expand_dims(a, 0).T),
    ],
    ids=[
        "slice",
        "reverse",
        "negative_steps",
        "index_and_transpose",
        "index_none",
        "empty_slice",
        "pad",
        "pad_value",
        "pad_of_reversed",
        "slice_of_pad",
        "concat0",
        "concat1",
        "concat_empty_part",
        "concat_of_pad_reversed",
        "reshape_transposed",
        "reshape_reversed_transposed",
        "reshape_chain",
        "reshape_broadcast",
        "permute_3d",
        "expand_dims_T",
    ],
)
def test_views(fn):
    check(fn, X)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: a.T.reshape(15)[1:],
        lambda a: a.T.reshape(15)[::-1] * 2,
        lambda a: jn.pad(a.T.reshape(15), 2),
        lambda a: jn.concatenate([a.reshape(15), a.T.reshape(15)]).reshape(6, 5).T.reshape(30)[2::3],
    ],
    ids=["slice", "reverse", "pad", "concat"],
)
def test_views_with_offset_after_a_transposed_reshape(fn):
    check(fn, X)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.float64])
def test_views_other_dtypes(dtype):
    x = randint(3, 5, lo=0, hi=2).astype(dtype)
    check(lambda a: jn.concatenate([jn.pad(a, 1), jn.pad(a, 1)[::-1]], 1).T, x)


# ---- fusion: elementwise chains, reductions with producers and epilogues ----

EPS = 1e-5


def _var(a, axis):
    return ((a - a.mean(axis, keepdims=True)) ** 2).mean(axis)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: a.sum(1) * 2 + 1,
        lambda a: jn.sqrt(_var(a, 0) + EPS),
        lambda a: (a - a.mean(1, keepdims=True)) * jn.rsqrt(_var(a, 1)[:, None] + EPS),
        lambda a: jn.sum(jn.exp(a) * jn.sin(a) + a**2, (0, 1)),
        lambda a: jn.max(jn.abs(a - 0.5), 1, keepdims=True) / 2,
        lambda a: jn.argmax(a * a - a, 0),
        lambda a: (jn.exp(a).sum(1), jn.exp(a).max(0)),
        lambda a: a / a.sum(1, keepdims=True),
        lambda a: jn.exp(a - jn.logsumexp(a, 1, keepdims=True)),
        lambda a: jn.where(a > 0, a.sum(0), a.min(0)),
        lambda a: jn.tanh(jn.sigmoid(jn.exp(a)) * 3 - jn.log1p(a * a)),
        lambda a: jn.relu(a @ a.T + 1).sum(0),
        lambda a: jn.mean(jn.relu(a) ** 3, -1),
    ],
    ids=[
        "sum_epilogue",
        "sqrt_var_eps",
        "normalise",
        "chain_into_sum",
        "max_keepdims_epilogue",
        "argmax_of_chain",
        "shared_exp",
        "divide_by_row_sum",
        "exp_minus_lse",
        "reductions_broadcast",
        "long_chain",
        "matmul_epilogue_sum",
        "mean_of_cube",
    ],
)
def test_fused(fn):
    check(fn, X3[:, :, 0] * 2, rtol=1e-4, atol=1e-5)


def test_matmul_conv_pool_with_epilogues():
    x, w = randn(2, 3, 6, 6), randn(4, 3, 3, 3)
    check(lambda x, w: jn.relu(jn.conv2d(x, w, padding=1) + 0.1), x, w, rtol=1e-4, atol=1e-5)
    check(lambda x: jn.max_pool2d(jn.exp(x), 2) - jn.avg_pool2d(x, 3, 1, 1)[:, :, ::2, ::2], x, rtol=1e-4)
    check(lambda a, b: jn.softmax(jn.matmul(a, b) * 0.5), randn(2, 3, 4), randn(4, 5), rtol=1e-4)
    check(
        jn.grad(lambda x: jn.sum(jn.max_pool2d(x, 2) * x[:, :, ::2, ::2]) + jn.sum(jn.avg_pool2d(x, 3))), x, rtol=1e-4
    )


# ---- kernels large enough to run in parallel ----

BIG = randn(256, 300)
PARALLEL_LOOP = re.compile(r"^    nt = num_threads\(\)$", re.M)  # a chunked kernel on every thread
assert BIG.size >= 2 * PARALLEL_MIN_WORK


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: jn.exp(a) * 2 + a,
        lambda a: a.T * 2,
        lambda a: (jn.sum(a * a), jn.max(a[::-1]), jn.min(jn.abs(a), (0, 1))),
        lambda a: a.sum(1),
        lambda a: a.max(0),
        lambda a: (a.reshape(-1, 4).sum(0), a.reshape(-1, 4).max(0)),
        lambda a: jn.argmax(a),
        lambda a: jn.logsumexp(a),
        lambda a: jn.softmax(a),
        lambda a: jn.log_softmax(a, 0),
    ],
    ids=[
        "elementwise",
        "transpose",
        "whole_fused",
        "rows",
        "cols",
        "few_columns",
        "argmax",
        "logsumexp",
        "softmax",
        "log_softmax_axis0",
    ],
)
def test_parallel(fn):
    f = jn.compile(fn, backend="cpu")
    assert_same(f(BIG), jn.compile(fn, backend="interpret")(BIG), rtol=1e-4, atol=1e-4)
    assert any(PARALLEL_LOOP.search(src) for src in f.lower(BIG).sources)


def _whole(a):
    return a.sum(), a.max(), a.min(), jn.argmax(a)


WHOLE = jn.compile(_whole, backend="cpu")


def test_parallel_whole_reductions():
    assert_same(WHOLE(BIG), jn.compile(_whole, backend="interpret")(BIG), rtol=1e-4, atol=1e-4)
    (split,) = [src for src in WHOLE.lower(BIG).sources if "part_acc" in src]
    assert PARALLEL_LOOP.search(split) and "# max sum min" in split, "whole-array sum, max and min share one split loop"


@pytest.mark.parametrize("where", [0, 9000, 40000, BIG.size - 1])
def test_parallel_whole_reductions_with_nan(where):
    """Whole-array max/min split across threads still let NaN win, wherever it is."""
    x = BIG.copy().reshape(-1)
    x[(where + 12345) % x.size] = np.inf
    x[(where + 23456) % x.size] = -np.inf
    x[where] = np.nan
    total, hi, lo, arg = (np.asarray(v) for v in WHOLE(x.reshape(BIG.shape)))
    assert np.isnan(total) and np.isnan(hi) and np.isnan(lo)
    assert arg == where


def test_parallel_whole_reductions_with_infinities():
    x = BIG.copy()
    x[100, 7] = x[200, 9] = np.inf
    x[3, 250] = -np.inf
    total, hi, lo, arg = (np.asarray(v) for v in WHOLE(x))
    assert np.isnan(total) and hi == np.inf and lo == -np.inf and arg == 100 * BIG.shape[1] + 7


def test_parallel_int_reductions():
    x = randint(300, 256, dtype=np.int32, lo=-1000, hi=1000)
    check(lambda a: (a.sum(), a.max(), a.sum(0)), x)


def test_every_elementwise_op_is_covered():
    """The op lists above keep up with the op table's elementwise ops."""
    from jitnet.ir.ops import OPS, Kind

    covered = set(FLOAT_UNARY) | set(BINARY) | {"logical_not", "logical_and", "logical_or", "cast", "where"}
    covered |= {"tag"}  # autodiff's identity marker, removed by simplify before codegen
    covered |= {"mix32"}  # dropout's hash rounds: bit-exact against the interpreter in tests/nn/test_dropout.py
    elementwise = {name for name, op in OPS.items() if op.kind == Kind.ELEMENTWISE}
    assert elementwise - covered == set()


def test_reduction_combinations_cover_every_axis_subset():
    subsets = {tuple(sorted(a % 3 for a in ((ax,) if isinstance(ax, int) else ax))) for ax in AXES if ax is not None}
    assert subsets == {c for r in (1, 2, 3) for c in itertools.combinations(range(3), r)}


def test_kernel_source_does_not_depend_on_trace_order():
    """The kernel cache is keyed by source: the same function traced again must give the same source."""

    def fn(a):
        return jn.exp(a) * 2 - a.sum(0)

    first = jn.compile(fn, backend="cpu").lower(X).sources
    jn.compile(lambda a: a + 1, backend="cpu").lower(X)
    assert jn.compile(fn, backend="cpu").lower(X).sources == first


@pytest.mark.parametrize("shape, axis", [((1 << 22,), None), ((3, 300_000), 1), ((5, 9000), 1)])
def test_float32_sums_stay_accurate(shape, axis):
    """float32 sums add blocks of BLOCK_SUM terms in float32 and the blocks in float64: over millions
    of terms the result is within a few float32 ulps of the float64 sum (a plain float32 running
    sum of 0.1s is off by ~1e-3 relative after 2**22 terms)."""
    x = np.full(shape, 0.1, np.float32) + np.random.default_rng(0).random(shape, np.float32) * 1e-3
    f = jn.compile(lambda x: (x.sum(axis), jn.logsumexp(x, axis)), backend="cpu")
    s, lse = f(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(s), x64.sum(axis), rtol=3e-7)
    np.testing.assert_allclose(np.asarray(lse), np.log(np.exp(x64).sum(axis)), rtol=3e-7)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_reduction_over_a_contiguous_trailing_run(parallel):
    """Reduced dims that end the input run in an inner loop of their own (r = ro * run + ri): sums and
    extrema as over the flat reduced index, NaN included, beside plain last-axis reductions."""
    n = 64 if parallel else 3
    x = randn(n, 20, 5, 40)
    x[1, 3, 2, 17] = np.nan

    def f(a):
        return (
            jn.sum(a, axis=(0, 2, 3)),
            jn.max(a * 2, axis=(0, 2, 3)),
            jn.min(a, axis=(2, 3)),
            jn.argmax(a.reshape(n, 4000), 1),
        )

    got = check(f, x, rtol=1e-4, atol=1e-4)
    assert np.isnan(np.asarray(got[0])[3]) and np.isnan(np.asarray(got[1])[3])
    sources = jn.compile(f, backend="cpu").lower(x).sources
    assert any("for ri in range(200):" in s for s in sources)
