"""The generated CUDA pooling kernels (jitnet/backends/cuda/pooling.py) forward and backward, against the
op table's numpy references, directly and through the engine, under numba's CUDA simulator or on a
GPU:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/backends/cuda/test_pooling.py
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CUDA_MARKS, assert_same
from simhelpers import run_source

import jitnet as jn
from jitnet.backends.cuda import pooling
from jitnet.ir.opdefs import OPS

pytestmark = CUDA_MARKS

rng = np.random.default_rng(3)

# (input shape, window, stride, padding): windows that do not divide the input, overlapping windows
# (stride < window), padding, unequal sides, a window as large as the padded input
CASES = [
    ((2, 3, 7, 6), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1)),
    ((2, 1, 5, 6), (3, 2), (1, 2), (1, 0)),
    ((1, 2, 6, 5), (2, 3), (1, 1), (0, 1)),
    ((1, 1, 3, 3), (3, 3), (1, 1), (1, 1)),
]


def attrs(window, stride, padding, in_shape):
    return {"kernel": window, "stride": stride, "padding": padding, "in_shape": in_shape}


def run(op, in_shape, window, stride, padding, *inputs, dtype=np.float32):
    ho, wo = pooling.pool2d_out_hw(in_shape, window, stride, padding)
    out_shape = in_shape if op.endswith("_vjp") else (*in_shape[:2], ho, wo)
    return run_source(pooling.pool2d_source(op, in_shape, window, stride, padding, dtype), out_shape, dtype, *inputs)


def reference(op, *inputs, **kw):
    if not op.endswith("_vjp"):
        kw.pop("in_shape")
    return OPS[op].ref(*inputs, **kw)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward(case, dtype):
    in_shape, window, stride, padding = case
    x = rng.standard_normal(in_shape).astype(dtype)
    for op in ("max_pool2d", "avg_pool2d"):
        got = run(op, *case, x, dtype=dtype)
        want = reference(op, x, **attrs(window, stride, padding, in_shape))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=op)


@pytest.mark.parametrize("case", CASES)
def test_backward_with_ties(case):
    """Integer-valued inputs tie within windows: the gradient goes to the first maximum in window
    order (overlapping windows may each pick a different one, or the same element twice)."""
    in_shape, window, stride, padding = case
    x = rng.integers(-2, 2, in_shape).astype(np.float32)
    ho, wo = pooling.pool2d_out_hw(in_shape, window, stride, padding)
    g = rng.standard_normal((*in_shape[:2], ho, wo)).astype(np.float32)
    kw = attrs(window, stride, padding, in_shape)
    np.testing.assert_allclose(
        run("max_pool2d_vjp", *case, x, g), reference("max_pool2d_vjp", x, g, **kw), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        run("avg_pool2d_vjp", *case, g), reference("avg_pool2d_vjp", g, **kw), rtol=1e-6, atol=1e-6
    )


def test_nan_and_infinities():
    """max propagates NaN (the first NaN gets the gradient); an all -inf window sends its gradient to
    the first position in window order, a pad when it comes first (dropped), as the reference."""
    in_shape, window, stride, padding = (1, 1, 4, 5), (3, 3), (2, 2), (1, 1)
    x = rng.standard_normal(in_shape)
    x[0, 0, 1, 2] = x[0, 0, 0, 3] = np.nan
    x[0, 0, 1:, :2] = -np.inf  # window (1, 0) is all pads and -inf, a pad first
    x[0, 0, 3, 4] = np.inf
    g = rng.standard_normal((1, 1, 2, 3))
    kw = attrs(window, stride, padding, in_shape)
    got = run("max_pool2d", *(in_shape, window, stride, padding), x, dtype=np.float64)
    np.testing.assert_array_equal(got, reference("max_pool2d", x, **kw))
    got = run("max_pool2d_vjp", in_shape, window, stride, padding, x, g, dtype=np.float64)
    want = reference("max_pool2d_vjp", x, g, **kw)
    assert not want[0, 0, 1:, :2].any()  # the all -inf window's gradient went to a pad
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


def test_source_and_errors():
    src = pooling.pool2d_source("max_pool2d", (1, 1, 8, 8), (2, 2), (2, 2), (0, 0), np.float32)
    assert "def kernel(out, x):" in src and ">= 0" not in src.split("def kernel")[1]
    assert "yy >= 0" in pooling.pool2d_source("avg_pool2d", (1, 1, 8, 8), (3, 3), (2, 2), (1, 1), np.float32)
    assert "def kernel(out, x, g):" in pooling.pool2d_source(
        "max_pool2d_vjp", (1, 1, 4, 4), (2, 2), (2, 2), (0, 0), "f8"
    )
    with pytest.raises(ValueError, match="unknown op"):
        pooling.pool2d_source("min_pool2d", (1, 1, 4, 4), (2, 2), (2, 2), (0, 0), np.float32)
    with pytest.raises(ValueError, match="window"):
        pooling.pool2d_source("max_pool2d", (1, 1, 2, 2), (3, 3), (1, 1), (0, 0), np.float32)
    with pytest.raises(TypeError):
        pooling.pool2d_source("max_pool2d", (1, 1, 4, 4), (2, 2), (2, 2), (0, 0), np.int64)


# ---- through the engine ----


@pytest.mark.parametrize("op", [jn.max_pool2d, jn.avg_pool2d])
def test_engine_forward_and_gradient(op):
    x = rng.integers(-3, 3, (2, 3, 7, 6)).astype(np.float32)  # ties
    for args in [(2,), (3, 2, 1), ((3, 2), (1, 2), (1, 0))]:

        def loss(x, args=args):
            return (op(x, *args) * jn.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)).sum()

        f = jn.compile(jn.value_and_grad(loss), backend="cuda")
        assert_same(f(x), jn.compile(jn.value_and_grad(loss), backend="interpret")(x), 1e-5, 1e-5)
        src = f.inspect(x)
        assert "through the host" not in src and f"jitnet cuda kernel: {op.__name__}_vjp" in src
