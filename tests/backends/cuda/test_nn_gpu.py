"""The extern kernels (matmul, conv2d and its gradients, pools) at real sizes on a real GPU, through
the engine against the numpy reference interpreter, and the generated kernels with epilogues and
split K at sizes that select the GPU tile set's large tiles.

Skipped unless a real GPU is usable (the simulator is far too slow for these shapes):

    python -m pytest -q -m gpu tests/backends/cuda/test_nn_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same
from simhelpers import BiasRelu, ScaleResidual, run_source

import jitnet as jn
from jitnet.backends.cuda import conv
from jitnet.backends.cuda import matmul as mm
from jitnet.backends.cuda.device import cuda_available, simulator
from jitnet.ir.opdefs import OPS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available() or simulator(), reason="needs a real CUDA GPU (not the simulator)"),
]

rng = np.random.default_rng(4)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape, dtype=np.float64).astype(dtype)


def check(fn, *args, rtol=1e-4, atol=1e-4):
    f = jn.compile(fn, backend="cuda")
    got = f(*args)
    assert_same(got, jn.compile(fn, backend="interpret")(*args), rtol, atol)
    return f


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((1024, 768), (768, 1024)), ((1000, 333), (333, 777)), ((1, 4096), (4096, 513)), ((8, 130, 96), (1, 96, 200))],
)
def test_matmul_sizes(a_shape, b_shape):
    f = check(lambda a, b: a @ b, randn(*a_shape), randn(*b_shape), atol=1e-3)
    assert "jitnet cuda kernel: matmul" in f.inspect(randn(*a_shape), randn(*b_shape))


def test_matmul_float64_int_and_gradients():
    check(lambda a, b: a @ b, randn(300, 200, dtype=np.float64), randn(200, 100, dtype=np.float64), rtol=1e-10)
    a, b = rng.integers(-50, 50, (130, 70)), rng.integers(-50, 50, (70, 90))
    check(lambda a, b: a @ b, a.astype(np.int32), b.astype(np.int32))
    x, w = randn(256, 300), randn(300, 200)
    check(jn.grad(lambda x, w: jn.tanh(x @ w).sum(), argnums=(0, 1)), x, w, atol=1e-3)


@pytest.mark.parametrize("name", list(mm.TILES))
def test_matmul_epilogue_every_tile(name):
    m, n, k = 300, 260, 70
    a, b, bias = randn(m, k), randn(k, n), randn(n)
    src = mm.matmul_source(m, n, k, 1, np.float32, tile=name, epilogue=BiasRelu(axis=2))
    got = run_source(src, (1, m, n), np.float32, a, b, bias)[0]
    np.testing.assert_allclose(got, np.maximum(a.astype(np.float64) @ b + bias, 0), rtol=1e-4, atol=1e-4)


def test_conv_lenet_forward_and_backward():
    x, w1, w2 = randn(64, 1, 28, 28), randn(20, 1, 5, 5) * 0.2, randn(50, 20, 5, 5) * 0.05
    b1, b2 = randn(20), randn(50)

    def net(x, w1, b1, w2, b2):
        h = jn.max_pool2d(jn.relu(jn.conv2d(x, w1) + b1[:, None, None]), 2)
        return jn.max_pool2d(jn.relu(jn.conv2d(h, w2) + b2[:, None, None]), 2).sum()

    f = check(jn.value_and_grad(net, argnums=(1, 2, 3, 4)), x, w1, b1, w2, b2, rtol=1e-3, atol=1e-2)
    src = f.inspect(x, w1, b1, w2, b2)
    assert "through the host" not in src and "K split" in src  # conv1's weight gradient splits K


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (2, 0)])
def test_conv_kernels_directly(stride, padding):
    xs, ws = (16, 24, 33, 31), (40, 24, 3, 3)
    x, w = randn(*xs), randn(*ws)
    st, pd = (stride, stride), (padding, padding)
    y = OPS["conv2d"].ref(x.astype(np.float64), w.astype(np.float64), stride=st, padding=pd)
    got = run_source(
        conv.conv2d_source(xs, ws, st, pd, np.float32, epilogue=ScaleResidual(y.shape, "f8")), y.shape, "f4", x, w, y
    )
    np.testing.assert_allclose(got, y * 1.5, rtol=1e-4, atol=1e-3)
    g = randn(*y.shape)
    kw = {"stride": st, "padding": pd}
    want = OPS["conv2d_input_grad"].ref(g.astype(np.float64), w.astype(np.float64), in_shape=xs, **kw)
    got = run_source(conv.conv2d_input_grad_source(g.shape, ws, st, pd, xs, np.float32), xs, "f4", g, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    want = OPS["conv2d_weight_grad"].ref(x.astype(np.float64), g.astype(np.float64), w_shape=ws, **kw)
    got = run_source(conv.conv2d_weight_grad_source(xs, g.shape, st, pd, ws, np.float32), ws, "f4", x, g)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)


def test_pools_forward_and_backward():
    x = rng.integers(-4, 4, (32, 16, 27, 26)).astype(np.float32)  # ties
    for op in (jn.max_pool2d, jn.avg_pool2d):
        for args in [(2,), (3, 2, 1)]:
            check(jn.value_and_grad(lambda x, op=op, args=args: (op(x, *args) ** 2).sum()), x, rtol=1e-4, atol=1e-1)
