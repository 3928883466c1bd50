"""The generated CUDA conv2d kernel (jitnet/backends/cuda/conv.py: implicit GEMM) against numpy in
float64, directly and through the engine (forward and both gradients, which run through the same
kernel), under numba's CUDA simulator or on a GPU:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/backends/cuda/test_conv.py
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import CUDA_MARKS, assert_same
from simhelpers import BiasRelu, ScaleResidual, run_source

import jitnet as jn
from jitnet.backends.cuda import conv
from jitnet.backends.cuda import matmul as mm
from jitnet.backends.cuda.device import simulator
from jitnet.ir.opdefs import OPS

pytestmark = CUDA_MARKS

rng = np.random.default_rng(2)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def reference(x, w, stride, padding):
    return OPS["conv2d"].ref(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding)


def check(x_shape, w_shape, stride=(1, 1), padding=(0, 0), dtype=np.float32, tile=None):
    """The forward kernel and both gradient kernels against the op table's references in float64."""
    x, w = randn(*x_shape, dtype=dtype), randn(*w_shape, dtype=dtype)
    want = reference(x, w, stride, padding)
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    src = conv.conv2d_source(x_shape, w_shape, stride, padding, dtype, tile)
    np.testing.assert_allclose(run_source(src, want.shape, dtype, x, w), want, rtol=tol, atol=tol * np.sqrt(w[0].size))
    g = randn(*want.shape, dtype=dtype)
    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    kw = {"stride": stride, "padding": padding}
    src = conv.conv2d_input_grad_source(g.shape, w_shape, stride, padding, x_shape, dtype, tile)
    want = OPS["conv2d_input_grad"].ref(g64, w64, in_shape=x_shape, **kw)
    np.testing.assert_allclose(run_source(src, x_shape, dtype, g, w), want, rtol=tol, atol=tol * np.sqrt(w.size))
    src = conv.conv2d_weight_grad_source(x_shape, g.shape, stride, padding, w_shape, dtype, tile)
    want = OPS["conv2d_weight_grad"].ref(x64, g64, w_shape=w_shape, **kw)
    np.testing.assert_allclose(run_source(src, w_shape, dtype, x, g), want, rtol=tol, atol=tol * np.sqrt(g[:, 0].size))


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding",
    [
        ((2, 3, 7, 6), (5, 3, 3, 2), (1, 1), (0, 0)),  # odd sizes, rectangular filter
        ((1, 2, 9, 8), (3, 2, 3, 3), (2, 2), (1, 1)),  # stride and padding
        ((2, 1, 5, 5), (2, 1, 5, 5), (1, 1), (2, 2)),  # filter = input, padding on every side
        ((1, 3, 6, 7), (4, 3, 1, 1), (2, 3), (0, 0)),  # 1x1 filter, unequal strides
        ((1, 2, 8, 7), (3, 2, 4, 3), (3, 2), (1, 0)),  # filter larger than the stride, ragged last window
        ((3, 2, 4, 4), (1, 2, 2, 2), (1, 1), (0, 1)),  # one output channel
    ],
)
def test_shapes(x_shape, w_shape, stride, padding):
    check(x_shape, w_shape, stride, padding)


def test_float64():
    check((2, 2, 5, 6), (3, 2, 3, 3), (2, 1), (1, 1), dtype=np.float64)


@pytest.mark.parametrize("name", list(mm.SIM_TILES))
def test_every_simulator_tile(name):
    t = mm.SIM_TILES[name]
    check((2, 3, 5, 4), (t.bm + 1, 3, 2, 2), (1, 1), (1, 0), tile=name)  # K = 12: full and partial K steps
    check((1, 2, 4, 5), (3, 2, 3, 2), (1, 2), (1, 1), dtype=np.float64, tile=dataclasses.replace(t, prefetch=False))


@pytest.mark.parametrize("name", list(mm.TILES))
def test_every_gpu_tile(name):
    check((1, 2, 5, 4), (3, 2, 3, 3), (1, 1), (1, 1), tile=name)


def test_bounds_tests_only_where_needed():
    def body(*args):
        return conv.conv2d_source(*args, np.float32).split("def kernel")[1]

    plain = body((1, 2, 8, 8), (3, 2, 3, 3), (1, 1), (0, 0))
    assert ">= 0" not in plain and "< 8" not in plain
    padded = body((1, 2, 8, 8), (3, 2, 3, 3), (1, 1), (1, 1))
    assert "iy0 + fi0 >= 0" in padded and "iy0 + fi0 < 8" in padded and "ix0 + fj0 >= 0" in padded
    # stride 2, padding 1 on 8 rows: the last window covers rows 5..7, inside: no bottom test
    assert "iy0 + fi0 < 8" not in body((1, 2, 8, 8), (3, 2, 3, 3), (2, 2), (1, 1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_source((1, 1, 2, 2), (1, 1, 3, 3), (1, 1), (0, 0), np.float32)
    with pytest.raises(ValueError):
        conv.conv2d_source((1, 2, 4, 4), (1, 3, 3, 3), (1, 1), (0, 0), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        conv.conv2d_source((1, 1, 4, 4), (1, 1, 3, 3), (1, 1), (0, 0), np.int32)


def test_epilogues_bias_relu_and_residual():
    xs, ws, stride, padding = (2, 3, 6, 5), (5, 3, 3, 3), (1, 1), (1, 1)
    x, w, bias = randn(*xs), randn(*ws), randn(5)
    want = reference(x, w, stride, padding)
    src = conv.conv2d_source(xs, ws, stride, padding, np.float32, epilogue=BiasRelu(axis=1))
    assert "def kernel(out, x, w, ep_bias):" in src
    got = run_source(src, want.shape, np.float32, x, w, bias)
    np.testing.assert_allclose(got, np.maximum(want + bias[:, None, None], 0), rtol=1e-5, atol=1e-5)
    res = randn(*want.shape, dtype=np.float64)  # every index of [n, o, y, x] in one flat offset
    src = conv.conv2d_source(xs, ws, stride, padding, np.float32, epilogue=ScaleResidual(want.shape, np.float64))
    got = run_source(src, want.shape, np.float32, x, w, res)
    np.testing.assert_allclose(got, want * 0.5 + res, rtol=1e-5, atol=1e-5)


# ---- through the engine: forward and backward ----


def engine_check(fn, *args, rtol=1e-4, atol=1e-5):
    f = jn.compile(fn, backend="cuda")
    assert_same(f(*args), jn.compile(fn, backend="interpret")(*args), rtol, atol)
    return f


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((2, 1), (0, 1))])
def test_engine_forward_and_gradients(stride, padding):
    x, w = randn(2, 3, 7, 6), randn(4, 3, 3, 3)
    f = engine_check(lambda x, w: jn.conv2d(x, w, stride, padding), x, w)
    assert "jitnet cuda kernel: conv2d" in f.inspect(x, w) and "through the host" not in f.inspect(x, w)

    def loss(x, w):
        return (jn.tanh(jn.conv2d(x, w, stride, padding)) ** 2).sum()

    src = engine_check(jn.grad(loss, argnums=(0, 1)), x, w).inspect(x, w)
    for kind in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
        assert f"jitnet cuda kernel: {kind} " in src


@pytest.mark.skipif(simulator(), reason="a LeNet-like stack is too slow for the simulator at batch > 1")
def test_engine_lenet_stack_small_batch():
    x, w1, w2 = randn(4, 1, 28, 28), randn(20, 1, 5, 5) * 0.2, randn(50, 20, 5, 5) * 0.05

    def net(x, w1, w2):
        h = jn.max_pool2d(jn.relu(jn.conv2d(x, w1)), 2)
        return jn.max_pool2d(jn.relu(jn.conv2d(h, w2)), 2).sum()

    engine_check(jn.value_and_grad(net, argnums=(1, 2)), x, w1, w2, rtol=1e-3, atol=1e-3)


def test_split_k_weight_gradient_with_epilogue():
    """A weight gradient has few outputs and a long K (N*Ho*Wo): K is split over the grid's z
    dimension and a finishing kernel sums the partials in order and applies the epilogue."""
    xs, ws, stride, padding = (3, 2, 9, 8), (3, 2, 2, 2), (1, 1), (1, 0)
    x, g = randn(*xs), randn(3, 3, 10, 7)
    src = conv.conv2d_weight_grad_source(xs, g.shape, stride, padding, ws, np.float32, epilogue=ScaleResidual(ws, "f8"))
    assert "K split" in src and "def finish(out, part, ep_res):" in src
    res = randn(*ws, dtype=np.float64)
    want = OPS["conv2d_weight_grad"].ref(x.astype(np.float64), g.astype(np.float64), stride, padding, ws)
    for _ in range(2):  # the partials' buffer is allocated once and reused
        got = run_source(src, ws, np.float32, x, g, res)
        np.testing.assert_allclose(got, want * 0.5 + res, rtol=1e-5, atol=1e-4)
    assert conv.split_count(mm.TILES["16x16x16_1x1"], 16, 16, 1 << 20) > 1  # one block: split
    assert conv.split_count(mm.TILES["64x64x8_4x4"], 4096, 4096, 1 << 20) == 1  # enough blocks already
    assert conv.split_count(mm.TILES["16x16x16_1x1"], 16, 16, 16) == 1  # one K step: nothing to split
