"""Generated CUDA kernels against the numpy reference interpreter.

Runs under numba's CUDA simulator (no GPU needed) or on a real GPU; skipped when neither is there:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda

In the simulator a block has 32 threads and a grid at most 4 blocks, and reductions of at least 256
elements per output take the split (two-kernel) path (jitnet/codegen/cuda/kernels.py: BLOCK,
MAX_BLOCKS, SPLIT_MIN), so the tiny shapes here still cover grid-stride loops that wrap, partial
blocks, shared-memory trees and the split path. The simulator is slow: keep shapes tiny.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_same
from simhelpers import fast_simulator_barriers

import jitnet as jn
from jitnet.runtime.device import cuda_available

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1"),
    # the simulator evaluates kernels with numpy scalars, which warn where a GPU silently gives inf/NaN
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

rng = np.random.default_rng(0)


_sim = pytest.fixture(autouse=True, scope="module")(fast_simulator_barriers)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def randint(*shape, dtype=np.int32, lo=-9, hi=10):
    return rng.integers(lo, hi, shape).astype(dtype)


def split_min() -> int:
    """The reduction length from which the kernels this process generates take the split path."""
    from jitnet.codegen.cuda import kernels

    return kernels.SPLIT_MIN


def on_cuda(tree) -> None:
    for leaf in jn.ir.pytree.flatten(tree)[0]:
        assert isinstance(leaf, jn.Array), type(leaf)
        assert leaf.device.kind == "cuda", leaf.device


def check(fn, *args, rtol: float = 1e-5, atol: float = 1e-6, **compile_kwargs):
    """fn compiled for CUDA and interpreted agree; the CUDA results are Arrays on the GPU."""
    got = jn.compile(fn, backend="cuda", **compile_kwargs)(*args)
    want = jn.compile(fn, backend="interpret", **compile_kwargs)(*args)
    on_cuda(got)
    assert_same(got, want, rtol, atol)
    return got


def kernel_kinds(fn, *args) -> list[str]:
    return [k.kind for k in jn.compile(fn, backend="cuda").lower(*args).schedule.kernels]


TRANSCENDENTAL = dict(rtol=2e-5, atol=1e-6)
X = randn(3, 5)
X3 = randn(3, 5, 7)  # elementwise and views
R3 = randn(2, 3, 4)  # reductions and softmax: the simulator pays ~1 ms per barrier, ~8 barriers per output
SPECIAL = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, -2.5, 3.0, 1e-3, 20.0, -20.0, 88.0, -100.0, 0.99],
    dtype=np.float32,
)

# ---- elementwise ----

UNARY = {
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

# Inputs where a GPU's libdevice returns NaN or +-inf but Python's `math` (which the simulator runs)
# raises ValueError / OverflowError instead.
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


IN_DOMAIN = {  # where Python's math (the simulator's) agrees with libdevice; NaN inputs always are
    "exp": lambda v: v < 700,
    "expm1": lambda v: v < 700,
    "log": lambda v: v > 0,
    "log1p": lambda v: v > -1,
    "sqrt": lambda v: v >= 0,
    "rsqrt": lambda v: v >= 0,
    "sigmoid": lambda v: v > -700,
    "sin": np.isfinite,
    "cos": np.isfinite,
    "acos": lambda v: -1 <= v <= 1,
}


def in_domain(name: str) -> np.ndarray:
    """Random values of two scales and the special ones, where the op is defined."""
    ok = IN_DOMAIN.get(name, lambda v: True)
    values = np.concatenate([X.reshape(-1) * 3, X.reshape(-1) * 0.3, SPECIAL])
    return np.array([v for v in values if np.isnan(v) or ok(v)], dtype=np.float32)


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_float32(name):
    """Random values and the in-domain special ones (NaN, infinities, signed zeros, large)."""
    check(UNARY[name], in_domain(name), **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "sqrt", "sin", "elu"])
def test_unary_float64(name):
    check(UNARY[name], in_domain(name).astype(np.float64), **TRANSCENDENTAL)


@pytest.mark.parametrize("name", list(OUT_OF_DOMAIN))
def test_unary_out_of_domain(name):
    """log(0) = -inf, log(-1) = NaN, exp(1000) = inf, sin(inf) = NaN, ... as numpy and a GPU give."""
    check(UNARY[name], np.array([0.5, *OUT_OF_DOMAIN[name]], dtype=np.float32), **TRANSCENDENTAL)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: jn.abs(a) ** b,
    "maximum": jn.maximum,
    "minimum": jn.minimum,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_float(name):
    a, b = randn(3, 4), randn(4)
    a[0, :2] = b[:2]  # equal pairs for the comparisons
    check(BINARY[name], a, b, **TRANSCENDENTAL)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "minimum", "lt", "eq"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_binary_int(name, dtype):
    check(BINARY[name], randint(3, 4, dtype=dtype), randint(3, 1, dtype=dtype, lo=1))


def test_int_chain_and_casts():
    a, b = randint(4, 6), randint(4, 6, dtype=np.int64)
    check(lambda a, b: (a * b + 3, -a, jn.abs(a), a.astype(np.float32) / 2, (a > 0).astype(np.int32) * b), a, b)
    check(lambda a: a * 2 + 3, randint(5, dtype=np.int32))  # stays int32
    check(lambda a: a * 2 + 3, randint(5, dtype=np.int64))


def test_bool_masks():
    m, x = X > 0, randn(3, 5)
    check(lambda m, x: (jn.where(m, x, 0.0), m & (x > 0), ~m, m | (x < -1), m != (x > 0)), m, x)
    check(lambda m, x: (m.astype(np.float32) * x, m.sum(1), m.astype(np.float32).mean(), jn.argmax(m, 1)), m, x)


def test_where_and_clip():
    x = np.concatenate([SPECIAL, randn(7)])
    check(lambda x: (jn.where(x > 0, x, -x), jn.clip(x, -1.0, 1.0), jn.where(x > 0, 1, 0)), x)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((5, 37), ()), ((5, 37), (37,)), ((5, 37), (5, 1)), ((5, 1), (1, 37)), ((2, 1, 4), (3, 1)), ((), ())],
    ids=["scalar", "row", "column", "outer", "3d", "0d"],
)
def test_broadcasting(a_shape, b_shape):
    check(lambda a, b: jn.maximum(a * 2 + b, b - 1) / (jn.abs(b) + 1), randn(*a_shape), randn(*b_shape))


def test_fused_broadcast_chain():
    """Scalar, row and column operands in one fused kernel, with a runtime Python scalar."""
    x, row, col = randn(5, 37), randn(37), np.abs(randn(5, 1))

    def fn(x, s, row, col):
        return (x * s + row) / (col + 3) - jn.tanh(x) * jn.sigmoid(row)

    check(fn, x, 2.5, row, col, **TRANSCENDENTAL)
    assert kernel_kinds(lambda x, s, row, col: (x * s + row) / (col + 3) - jn.tanh(x), x, 2.5, row, col) == [
        "elementwise"
    ]


def test_runtime_scalars_do_not_retrace():
    f = jn.compile(lambda a, s: a * s + s, backend="cuda")
    for s in (1.5, -2.0, 0.0):
        assert_same(f(X, s), X * np.float32(s) + np.float32(s))
    assert f.traces == 1


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100, 129, 700])
def test_sizes_not_multiple_of_block(n):
    """Partial last blocks and grid-stride loops that wrap (700 > 4 blocks * 32 threads in the simulator)."""
    check(lambda x: jn.exp(x) * 0.5 - x, randn(n), **TRANSCENDENTAL)


def test_size_zero():
    check(lambda x, b: (x * 2 + b, x.sum(0), x.sum(1), x.mean(1)), np.zeros((0, 5), np.float32), randn(5))
    check(lambda x: (x.sum(1), x.sum(), x.mean(1)), np.zeros((3, 0), np.float32))
    check(lambda x: (jn.softmax(x, 1), jn.log_softmax(x, 1)), np.zeros((0, 4), np.float32))


# Over a zero-length axis the reference interpreter raises (numpy's max of an empty array; the CPU
# backend gives what numpy's formulas do), so these compare with the expected values directly.


def test_softmax_over_empty_axis():
    got = jn.compile(lambda x: jn.softmax(x, 0) + 1, backend="cuda")(np.zeros((0, 4), np.float32))
    on_cuda(got)
    assert np.asarray(got).shape == (0, 4)


def test_log_softmax_logsumexp_over_empty_axis():
    ls, lse = jn.compile(lambda x: (jn.log_softmax(x, 0), jn.logsumexp(x, 0)), backend="cuda")(
        np.zeros((0, 4), np.float32)
    )
    assert np.asarray(ls).shape == (0, 4)
    np.testing.assert_array_equal(np.asarray(lse), np.full(4, -np.inf, np.float32))


def test_size_one():
    x = randn(1, 1)
    check(lambda x: (x + 1, x.sum(), x.max(1), jn.argmax(x, 0), jn.softmax(x), jn.logsumexp(x, 1)), x)
    check(lambda x: (x.sum(1), x.max(0, keepdims=True), jn.softmax(x, 1)), randn(4, 1))


# ---- views: index arithmetic in the consumer kernel ----

VIEWS = {
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
    "reduce_of_view": lambda x: (x.T.sum(0), x[::-1, ::2].max(1), jn.transpose(x, (1, 2, 0)).reshape(12, 2).sum(1)),
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_views(name):
    check(VIEWS[name], R3 if name == "reduce_of_view" else X3, **TRANSCENDENTAL)


def test_views_fuse_into_one_kernel():
    fn = VIEWS["negative_steps"]
    assert kernel_kinds(fn, X3) == ["elementwise"]


# ---- NaN and infinities ----

NAN_PAIRS = np.array(
    [[np.nan, 1.0, np.nan, -np.inf, np.inf, 0.0, 2.0], [1.0, np.nan, np.nan, np.nan, -np.inf, -0.0, np.inf]],
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


@pytest.mark.parametrize("op", [jn.maximum, jn.minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(op):
    got = check(op, NAN_PAIRS[0], NAN_PAIRS[1])
    want = (np.maximum if op is jn.maximum else np.minimum)(*NAN_PAIRS)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("op", ["max", "min", "argmax", "sum", "mean"])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_reductions_nan_inf(op, axis):
    got = check(lambda x: getattr(jn, op)(x, axis=axis), NAN_ROWS)
    want = getattr(np, op)(NAN_ROWS, axis=axis)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, equal_nan=True)


def test_logsumexp_nan_inf():
    rows = NAN_ROWS[[0, 1, 3, 4, 5]]  # no all -inf row: see test_logsumexp_all_neg_inf_row
    check(lambda x: (jn.logsumexp(x, 1), jn.logsumexp(x, 0), jn.logsumexp(x)), rows)


def test_logsumexp_all_neg_inf_row():
    got = check(lambda x: jn.logsumexp(x, 1), NAN_ROWS[2:3])
    assert np.asarray(got)[0] == -np.inf


def test_softmax_nan_inf():
    check(lambda x: (jn.softmax(x, 1), jn.log_softmax(x, 1), jn.softmax(x, 0)), NAN_ROWS)


# ---- reductions ----

REDUCTIONS = ["sum", "mean", "max", "min", "argmax", "logsumexp"]


AXES = [(None, False), (0, False), (1, False), (2, False), ((0, 2), False), ((1, 2), False)]
AXES += [(None, True), (1, True), ((0, 2), True)]
REDUCTION_CASES = [
    (op, ax, kd) for op in REDUCTIONS for ax, kd in AXES if not (op == "argmax" and isinstance(ax, tuple))
]


@pytest.mark.parametrize("op, axis, keepdims", REDUCTION_CASES, ids=str)
def test_reductions(op, axis, keepdims):
    """Every reduction over each axis, pairs of axes and all axes, with and without keepdims."""
    check(lambda x: getattr(jn, op)(x, axis=axis, keepdims=keepdims), R3, **TRANSCENDENTAL)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reductions_int(dtype):
    a = randint(3, 37, dtype=dtype)
    check(lambda a: (a.sum(1), a.sum(), a.max(1), a.min(1), jn.argmax(a, 1), a.mean(1), a[:, :4].sum(0)), a)


def test_argmax_ties_go_to_first():
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, 0, 5, 5]], np.float32)
    got = check(lambda x: (jn.argmax(x, 1), jn.argmax(x, 0), jn.argmax(x)), x)
    np.testing.assert_array_equal(np.asarray(got[0]), [1, 0, 2])


@pytest.mark.parametrize("n", [33, 65, 100, 255])
def test_reduction_lengths_not_multiple_of_block(n):
    x = randn(2, n)
    check(lambda x: (x.sum(1), x.max(1), x.min(1), jn.argmax(x, 1), jn.logsumexp(x, 1), x.mean()), x, rtol=2e-5)


def test_many_outputs_grid_stride():
    """More outputs than blocks: each block loops over several outputs."""
    x = randn(9, 5)
    check(lambda x: (x.sum(1), jn.argmax(x, 1)), x, **TRANSCENDENTAL)


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
def test_reduction_epilogues(name):
    fn = FUSED_EPILOGUES[name]
    args = (randn(3, 37), randn(3)) if name == "epilogue_reads_input" else (randn(3, 37),)
    check(fn, *args, **TRANSCENDENTAL)


def test_epilogue_is_fused():
    assert kernel_kinds(lambda x: x.sum(1) * 2 + 1, randn(5, 37)) == ["reduce"]


def test_several_reducers_in_one_kernel():
    """logsumexp (its own max pass), sum and max of the same rows, combined in one block kernel."""
    x = randn(3, 37)
    fn = lambda x: jn.logsumexp(x, 1) + x.sum(1) * 0.5 - x.max(1)
    check(fn, x, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x) == ["reduce"]


def test_reduction_feeding_broadcast():
    """A reduced value broadcast back over its rows (layer-norm style): reduce, then elementwise."""
    x = randn(3, 37)

    def fn(x):
        c = x - x.mean(1, keepdims=True)
        return c / jn.sqrt((c * c).mean(1, keepdims=True) + 1e-5)

    check(fn, x, rtol=1e-4, atol=1e-5)


def test_float64_reductions_and_rowwise():
    x = randn(3, 37, dtype=np.float64)
    check(lambda x: (x.sum(1), jn.logsumexp(x, 1), x.max(), jn.softmax(x, 1), jn.argmax(x, 1)), x, rtol=1e-12)


# ---- split path: a long reduction spread over blocks, combined by a second kernel ----

LONG = [1000, 2999]


def _split_source(fn, *args) -> str:
    return jn.compile(fn, backend="cuda").inspect(*args)


def test_split_path_is_taken():
    n = split_min()
    v = randn(max(1000, n))
    src = _split_source(lambda v: v.sum(), v)
    assert "def partial(" in src and "def finish(" in src
    short = randn(max(2, n // 2))
    assert "def partial(" not in _split_source(lambda v: v.sum(), short)


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
def test_split_reductions(name, fn, n):
    v = randn(n)
    check(fn, v, rtol=1e-5, atol=1e-5)


def test_split_reductions_2d():
    """axis=None over a matrix (the reduced index unflattens over two dims), and views of it."""
    x = randn(40, 50)
    assert "def partial(" in _split_source(lambda x: x.sum(), x)
    check(lambda x: (x.sum(), x.T.max(), x[::-1, ::2].min(), x.mean(keepdims=True)), x, rtol=1e-5, atol=1e-5)
    check(lambda x, b: jn.abs(x).sum() * b, x, np.float32(0.5), rtol=1e-5)


def test_split_nan_inf():
    v = randn(1500)
    v[700] = np.nan
    got = check(lambda v: (v.max(), v.min(), v.sum()), v)
    assert all(np.isnan(np.asarray(g)) for g in got)
    w = randn(1500)
    w[3] = np.inf
    w[1400] = -np.inf
    check(lambda w: (w.max(), w.min(), w[:1000].sum(), w[5:].max()), w)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_split_int_and_bool(dtype):
    v = (randn(1500) > 0) if dtype == np.bool_ else randint(1500, dtype=dtype, lo=-1000, hi=1000)
    if dtype == np.bool_:
        check(lambda v: (v.sum(), v.astype(np.float32).mean(), jn.argmax(v)), v)
    else:
        check(lambda v: (v.sum(), v.max(), v.min(), (v * v).sum()), v)


def test_long_non_split_reductions():
    """argmax and logsumexp of long vectors stay on one block per output."""
    v = randn(1000)
    v[[10, 990]] = 9.0  # a tie: the first wins
    check(lambda v: (jn.argmax(v), jn.logsumexp(v), jn.logsumexp(v * 10)), v, rtol=2e-5)


# ---- row-wise: softmax and log_softmax ----


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_axes_with_epilogue(op, axis):
    check(lambda x: getattr(jn, op)(x, axis=axis) * 2 + 1, R3, **TRANSCENDENTAL)


def test_softmax_fused_producer_and_epilogue():
    x, b = randn(3, 45), randn(45)

    def fn(x, b):
        return jn.softmax(x * 3 + b, axis=1) * (1 + x), jn.log_softmax(x.T - 1, axis=0)

    check(fn, x, b, **TRANSCENDENTAL)
    assert "rowwise" in kernel_kinds(lambda x, b: jn.softmax(x * 3 + b, axis=1) * 2, x, b)


@pytest.mark.parametrize("shape", [(2, 70), (2, 33), (1, 1), (9, 3)])
def test_softmax_row_lengths(shape):
    check(lambda x: (jn.softmax(x, -1), jn.log_softmax(x, -1)), randn(*shape) * 5, **TRANSCENDENTAL)


def test_softmax_int_input():
    check(lambda a: jn.softmax(a, 1), randint(3, 6))


# ---- backward kernels: value_and_grad compiled for CUDA ----

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
def test_value_and_grad(name):
    x, w, b = randn(4, 6), randn(6), randn(4, 1)
    check(jn.value_and_grad(GRAD_CHAINS[name], argnums=(0, 1, 2)), x, w, b, rtol=1e-4, atol=1e-5)


def test_value_and_grad_cross_entropy_through_matmul():
    def loss(x, w, y):
        return -(jn.log_softmax(x @ w, axis=1) * jn.one_hot(y, 3)).sum() / x.shape[0]

    x, w, y = randn(5, 6), randn(6, 3), np.array([0, 2, 1, 2, 0], np.int32)
    check(jn.value_and_grad(loss, argnums=(0, 1)), x, w, y, rtol=1e-4, atol=1e-5)


def test_grad_of_long_reduction():
    """The backward of a split-path sum of squares: broadcast of the cotangent, 2 * x."""
    v = randn(1200)
    check(jn.value_and_grad(lambda v: (v * v).sum() + v.max()), v, rtol=1e-4, atol=1e-4)


# ---- extern kernels (matmul, conv, pools) and programs of several kernels ----


@pytest.mark.parametrize("to", [np.bool_, np.int32, np.int64, np.float32, np.float64], ids=lambda t: np.dtype(t).name)
def test_casts(to):
    x = np.array([-2.7, -1.0, -0.0, 0.0, 0.5, 3.9, 100.25, 1e6], dtype=np.float32)
    check(lambda x, i, b: (x.astype(to), i.astype(to), b.astype(to)), x, x.astype(np.int64), x > 0)


def test_runtime_int_and_bool_scalars():
    f = jn.compile(lambda x, n, flag: (x * n, jn.where(flag, x, -x), x + n * 2), backend="cuda")
    check(f.fn, X, 3, True)
    f(X, 3, True)
    f(X, -4, False)
    assert f.traces == 1


def test_constructors_and_one_hot():
    check(lambda x: x + jn.arange(5) + jn.zeros((3, 1)) + jn.full((5,), 2.0) * jn.ones_like(x), X)
    check(lambda y: jn.one_hot(y, 5) * 2, np.array([0, 4, 2, -1, 5], np.int64))


def test_zero_dim():
    a, b = np.float32(2.0), np.float32(-1.0)
    check(lambda a, b: (a * b, jn.exp(a) + 1, jn.maximum(a, b), a.sum(), jn.argmax(a)), a, b)


def test_conv_and_pools():
    x, w, b = randn(2, 3, 6, 6), randn(4, 3, 3, 3), randn(4)
    check(lambda x, w, b: jn.relu(jn.conv2d(x, w, padding=1) + b[:, None, None]), x, w, b, rtol=1e-4, atol=1e-5)
    check(lambda x: (jn.max_pool2d(x, 2), jn.avg_pool2d(x, 3, stride=1, padding=1) * 2), x)
    check(
        jn.grad(lambda x, w: (jn.conv2d(x, w) ** 2).sum() + jn.max_pool2d(x, 2).sum(), argnums=(0, 1)),
        x,
        w,
        rtol=1e-4,
        atol=1e-4,
    )


def test_matmul_with_epilogue():
    """matmul with its fused epilogue and transposed operands; the result stays on the GPU."""
    x, w, b = randn(5, 7), randn(7, 3), randn(3)
    check(lambda x, w, b: jn.relu(x @ w + b), x, w, b, rtol=1e-4, atol=1e-5)
    check(lambda x, w: x.T @ x[:, :3] + w[:7], x, randn(33, 3), rtol=1e-4, atol=1e-5)


def test_batched_matmul_and_views():
    a, b = randn(2, 3, 4), randn(2, 4, 5)
    check(
        lambda a, b: (a @ b).sum(2) + (jn.transpose(a, (0, 2, 1)) @ a[:, :, :1]).sum((1, 2))[:, None],
        a,
        b,
        rtol=1e-4,
        atol=1e-5,
    )


def test_multi_output_pytree():
    x, y = randn(4, 6), randn(6)

    def fn(x, y):
        h = jn.tanh(x + y)
        return {"h": h, "stats": (h.sum(1), h.max(0)), "soft": [jn.softmax(h, 1)], "x": x, "c": jn.ones((2,)) * 3}

    check(fn, x, y, **TRANSCENDENTAL)


def test_shared_intermediate_and_repeated_calls():
    """A value read by several kernels, run three times on the device pool: no stale data."""
    f = jn.compile(lambda x: (jn.exp(x).sum(1), jn.exp(x).max(0), jn.softmax(jn.exp(x), 1)), backend="cuda")
    g = jn.compile(f.fn, backend="interpret")
    kept = []
    for _ in range(3):
        x = randn(2, 5)
        kept.append((f(x), g(x)))
    for got, want in kept:
        assert_same(got, want, **TRANSCENDENTAL)


def test_inspect_shows_cuda_source():
    text = jn.compile(lambda x: x.sum(1) * 2, backend="cuda").inspect(X)
    assert "cuda.jit" in text and "cuda.shared.array" in text


def test_no_warnings_on_finite_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(lambda x: (jn.softmax(x, 1), x.sum(0), jn.exp(x) + 1), X)


# ---- sibling outputs: elementwise kernels sharing a reduction's or another kernel's loop ----


@pytest.mark.parametrize("shape", [(3, 37), (2 * 300,)])  # block path; split path (>= SPLIT_MIN)
def test_reduction_with_sibling_outputs(shape):
    x = randn(*shape)
    fn = jn.value_and_grad(lambda x: jn.sum(jn.tanh(x) * x))
    check(fn, x, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x) == ["reduce"]
    check(lambda x: (x.sum(-1), jn.exp(x) - 1, x * 2), x, **TRANSCENDENTAL)


def test_elementwise_siblings():
    x, r = randn(5, 7), randn(7)
    fn = lambda x, r: (x * r, jn.exp(x) - r, x + 1)
    check(fn, x, r, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, r) == ["elementwise"]


@pytest.mark.parametrize("shape", [(3, 37), (1, 600)])  # block path; split path
def test_reductions_sharing_a_loop(shape):
    x, y = randn(*shape), randn(*shape)
    fn = lambda x, y: ((x * y).sum(1), y.sum(1, keepdims=True) * 2, jn.exp(y) + x)
    check(fn, x, y, **TRANSCENDENTAL)
    assert kernel_kinds(fn, x, y) == ["reduce"]


# ---- extern kernels with fused epilogues and transposed operands ----

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
def test_extern_epilogues_and_transposed_operands(name):
    fn, shapes = EXTERN_FUSIONS[name]
    args = [randn(*s) for s in shapes]
    check(fn, *args, rtol=1e-4, atol=1e-5)
    assert kernel_kinds(fn, *args) == ["extern"]


def test_matmul_gradients_read_operands_in_place():
    w, x, b = randn(7, 3), randn(5, 7), randn(3)
    check(jn.grad(lambda w, x, b: jn.sum(jn.relu(x @ w + b) ** 2), argnums=(0, 1, 2)), w, x, b, rtol=1e-4, atol=1e-5)
