"""Generated kernels against the numpy reference interpreter, op by op and case by case, on every
backend (the `backend` fixture: "cpu", and "cuda" under the `cuda` mark).

The cuda cases run under numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda`)
or on a GPU. In the simulator a block has 32 threads, a grid at most 4 blocks, and reductions of at
least 256 elements per output take the split (two-kernel) path (jitnet/backends/cuda/kernels.py:
BLOCK, MAX_BLOCKS, SPLIT_MIN), so tiny shapes still cover grid-stride loops that wrap, partial blocks,
shared-memory trees and the split path. The simulator runs a Python thread per CUDA thread and pays
~1 ms per barrier: shapes stay tiny, and the few cases that need large ones run on the CPU only.
What only one backend has (parallel CPU loops, the CUDA split path's source) is tested in cpu/ and cuda/.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from helpers import COMPARISONS, assert_same, check

import jitnet as jn

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def randint(*shape, dtype=np.int32, lo=-5, hi=6):
    return rng.integers(lo, hi, shape).astype(dtype)


def kernel_kinds(fn, *args, backend: str) -> list[str]:
    return [k.kind for k in jn.compile(fn, backend=backend).lower(*args).schedule.kernels]


def cpu_only(backend: str, why: str) -> None:
    if backend != "cpu":
        pytest.skip(f"cpu only: {why}")


X = randn(3, 5)
INTS = randint(3, 5)
X3 = randn(3, 5, 7)
SMALL3 = randn(2, 3, 4)
# Reductions and softmax over 3-D input: (3, 5, 7) on the CPU, (2, 3, 4) on cuda, where the simulator
# pays ~8 barriers per output and reducer.
R3 = {"cpu": X3, "cuda": SMALL3}
SPECIAL = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, -2.5, 3.0, 1e-3, 20.0, -20.0, 88.0, -100.0, 0.99],
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
    "erf": jn.erf,
    "gelu": jn.gelu,
    "gelu_tanh": lambda x: jn.gelu(x, approximate="tanh"),
    "relu": jn.relu,
    "leaky_relu": lambda x: jn.leaky_relu(x, 0.2),
    "elu": lambda x: jn.elu(x, 1.5),
}
UNARY_VALUES = np.concatenate([X.reshape(-1) * 3, X.reshape(-1) * 0.3, SPECIAL]).reshape(1, 1, -1)


@pytest.mark.parametrize("name", list(FLOAT_UNARY))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_float(name, dtype, backend):
    """Random values of two scales and the special ones (NaN, infinities, signed zeros, large) in one array."""
    check(FLOAT_UNARY[name], UNARY_VALUES.astype(dtype), backend=backend, **TRANSCENDENTAL)


# Outside an op's domain: where Python's `math` raises (ValueError, OverflowError), libdevice and numpy
# give NaN or +-inf; the simulator's kernels must too.
OUT_OF_DOMAIN = {
    "exp": [1000.0],
    "expm1": [1000.0],
    "log": [0.0, -1.0, -np.inf],
    "log1p": [-1.0, -2.5, -np.inf],
    "sqrt": [-1.0, -np.inf],
    "rsqrt": [-1.0, -np.inf],
    "sigmoid": [-1000.0],
    "sin": [np.inf, -np.inf],
    "cos": [np.inf, -np.inf],
    "acos": [2.0, -3.0, np.inf],
}


@pytest.mark.parametrize("name", list(OUT_OF_DOMAIN))
def test_unary_out_of_domain(name, backend):
    """log(0) = -inf, log(-1) = NaN, exp(1000) = inf, sin(inf) = NaN, ... as numpy gives."""
    check(FLOAT_UNARY[name], np.array([0.5, *OUT_OF_DOMAIN[name]], dtype=np.float32), backend=backend, **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["neg", "abs", "sign", "square", "relu", "exp", "sqrt"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_unary_int(name, dtype, backend):
    """Integer inputs: kept integer where the op allows, promoted to float32 otherwise."""
    x = randint(2, 7, dtype=dtype, lo=0 if name == "sqrt" else -5)
    check(FLOAT_UNARY[name], x, backend=backend, **TRANSCENDENTAL)


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
def test_binary_float(name, backend):
    a, b = randn(3, 4), randn(4)
    a[0, :2] = b[:2]  # some equal pairs for the comparisons
    check(BINARY[name], a, b, backend=backend, **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "minimum", "lt", "eq", "ne"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_binary_int(name, dtype, backend):
    a, b = randint(3, 4, dtype=dtype, lo=-9, hi=10), randint(3, 1, dtype=dtype, lo=1)
    check(BINARY[name], a, b, backend=backend)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_power_is_exact(dtype, backend):
    """int ** int stays int and exact, as numpy (float32 gave 11**7 = 19487172); overflow wraps in
    the dtype; a runtime negative exponent gives the truncated reciprocal (a constant one raises,
    tests/test_errors.py)."""
    a = np.array([11, 13, -3, 2, 0, 1, -1, 7, 3], dtype)
    b = np.array([7, 7, 5, 30, 0, 9, 3, 0, 41], dtype)
    got = check(lambda a, b: (a**b, a**3, 2**b), a, b, backend=backend)
    np.testing.assert_array_equal(np.asarray(got[0]), a**b)
    assert np.asarray(got[0])[:2].tolist() == [19487171, 62748517]
    neg = check(
        lambda a, b: a**b,
        np.array([1, -1, -1, 2, -5, 0], dtype),
        np.array([-3, -3, -2, -1, -1, -2], dtype),
        backend=backend,
    )
    assert np.asarray(neg).tolist() == [1, -1, 1, 0, 0, 0]
    check(lambda a, n: a**n, a, -2, backend=backend)  # a runtime Python int exponent: the same rule
    check(lambda a: (a > 0) ** 2, a, backend=backend)  # bools count as int64


def test_int_chain_and_casts(backend):
    a, b = randint(4, 6, lo=-9, hi=10), randint(4, 6, dtype=np.int64, lo=-9, hi=10)
    fn = lambda a, b: (a * b + 3, -a, jn.abs(a), a.astype(np.float32) / 2, (a > 0).astype(np.int32) * b)
    check(fn, a, b, backend=backend)
    check(lambda a: a * 2 + 3, randint(5, dtype=np.int32), backend=backend)  # stays int32
    check(lambda a: a * 2 + 3, randint(5, dtype=np.int64), backend=backend)


SHAPE_PAIRS = [((3, 4), ()), ((3, 4), (4,)), ((3, 4), (3, 1)), ((3, 1), (1, 4)), ((2, 1, 4), (3, 1))]
SHAPE_PAIRS += [((1,), (2, 3, 1, 4)), ((), ()), ((0, 4), (4,)), ((1, 1), (1,))]
LONG_ROW_PAIRS = [((5, 37), ()), ((5, 37), (37,)), ((5, 37), (5, 1)), ((5, 1), (1, 37)), ((2, 1, 4), (3, 1)), ((), ())]
BROADCASTS = [(name, a, b) for name in ("add", "maximum") for a, b in SHAPE_PAIRS]
BROADCASTS += [("chain", a, b) for a, b in LONG_ROW_PAIRS]  # rows longer than a simulator block
BROADCAST_FNS = {
    "add": BINARY["add"],
    "maximum": jn.maximum,
    "chain": lambda a, b: jn.maximum(a * 2 + b, b - 1) / (jn.abs(b) + 1),
}


@pytest.mark.parametrize("name, a_shape, b_shape", BROADCASTS, ids=[f"{n}-{a}-{b}" for n, a, b in BROADCASTS])
def test_broadcasting(name, a_shape, b_shape, backend):
    check(BROADCAST_FNS[name], randn(*a_shape), randn(*b_shape), backend=backend)


def test_fused_broadcast_chain(backend):
    """Scalar, row and column operands in one fused kernel, with a runtime Python scalar."""
    x, row, col = randn(5, 37), randn(37), np.abs(randn(5, 1))

    def fn(x, s, row, col):
        return (x * s + row) / (col + 3) - jn.tanh(x) * jn.sigmoid(row)

    check(fn, x, 2.5, row, col, backend=backend, **TRANSCENDENTAL)
    one_kernel = lambda x, s, row, col: (x * s + row) / (col + 3) - jn.tanh(x)  # sigmoid(row) has a kernel of its own
    assert kernel_kinds(one_kernel, x, 2.5, row, col, backend=backend) == ["elementwise"]


@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_python_scalar_operands(scalar, backend):
    check(lambda a: (a * scalar - scalar) / (1 + scalar), X, backend=backend)
    check(lambda a: scalar * a + scalar, randint(3, 4), backend=backend)


def test_runtime_scalar_argument(backend):
    check(lambda a, s: a * s + s, X, 1.5, backend=backend)
    check(lambda a, n: a + n, randint(3, 4), 7, backend=backend)


def test_runtime_scalars_do_not_retrace(backend):
    f = jn.compile(lambda a, s: a * s + s, backend=backend)
    for s in (1.5, -2.0, 0.0):
        assert_same(f(X, s), X * np.float32(s) + np.float32(s))
    assert f.traces == 1


def test_runtime_int_and_bool_scalars(backend):
    f = jn.compile(lambda x, n, flag: (x * n, jn.where(flag, x, -x), x + n * 2), backend=backend)
    check(f.fn, X, 3, True, backend=backend)
    f(X, 3, True)
    f(X, -4, False)
    assert f.traces == 1


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100, 129, 700])
def test_sizes_not_multiple_of_block(n, backend):
    """On cuda: partial last blocks and grid-stride loops that wrap (700 > 4 blocks * 32 threads in the simulator)."""
    check(lambda x: jn.exp(x) * 0.5 - x, randn(n), backend=backend, **TRANSCENDENTAL)


NAN_PAIRS = np.array(
    [[np.nan, 1.0, np.nan, -np.inf, np.inf, 0.0, 2.0], [1.0, np.nan, np.nan, np.nan, -np.inf, -0.0, np.inf]],
    dtype=np.float32,
)


@pytest.mark.parametrize("op", [jn.maximum, jn.minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(op, backend):
    got = check(op, NAN_PAIRS[0], NAN_PAIRS[1], backend=backend)
    want = (np.maximum if op is jn.maximum else np.minimum)(*NAN_PAIRS)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_clip_propagates_nan(backend):
    got = check(lambda a: jn.clip(a, -1.0, 1.0), SPECIAL, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), np.clip(SPECIAL, -1, 1))


@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("to", ["bool", "int32", "int64", "float32", "float64"])
def test_casts(dtype, to, backend):
    x = np.array([-2.7, -1.0, -0.0, 0.0, 0.5, 3.9, 100.25, 1e6], dtype=np.float64).astype(dtype)
    check(lambda a: a.astype(to), x, backend=backend)


def test_bool_ops(backend):
    a, b = X > 0, randn(3, 5) > 0.5
    check(lambda a, b: (a & ~b) | (a == b), a, b, backend=backend)
    check(lambda a, b: (a != b, a < b, a >= b), a, b, backend=backend)


def test_bool_masks(backend):
    m, x = X > 0, randn(3, 5)
    check(lambda m, x: (jn.where(m, x, 0.0), m & (x > 0), ~m, m | (x < -1), m != (x > 0)), m, x, backend=backend)
    fn = lambda m, x: (m.astype(np.float32) * x, m.sum(1), m.astype(np.float32).mean(), jn.argmax(m, 1))
    check(fn, m, x, backend=backend)


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
def test_where(cond, a, b, backend):
    check(jn.where, cond, a, b, backend=backend)


def test_where_and_clip_special_values(backend):
    x = np.concatenate([SPECIAL, randn(7)])
    check(lambda x: (jn.where(x > 0, x, -x), jn.clip(x, -1.0, 1.0), jn.where(x > 0, 1, 0)), x, backend=backend)


def test_one_hot(backend):
    check(lambda y: jn.one_hot(y, 5), np.array([0, 4, 2, -1, 5, 2], dtype=np.int64), backend=backend)
    check(lambda y: jn.one_hot(y, 3), np.array([[0, 1], [2, 2]], dtype=np.int32), backend=backend)
    check(lambda y: jn.one_hot(y, 5) * 2, np.array([0, 4, 2, -1, 5], np.int64), backend=backend)


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
def test_constructors(fn, backend):
    check(fn, np.float32(1.5), backend=backend)
    check(fn, np.int64(-2), backend=backend)


def test_constructors_broadcast_in_kernel(backend):
    check(lambda x: x + jn.arange(5, dtype="float32"), X, backend=backend)
    check(lambda x: x - jn.arange(3)[:, None], X, backend=backend)
    check(lambda x: x + jn.arange(5) + jn.zeros((3, 1)) + jn.full((5,), 2.0) * jn.ones_like(x), X, backend=backend)


# ---- non-contiguous inputs, size-0 and size-1 dims, 0-d arrays ----

BASE = randn(6, 8)
NONCONTIGUOUS = pytest.mark.parametrize(
    "x",
    [BASE.T, BASE[::-1], BASE[::2, ::-3], BASE[:, 1:7:2].T, np.broadcast_to(BASE[:1], (4, 8)), np.asfortranarray(BASE)],
    ids=["transposed", "reversed", "strided", "sliced_transposed", "broadcast_view", "fortran"],
)


@NONCONTIGUOUS
def test_noncontiguous_inputs(x, backend):
    check(lambda a: jn.exp(a) * 2 - a, x, backend=backend)


@NONCONTIGUOUS
def test_reductions_of_noncontiguous_inputs(x, backend):
    cpu_only(backend, "inputs are copied contiguous before any kernel runs: the elementwise case checks the copy")
    check(lambda a: a.sum(0) + a.max(0), x, backend=backend)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 0, 3), (1,), (4, 1), (1, 1, 5)])
def test_degenerate_shapes(shape, backend):
    x = randn(*shape)
    check(lambda a: jn.tanh(a) + 1, x, backend=backend)
    check(lambda a: (a.sum(-1), a.sum(0, keepdims=True), a.mean(0)), x, backend=backend)


def test_size_zero(backend):
    no_rows, empty = np.zeros((0, 5), np.float32), np.zeros((3, 0), np.float32)
    check(lambda x, b: (x * 2 + b, x.sum(0), x.sum(1), x.mean(1)), no_rows, randn(5), backend=backend)
    check(lambda a: (a.sum(1), a.mean(1), a.sum()), empty, backend=backend)
    check(lambda a: (a.max(0), a.min(0), jn.argmax(a, 0)), empty, backend=backend)
    check(lambda x: (jn.softmax(x, 1), jn.log_softmax(x, 1)), np.zeros((0, 4), np.float32), backend=backend)


@pytest.mark.parametrize("shape", [(1,), (4, 1), (2, 1, 3)])
def test_extremes_over_size_one_dims(shape, backend):
    x = randn(*shape)
    check(lambda a: (a.max(0), a.min(-1), jn.argmax(a, 0), jn.logsumexp(a, -1)), x, backend=backend)
    check(lambda a: (jn.softmax(a, 0), jn.log_softmax(a, -1)), x, backend=backend)


def test_size_one(backend):
    x = randn(1, 1)
    fn = lambda x: (x + 1, x.sum(), x.max(1), jn.argmax(x, 0), jn.softmax(x), jn.logsumexp(x, 1))
    check(fn, x, backend=backend)
    check(lambda x: (x.sum(1), x.max(0, keepdims=True), jn.softmax(x, 1)), randn(4, 1), backend=backend)


def test_zero_d(backend):
    s = np.float32(-1.25)
    check(lambda a: (jn.exp(a), jn.log(-a), jn.relu(a), jn.tanh(a)), s, backend=backend)
    check(lambda a: jn.sigmoid(a) * jn.abs(a), s, backend=backend)
    check(lambda a, b: jn.where(a > b, a, b), s, np.float32(2), backend=backend)
    check(lambda a: a.sum(), s, backend=backend)
    check(lambda a, b: a + b, s, X, backend=backend)
    check(lambda a: a.reshape(1, 1), s, backend=backend)
    fn = lambda a, b: (a * b, jn.exp(a) + 1, jn.maximum(a, b), a.sum(), jn.argmax(a))
    check(fn, np.float32(2.0), np.float32(-1.0), backend=backend)


@pytest.mark.parametrize("axis", [0, -1, (0,), (-1,)])
def test_zero_d_axis(axis, backend):
    """A 0-d array takes axis 0 and -1, as PyTorch (-1 raised while 0 was accepted)."""
    fn = lambda a: (a.sum(axis), jn.logsumexp(a, axis), jn.max(a, axis, keepdims=True), jn.squeeze(a, axis))
    got = check(fn, np.float32(2.5), backend=backend)
    assert [np.asarray(g).shape for g in got] == [(), (), (), ()]


# ---- reductions ----

AXES = [None, 0, 1, 2, (0, 1), (0, 2), (1, 2), (0, 1, 2)]


# keepdims changes the output's shape, not the kernel (its source differs only in a comment): the
# simulator checks it over three axis sets, the CPU over all.
CUDA_KEEPDIMS_AXES = [None, 1, (0, 2)]


def keepdims_case(axis, keepdims: bool, backend: str) -> None:
    if keepdims and axis not in CUDA_KEEPDIMS_AXES:
        cpu_only(backend, "keepdims=True gives the kernel of keepdims=False; covered on three axis sets")


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduce_axes(op, axis, keepdims, backend):
    keepdims_case(axis, keepdims, backend)
    check(lambda a: getattr(jn, op)(a, axis, keepdims=keepdims), R3[backend], backend=backend)


@pytest.mark.parametrize(
    "axis, keepdims", [(ax, False) for ax in AXES] + [(ax, True) for ax in CUDA_KEEPDIMS_AXES], ids=str
)
@pytest.mark.parametrize("op", ["min", "mean", "logsumexp"])
def test_reduce_axes_more_ops(op, axis, keepdims, backend):
    check(lambda a: getattr(jn, op)(a, axis, keepdims=keepdims), R3[backend], backend=backend, **TRANSCENDENTAL)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -2])
def test_argmax_axes(axis, keepdims, backend):
    keepdims_case(axis, keepdims, backend)
    x = np.round(R3[backend] * 2) / 2  # ties
    check(lambda a: jn.argmax(a, axis, keepdims=keepdims), x, backend=backend)


def test_argmax_ties_go_to_first(backend):
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, 0, 5, 5]], np.float32)
    got = check(lambda x: (jn.argmax(x, 1), jn.argmax(x, 0), jn.argmax(x)), x, backend=backend)
    np.testing.assert_array_equal(np.asarray(got[0]), [1, 0, 2])


def test_negative_axes(backend):
    fn = lambda a: (a.sum(-1), jn.max(a, (-1, 0), keepdims=True), jn.argmax(a, -2), jn.softmax(a, -3))
    check(fn, R3[backend], backend=backend)


@pytest.mark.parametrize("n", [1, 3, 17, 33, 65, 100, 255, 513, 1031])
def test_odd_sizes(n, backend):
    """Reduced lengths below, across and past the multiples of a 32-thread block (the simulator's)."""
    if n > 300:
        cpu_only(backend, "slow in the simulator; 255 already strides a block 8 times")
    x = randn(2, n)

    def fn(a):
        return (a.sum(1), a.max(1), a.min(1), jn.argmax(a, 1), jn.logsumexp(a, 1), a.mean(), jn.softmax(a))

    check(fn, x, backend=backend, **TRANSCENDENTAL)


@pytest.mark.parametrize(
    "cpu_shape, axes",
    [((2048, 40), 0), ((3, 700, 1500), (0, 1)), ((37, 1031, 17), (0, 1)), ((5000, 24), -2)],
    ids=str,
)
def test_reductions_over_leading_axes(cpu_shape, axes, backend):
    """Bias-gradient reductions: the kept axes end the input. On the CPU these shapes take the
    column path (kernels.py `_emit_column_reduce`: chunks of rows x blocks of at most 1024 kept
    columns, 1500 making two blocks; rows not a multiple of the chunk), with a vmath term, a NaN, an
    integer and a bool sum and a sibling output stored at every element."""
    shape = cpu_shape if backend == "cpu" else (3, 4, 19)[-len(cpu_shape) :]
    x, y = randn(*shape), randn(*shape)
    x.reshape(-1)[7] = np.nan
    ints = randint(*shape)

    def fn(a, b, i):
        term = jn.gelu(a) * b
        return jn.sum(term, axes), jn.max(a, axes), jn.min(b, axes), jn.sum(i, axes), jn.sum(a > 0, axes), term * 2

    check(fn, x, y, ints, backend=backend, **TRANSCENDENTAL)
    if backend == "cpu":
        sources = jn.compile(lambda a: (jn.sum(a, axes), jn.max(a, axes)), backend="cpu").lower(x).sources
        assert any("row_acc" in source for source in sources)


def test_gradient_of_tiling_slices(backend):
    """The gradient of slices that tile an array is one concat kernel (ir/passes.py rewrites the
    sum of padded pieces), also padded on both sides where the slices leave the ends untouched."""
    x = randn(3, 12)

    def tiled(a):
        q, k, v = a[:, :4], a[:, 4:8], a[:, 8:]
        return jn.sum(jn.sin(q) * jn.cos(k) * v)

    def inner(a):  # columns [2, 5) and [5, 9): pad(concat) with zeros at both ends
        return jn.sum(jn.exp(a[:, 2:5])) + jn.sum(jn.tanh(a[:, 5:9]))

    check(lambda a: (jn.grad(tiled)(a), jn.grad(inner)(a)), x, backend=backend, **TRANSCENDENTAL)


def test_concat_of_permuted_pieces(backend):
    """Attention's backward writes dq, dk, dv, each head-permuted, into one (rows, 3 * width)
    buffer: on the CPU one loop per piece, with no branch per element."""
    q, k, v = randn(2, 3, 4, 5), randn(2, 3, 4, 5), randn(2, 3, 4, 5)

    def packed(q, k, v):
        return jn.concatenate([t.transpose(0, 2, 1, 3).reshape(8, 15) for t in (q, k, v)], axis=1)

    check(packed, q, k, v, backend=backend)
    if backend == "cpu":
        (source,) = jn.compile(packed, backend="cpu").lower(q, k, v).sources
        body = source.split("def kernel")[1]
        assert body.count("for i in range(120)") == 3 and " if " not in body


def test_inner_loop_is_contiguous_for_head_split_views(backend):
    """A head split (rows, 3 * width) -> 3 x (batch, heads, length, head width) reads runs of
    head-width elements: on the CPU the inner loop covers one run, with no division per element,
    while a contiguous kernel's inner loop still merges the trailing dims into a long run."""
    x, b = randn(16, 192), randn(192)

    def split(x, b):
        z = (x + b).reshape(2, 8, 3, 2, 32)
        return tuple(z[:, :, i].transpose(0, 2, 1, 3) for i in range(3))

    check(split, x, b, backend=backend)
    if backend == "cpu":
        (source,) = jn.compile(split, backend="cpu").lower(x, b).sources
        body = source.split("def kernel")[1]
        assert "for i in range(32)" in body and "(i //" not in body and "(i %" not in body
        (flat,) = jn.compile(lambda x: x * 2 + 1, backend="cpu").lower(x).sources
        assert "for i in range(3072)" in flat
        (rows,) = jn.compile(lambda x, b: x * 2 + b, backend="cpu").lower(x, b).sources
        assert "for i in range(192)" in rows and "% 192" not in rows  # the bias read per row


def test_many_outputs_grid_stride(backend):
    """More outputs than the simulator's 4 blocks: each block loops over several outputs."""
    check(lambda x: (x.sum(1), jn.argmax(x, 1)), randn(9, 5), backend=backend, **TRANSCENDENTAL)


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
NAN_ROWS = np.array(
    [
        [1.0, np.nan, 3.0, 2.0],
        [np.inf, 2.0, -np.inf, 1.0],
        [-np.inf, -np.inf, -np.inf, -np.inf],
        [np.nan, np.inf, 1.0, np.nan],
        [np.inf, np.inf, 0.0, 1.0],
        [-1.0, -2.0, -1.0, -3.0],
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("data", ["extremes", "nan_rows"])
@pytest.mark.parametrize("axis", [0, 1, None])
@pytest.mark.parametrize("op", ["max", "min", "argmax", "sum", "mean"])
def test_reduce_special_values(op, axis, data, backend):
    """NaN wins max/min as in numpy; argmax picks the first maximum, or the first NaN."""
    x = EXTREMES if data == "extremes" else NAN_ROWS
    got = check(lambda a: getattr(jn, op)(a, axis), x, backend=backend)
    with np.errstate(invalid="ignore"):
        want = getattr(np, op)(x, axis)
    if op in ("sum", "mean"):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, equal_nan=True)
    else:
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("axis", [1, None])
def test_logsumexp_infinities(axis, backend):
    x = np.array([[np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, 1.0]], dtype=np.float32)
    check(lambda a: jn.logsumexp(a, axis), x if axis else x[:1], backend=backend)


def test_logsumexp_with_minus_inf_entries_and_nan(backend):
    x = np.array([[-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    check(lambda a: jn.logsumexp(a, 1), x, backend=backend)


def test_logsumexp_nan_inf(backend):
    rows = NAN_ROWS[[0, 1, 3, 4, 5]]  # no all -inf row: see test_logsumexp_all_neg_inf_row
    check(lambda x: (jn.logsumexp(x, 1), jn.logsumexp(x, 0), jn.logsumexp(x)), rows, backend=backend)


def test_logsumexp_all_neg_inf_row(backend):
    got = check(lambda x: jn.logsumexp(x, 1), NAN_ROWS[2:3], backend=backend)
    assert np.asarray(got)[0] == -np.inf


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_int(dtype, backend):
    """Rows longer than a simulator block, two of them at the dtype's extremes (their sums wrap)."""
    x = randint(4, 37, dtype=dtype, lo=-9, hi=10)
    x[1] = np.iinfo(dtype).min
    x[2] = np.iinfo(dtype).max

    def fn(a):
        return (a.sum(1), a.sum(), a.max(1), a.min(1), jn.argmax(a, 1), a.mean(1), a[:, :4].sum(0), a[:, :6].min(0))

    check(fn, x, backend=backend)


def test_reduce_bool(backend):
    m = R3[backend] > 0.3
    check(lambda a: (a.sum(), a.sum(1), jn.sum(a, (0, 2), keepdims=True)), m, backend=backend)


def test_argmax_bool(backend):
    check(lambda a: jn.argmax(a > 0, 1), X, backend=backend)


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
def test_several_reductions_of_one_input(fn, backend):
    check(fn, X, backend=backend, **TRANSCENDENTAL)


def test_several_reducers_in_one_kernel(backend):
    """logsumexp (its own max pass), sum and max of the same rows, combined in one kernel."""
    x = randn(3, 37)
    fn = lambda x: jn.logsumexp(x, 1) + x.sum(1) * 0.5 - x.max(1)
    check(fn, x, backend=backend, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, backend=backend) == ["reduce"]


FUSED_EPILOGUES = {
    "sum_scale": lambda x: x.sum(1) * 2 + 1,
    "producer_and_epilogue": lambda x: jn.sqrt((x * x).sum(1)) + 1,
    "mean_keepdims_bcast": lambda x: x.mean(1, keepdims=True) * 3 - 1,
    "max_minus_min": lambda x: x.max(1) - x.min(1),
    "two_reductions": lambda x: x.sum(1) / (jn.abs(x).max(1) + 1),
    "epilogue_reads_input": lambda x, b: x.sum(1) * b + b,
    "argmax_cast": lambda x: jn.argmax(x * 2, 1).astype(np.float32) + 0.5,
}


@pytest.mark.parametrize("name", list(FUSED_EPILOGUES))
def test_reduction_epilogues(name, backend):
    args = (randn(3, 37), randn(3)) if name == "epilogue_reads_input" else (randn(3, 37),)
    check(FUSED_EPILOGUES[name], *args, backend=backend, **TRANSCENDENTAL)


def test_epilogue_is_fused(backend):
    assert kernel_kinds(FUSED_EPILOGUES["sum_scale"], randn(5, 37), backend=backend) == ["reduce"]


def test_reduction_feeding_broadcast(backend):
    """A reduced value broadcast back over its rows (layer-norm style): reduce, then elementwise."""

    def fn(x):
        c = x - x.mean(1, keepdims=True)
        return c / jn.sqrt((c * c).mean(1, keepdims=True) + 1e-5)

    check(fn, randn(3, 37), backend=backend, rtol=1e-4, atol=1e-5)


def test_float64_reductions_and_rowwise(backend):
    x = randn(3, 37, dtype=np.float64)
    fn = lambda x: (x.sum(1), jn.logsumexp(x, 1), x.max(), jn.softmax(x, 1), jn.argmax(x, 1))
    check(fn, x, backend=backend, rtol=1e-12)


# ---- long reductions: on cuda the split path (a first kernel spreads each reduction over blocks, a
# second combines them; cuda/test_cuda_kernels.py checks that these shapes take it) ----

LONG = [1000, 2999]


@pytest.mark.parametrize("n", LONG)
@pytest.mark.parametrize(
    "name, fn",
    [
        ("sum", lambda v: v.sum()),
        ("max", lambda v: v.max()),
        ("min", lambda v: v.min()),
        ("sum_squares", lambda v: (v * v).sum()),
        ("epilogue", lambda v: v.sum() * 2 + 1),
        ("max_minus_min", lambda v: v.max() - v.min()),
        ("mean_keepdims", lambda v: v.mean(keepdims=True)),
        ("reversed_view", lambda v: v[::-1].max() + v[::3].sum()),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_long_reductions(name, fn, n, backend):
    check(fn, randn(n), backend=backend, rtol=1e-5, atol=1e-5)


LONG_2D = randn(40, 50)


def test_long_reductions_2d(backend):
    """axis=None over a matrix (the reduced index unflattens over two dims), and views of it."""
    fn = lambda x: (x.sum(), x.T.max(), x[::-1, ::2].min(), x.mean(keepdims=True))
    check(fn, LONG_2D, backend=backend, rtol=1e-5, atol=1e-5)
    check(lambda x, b: jn.abs(x).sum() * b, LONG_2D, np.float32(0.5), backend=backend, rtol=1e-5)


def test_long_reductions_nan_inf(backend):
    v = randn(1500)
    v[700] = np.nan
    got = check(lambda v: (v.max(), v.min(), v.sum()), v, backend=backend)
    assert all(np.isnan(np.asarray(g)) for g in got)
    w = randn(1500)
    w[3] = np.inf
    w[1400] = -np.inf
    check(lambda w: (w.max(), w.min(), w[:1000].sum(), w[5:].max()), w, backend=backend)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_long_reductions_int_and_bool(dtype, backend):
    if dtype == np.bool_:
        check(lambda v: (v.sum(), v.astype(np.float32).mean(), jn.argmax(v)), randn(1500) > 0, backend=backend)
    else:
        v = randint(1500, dtype=dtype, lo=-1000, hi=1000)
        check(lambda v: (v.sum(), v.max(), v.min(), (v * v).sum()), v, backend=backend)


def test_long_argmax_and_logsumexp(backend):
    """argmax and logsumexp of long vectors (on cuda: not split, one block per output)."""
    v = randn(1000)
    v[[10, 990]] = 9.0  # a tie: the first wins
    check(lambda v: (jn.argmax(v), jn.logsumexp(v), jn.logsumexp(v * 10)), v, backend=backend, rtol=2e-5)


# ---- row-wise: softmax and log_softmax ----


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_rowwise_axes(op, axis, backend):
    """Over every axis, with a producer and an epilogue fused into the row-wise kernel."""
    check(lambda a: getattr(jn, op)(a * 4, axis) * 2 + 1, R3[backend], backend=backend, **TRANSCENDENTAL)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_rowwise_special_values(op, backend):
    x = np.array(
        [[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [1e4, -1e4, 1e4]],
        dtype=np.float32,
    )
    check(lambda a: getattr(jn, op)(a), x, backend=backend)


def test_softmax_nan_inf(backend):
    check(lambda x: (jn.softmax(x, 1), jn.log_softmax(x, 1), jn.softmax(x, 0)), NAN_ROWS, backend=backend)


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
def test_rowwise_fusion(fn, backend):
    check(fn, X, backend=backend, **TRANSCENDENTAL)


def test_softmax_fused_producer_and_epilogue(backend):
    x, b = randn(3, 45), randn(45)

    def fn(x, b):
        return jn.softmax(x * 3 + b, axis=1) * (1 + x), jn.log_softmax(x.T - 1, axis=0)

    check(fn, x, b, backend=backend, **TRANSCENDENTAL)
    assert "rowwise" in kernel_kinds(lambda x, b: jn.softmax(x * 3 + b, axis=1) * 2, x, b, backend=backend)


@pytest.mark.parametrize("shape", [(2, 70), (2, 33), (1, 1), (9, 3)])
def test_softmax_row_lengths(shape, backend):
    check(lambda x: (jn.softmax(x, -1), jn.log_softmax(x, -1)), randn(*shape) * 5, backend=backend, **TRANSCENDENTAL)


def test_softmax_int_input(backend):
    check(lambda a: jn.softmax(a, 1), randint(3, 6, lo=-9, hi=10), backend=backend)


# ---- views: index arithmetic in the consumer kernel ----


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
def test_views(fn, backend):
    check(fn, X, backend=backend)


VIEWS_3D = {
    "transpose": lambda x: x.T * 1.5,
    "transpose3d": lambda x: jn.transpose(x, (2, 0, 1)) + 1,
    "reshape_of_transpose": lambda x: jn.transpose(x, (1, 0, 2)).reshape(5, 21) * 2,
    "step_slices": lambda x: x[::2, 1::2, ::3] - 1,
    "negative_steps": lambda x: x[::-1, ::-2, 5:0:-2] * x[:, 4::-2, 1:6:2],
    "index_and_slice": lambda x: x[1, ::-1, 2] + x[-1, 1:, -1:],
    "pad": lambda x: jn.pad(x, ((1, 2), (0, 0), (3, 1))) * 2,
    "pad_value": lambda x: jn.pad(x[0], ((0, 1), (2, 0)), value=-1.0) + 1,
    "concatenate": lambda x: jn.concatenate([x, x[:, :2] * 2, -x[:, ::-1]], axis=1),
    "concatenate_last": lambda x: jn.concatenate([x[..., :3], jn.exp(x)], axis=-1),
    "broadcast_to": lambda x: jn.broadcast_to(x[:, :1, :], (3, 4, 7)) + x[:, 1:],
    "expand_squeeze": lambda x: jn.squeeze(jn.expand_dims(x[0], 0), 0) + x[1],
    "flatten": lambda x: jn.flatten(x.T) * 3,
}


@pytest.mark.parametrize("name", list(VIEWS_3D))
def test_views_3d(name, backend):
    check(VIEWS_3D[name], X3, backend=backend, **TRANSCENDENTAL)


def test_views_fuse_into_one_kernel(backend):
    assert kernel_kinds(VIEWS_3D["negative_steps"], X3, backend=backend) == ["elementwise"]


def test_reductions_of_views(backend):
    fn = lambda x: (x.T.sum(0), x[::-1, ::2].max(1), jn.transpose(x, (1, 2, 0)).reshape(12, 2).sum(1))
    check(fn, SMALL3, backend=backend, **TRANSCENDENTAL)


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
def test_views_with_offset_after_a_transposed_reshape(fn, backend):
    check(fn, X, backend=backend)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.float64])
def test_views_other_dtypes(dtype, backend):
    x = randint(3, 5, lo=0, hi=2).astype(dtype)
    check(lambda a: jn.concatenate([jn.pad(a, 1), jn.pad(a, 1)[::-1]], 1).T, x, backend=backend)


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
def test_fused(fn, backend):
    check(fn, X3[:, :, 0] * 2, backend=backend, rtol=1e-4, atol=1e-5)


# ---- sibling outputs: elementwise kernels sharing a reduction's or another kernel's loop ----


@pytest.mark.parametrize("shape", [(3, 37), (2 * 300,)], ids=["rows", "long"])
def test_reduction_with_sibling_outputs(shape, backend):
    x = randn(*shape)
    fn = jn.value_and_grad(lambda x: jn.sum(jn.tanh(x) * x))
    check(fn, x, backend=backend, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, backend=backend) == ["reduce"]
    check(lambda x: (x.sum(-1), jn.exp(x) - 1, x * 2), x, backend=backend, **TRANSCENDENTAL)


def test_elementwise_siblings(backend):
    x, r = randn(5, 7), randn(7)
    fn = lambda x, r: (x * r, jn.exp(x) - r, x + 1)
    check(fn, x, r, backend=backend, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, r, backend=backend) == ["elementwise"]


@pytest.mark.parametrize("shape", [(3, 37), (1, 600)], ids=["rows", "long"])
def test_reductions_sharing_a_loop(shape, backend):
    x, y = randn(*shape), randn(*shape)
    fn = lambda x, y: ((x * y).sum(1), y.sum(1, keepdims=True) * 2, jn.exp(y) + x)
    check(fn, x, y, backend=backend, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, y, backend=backend) == ["reduce"]


# ---- backward kernels: value_and_grad chains ----

GRAD_CHAINS = {
    "sigmoid_square": lambda x, w, b: jn.sum(jn.sigmoid(x * w + b) ** 2),
    "tanh_mean": lambda x, w, b: jn.mean(jn.tanh(x * w) * b),
    "relu_max": lambda x, w, b: jn.max(jn.relu(x - b) * w) + jn.sum(jn.maximum(x, w)),
    "logsumexp": lambda x, w, b: jn.logsumexp(x * w, axis=1).mean() + (b * b).sum(),
    "softmax": lambda x, w, b: (jn.softmax(x + w, axis=1) * b).sum(),
    "log_softmax": lambda x, w, b: -(jn.log_softmax(x * w, axis=0) * jn.exp(b)).mean(),
    "views": lambda x, w, b: (jn.pad(x.T, ((1, 0), (0, 2))) ** 2).sum() + (x[::-1, ::2] * w[::2]).sum() + b.sum(),
}


@pytest.mark.parametrize("name", list(GRAD_CHAINS))
def test_value_and_grad(name, backend):
    x, w, b = randn(4, 6), randn(6), randn(4, 1)
    check(jn.value_and_grad(GRAD_CHAINS[name], argnums=(0, 1, 2)), x, w, b, backend=backend, rtol=1e-4, atol=1e-5)


def test_value_and_grad_cross_entropy_through_matmul(backend):
    def loss(x, w, y):
        return -(jn.log_softmax(x @ w, axis=1) * jn.one_hot(y, 3)).sum() / x.shape[0]

    x, w, y = randn(5, 6), randn(6, 3), np.array([0, 2, 1, 2, 0], np.int32)
    check(jn.value_and_grad(loss, argnums=(0, 1)), x, w, y, backend=backend, rtol=1e-4, atol=1e-5)


def test_grad_of_long_reduction(backend):
    """The backward of a long sum of squares (on cuda the split path): a broadcast cotangent, 2 * x."""
    v = randn(1200)
    check(jn.value_and_grad(lambda v: (v * v).sum() + v.max()), v, backend=backend, rtol=1e-4, atol=1e-4)


# ---- extern kernels (matmul, conv, pools) with fused epilogues, and programs of several kernels ----


def test_conv_and_pools(backend):
    x, w, b = randn(2, 3, 6, 6), randn(4, 3, 3, 3), randn(4)
    tol = dict(rtol=1e-4, atol=1e-5)
    check(lambda x, w: jn.relu(jn.conv2d(x, w, padding=1) + 0.1), x, w, backend=backend, **tol)
    check(lambda x, w, b: jn.relu(jn.conv2d(x, w, padding=1) + b[:, None, None]), x, w, b, backend=backend, **tol)
    check(lambda x: (jn.max_pool2d(x, 2), jn.avg_pool2d(x, 3, stride=1, padding=1) * 2), x, backend=backend)
    fn = lambda x: jn.max_pool2d(jn.exp(x), 2) - jn.avg_pool2d(x, 3, 1, 1)[:, :, ::2, ::2]
    check(fn, x, backend=backend, rtol=1e-4)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride",
    [((2, 1, 5, 1), (1, 1, 3, 1), 2), ((2, 1, 5, 1), (1, 1, 3, 1), (2, 1)), ((2, 1, 1, 5), (1, 1, 1, 3), (1, 2))],
    ids=["stride_2", "stride_2_1", "conv1d_stride_1_2"],
)
def test_strided_conv_of_thin_images(backend, x_shape, w_shape, stride):
    """These crashed the CPU process (exit 139): a parallel kernel's entry freed its table of buffer
    addresses before the launch (numba frees an array after its last use, and `address(args, 0)`
    was the last), so another thread's scratch array reused it. Repeated: the crash depended on
    what the allocator handed out."""
    x, w = randn(*x_shape), randn(*w_shape)
    for _ in range(5):
        check(lambda x, w: jn.conv2d(x, w, stride=stride), x, w, backend=backend, rtol=1e-5, atol=1e-6)


def test_conv_and_pool_gradients(backend):
    x, w = randn(2, 3, 6, 6), randn(4, 3, 3, 3)
    conv_loss = lambda x, w: (jn.conv2d(x, w) ** 2).sum() + jn.max_pool2d(x, 2).sum()
    check(jn.grad(conv_loss, argnums=(0, 1)), x, w, backend=backend, rtol=1e-4, atol=1e-4)
    pool_loss = lambda x: jn.sum(jn.max_pool2d(x, 2) * x[:, :, ::2, ::2]) + jn.sum(jn.avg_pool2d(x, 3))
    check(jn.grad(pool_loss), x, backend=backend, rtol=1e-4)


def test_matmul_with_epilogues(backend):
    """matmul with its fused epilogue and transposed operands; the result stays on the device."""
    x, w, b = randn(5, 7), randn(7, 3), randn(3)
    tol = dict(rtol=1e-4, atol=1e-5)
    check(lambda x, w, b: jn.relu(x @ w + b), x, w, b, backend=backend, **tol)
    check(lambda x, w: x.T @ x[:, :3] + w[:7], x, randn(33, 3), backend=backend, **tol)
    check(lambda a, b: jn.softmax(jn.matmul(a, b) * 0.5), randn(2, 3, 4), randn(4, 5), backend=backend, rtol=1e-4)


def test_batched_matmul_and_views(backend):
    a, b = randn(2, 3, 4), randn(2, 4, 5)
    fn = lambda a, b: (a @ b).sum(2) + (jn.transpose(a, (0, 2, 1)) @ a[:, :, :1]).sum((1, 2))[:, None]
    check(fn, a, b, backend=backend, rtol=1e-4, atol=1e-5)


EXTERN_FUSIONS = {
    "bias_relu": (lambda x, w, b: jn.relu(x @ w + b), ((5, 7), (7, 3), (3,))),
    "scale_residual": (lambda x, w, r: (x @ w) * 2 + r, ((5, 7), (7, 3), (5, 3))),
    "a_transposed": (lambda x, r: x.T @ r, ((5, 7), (5, 3))),
    "b_transposed": (lambda r, w: r @ w.T, ((5, 3), (7, 3))),
    "both_transposed": (lambda x, w: jn.tanh(w.T @ x.T), ((5, 7), (7, 3))),
    "operand_in_epilogue": (lambda x: x @ x.T + x[:, :5], ((5, 7),)),
    "batched_transposed": (lambda a, b: jn.transpose(a, (0, 2, 1)) @ b + 1, ((2, 3, 4), (1, 3, 5))),
    "conv_bias_relu": (
        lambda x, w, b: jn.relu(jn.conv2d(x, w, padding=1) + b.reshape(3, 1, 1)),
        ((2, 2, 5, 5), (3, 2, 3, 3), (3,)),
    ),
}


@pytest.mark.parametrize("name", list(EXTERN_FUSIONS))
def test_extern_epilogues_and_transposed_operands(name, backend):
    fn, shapes = EXTERN_FUSIONS[name]
    args = [randn(*s) for s in shapes]
    check(fn, *args, backend=backend, rtol=1e-4, atol=1e-5)
    assert kernel_kinds(fn, *args, backend=backend) == ["extern"]


def test_matmul_gradients_read_operands_in_place(backend):
    w, x, b = randn(7, 3), randn(5, 7), randn(3)
    fn = jn.grad(lambda w, x, b: jn.sum(jn.relu(x @ w + b) ** 2), argnums=(0, 1, 2))
    check(fn, w, x, b, backend=backend, rtol=1e-4, atol=1e-5)


def test_multi_output_pytree(backend):
    x, y = randn(4, 6), randn(6)

    def fn(x, y):
        h = jn.tanh(x + y)
        return {"h": h, "stats": (h.sum(1), h.max(0)), "soft": [jn.softmax(h, 1)], "x": x, "c": jn.ones((2,)) * 3}

    check(fn, x, y, backend=backend, **TRANSCENDENTAL)


def test_shared_intermediate_and_repeated_calls(backend):
    """A value read by several kernels, run three times (on cuda: on the device pool): no stale data."""
    f = jn.compile(lambda x: (jn.exp(x).sum(1), jn.exp(x).max(0), jn.softmax(jn.exp(x), 1)), backend=backend)
    g = jn.compile(f.fn, backend="interpret")
    kept = []
    for _ in range(3):
        x = randn(2, 5)
        kept.append((f(x), g(x)))
    for got, want in kept:
        assert_same(got, want, **TRANSCENDENTAL)


def test_no_warnings_on_finite_data(backend):
    """Finite data gives no RuntimeWarning (the simulator's numpy scalars warn on overflow, 0/0, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(lambda x: (jn.softmax(x, 1), x.sum(0), jn.exp(x) + 1), X, backend=backend)


# ---- the tables above keep up with the engine ----


def test_every_elementwise_op_is_covered():
    """The op lists above keep up with the op table's elementwise ops."""
    from jitnet.ir.opdefs import OPS, Kind

    covered = set(FLOAT_UNARY) | set(BINARY) | {"logical_not", "logical_and", "logical_or", "cast", "where"}
    covered |= {"tag"}  # autodiff's identity marker, removed by simplify before codegen
    covered |= {"mix32"}  # dropout's hash rounds: bit-exact against the interpreter in tests/nn/test_dropout.py
    elementwise = {name for name, op in OPS.items() if op.kind == Kind.ELEMENTWISE}
    assert elementwise - covered == set()


def test_reduction_combinations_cover_every_axis_subset():
    subsets = {tuple(sorted(a % 3 for a in ((ax,) if isinstance(ax, int) else ax))) for ax in AXES if ax is not None}
    assert subsets == {c for r in (1, 2, 3) for c in itertools.combinations(range(3), r)}
