"""matmul through the engine on the CUDA backend (the generated kernels of jitnet/backends/cuda, not
the host), against the numpy reference interpreter, and the epilogue hook of the matmul generator.

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/backends/cuda/test_extern.py

Tiny shapes (the simulator runs a Python thread per CUDA thread): M, N, K not multiples of any
tile, 1 x N, N x 1, K = 1, batched with broadcasting batch dims, 1-D operands, float64, integers.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import CUDA_MARKS, assert_same
from simhelpers import BiasRelu, ScaleResidual, run_source

import jitnet as jn
from jitnet.backends.cuda import extern_source
from jitnet.backends.cuda import matmul as mm
from jitnet.ir.opdefs import OPS

pytestmark = CUDA_MARKS

rng = np.random.default_rng(1)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def check(fn, *args, rtol=1e-5, atol=1e-5):
    f = jn.compile(fn, backend="cuda")
    got = f(*args)
    for leaf in jn.ir.pytree.flatten(got)[0]:
        assert isinstance(leaf, jn.Array) and leaf.device.kind == "cuda"
    assert_same(got, jn.compile(fn, backend="interpret")(*args), rtol, atol)
    return f


def matmul(a, b):
    return a @ b


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((1, 1), (1, 1)),
        ((7, 9), (9, 5)),  # odd M, N, K
        ((1, 11), (11, 6)),  # 1 x N
        ((6, 11), (11, 1)),  # N x 1
        ((9, 1), (1, 7)),  # K = 1
        ((3, 5, 4), (3, 4, 6)),  # batched
        ((2, 1, 5, 3), (1, 3, 3, 6)),  # batch dims broadcast on both sides
        ((4, 5, 3), (3, 2)),  # a 2-D operand against a batch
        ((7,), (7, 3)),  # 1-D operands
        ((2, 5, 7), (7,)),
    ],
)
def test_matmul_shapes(a_shape, b_shape):
    f = check(matmul, randn(*a_shape), randn(*b_shape))
    src = f.inspect(randn(*a_shape), randn(*b_shape))
    assert "jitnet cuda kernel: matmul" in src and "through the host" not in src


def test_matmul_float64_and_integers():
    check(matmul, randn(5, 7, dtype=np.float64), randn(7, 3, dtype=np.float64), rtol=1e-12, atol=1e-12)
    a, b = rng.integers(-9, 9, (2, 5, 7)), rng.integers(-9, 9, (1, 7, 3))
    check(matmul, a.astype(np.int32), b.astype(np.int32))
    check(matmul, a, b)  # int64
    # int32 sums wrap as numpy's do
    big = np.full((2, 3), 2**30, np.int32)
    check(matmul, big, np.ones((3, 2), np.int32))
    f = jn.compile(matmul, backend="cuda")
    assert "integer kernel" in f.inspect(a, b)


def test_matmul_gradients_and_fused_neighbours():
    x, w, b = randn(5, 7), randn(7, 3), randn(3)
    check(lambda x, w, b: jn.relu(x @ w + b).sum(), x, w, b)
    check(jn.grad(lambda x, w: jn.tanh(x @ w).sum(), argnums=(0, 1)), x, w)
    check(jn.grad(lambda a, b: ((a @ b) ** 2).sum(), argnums=(0, 1)), randn(2, 3, 4), randn(1, 4, 5), rtol=1e-4)


# ---- the generator's hooks: broadcast batch offsets, epilogues ----


def test_batch_index_expressions():
    assert mm.batch_index("z", (3, 4), (3, 4)) == "z"
    assert mm.batch_index("z", (3, 4), (1, 1)) == "0"
    for out_batch, in_batch in [((3, 4), (3, 1)), ((3, 4), (1, 4)), ((2, 3, 4), (2, 1, 4)), ((2, 3, 4), (1, 3, 1))]:
        expr = mm.batch_index("z", out_batch, in_batch)
        strides = np.array(np.broadcast_to(np.arange(int(np.prod(in_batch))).reshape(in_batch), out_batch)).ravel()
        assert [eval(expr, {"z": z}) for z in range(int(np.prod(out_batch)))] == list(strides), expr
    with pytest.raises(ValueError, match="do not broadcast"):
        mm.matmul_source(2, 2, 2, (3, 4), np.float32, a_batch=(2, 4))


def test_epilogue_bias_relu():
    m, n, k = 7, 9, 5
    a, b, bias = randn(2, m, k), randn(1, k, n), randn(n)
    src = mm.matmul_source(m, n, k, (2,), np.float32, a_batch=(2,), b_batch=(1,), epilogue=BiasRelu(axis=2))
    assert "def kernel(out, a, b, ep_bias):" in src and "ep_v = c0_0 + ep_bias[" in src
    got = run_source(src, (2, m, n), np.float32, a, b, bias)
    want = np.maximum(a.astype(np.float64) @ b + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_trans, b_trans", [(False, False), (True, True)])
def test_epilogue_scale_residual_uses_every_index(a_trans, b_trans):
    batch, m, n, k = 3, 5, 6, 7
    a, b = randn(batch, k, m) if a_trans else randn(batch, m, k), randn(batch, n, k) if b_trans else randn(batch, k, n)
    res = randn(batch, m, n, dtype=np.float64)
    epi = ScaleResidual((batch, m, n), np.float64)
    src = mm.matmul_source(m, n, k, batch, np.float32, a_trans, b_trans, epilogue=epi)
    assert "float64[::1])" in src.split("def kernel")[0]  # the residual's own dtype in the signature
    got = run_source(src, (batch, m, n), np.float32, a, b, res)
    aa = a.transpose(0, 2, 1) if a_trans else a
    bb = b.transpose(0, 2, 1) if b_trans else b
    np.testing.assert_allclose(got, (aa.astype(np.float64) @ bb) * 0.5 + res, rtol=1e-5, atol=1e-5)


def test_epilogue_on_the_integer_kernel():
    a, b, bias = rng.integers(-5, 5, (4, 3)), rng.integers(-5, 5, (3, 6)), rng.integers(-20, 20, 6)
    src = mm.matmul_source(4, 6, 3, 1, np.int64, epilogue=BiasRelu(axis=2))
    got = run_source(src, (1, 4, 6), np.int64, a, b, bias)
    np.testing.assert_array_equal(got[0], np.maximum(a @ b + bias, 0))


def test_epilogue_dtypes_must_match_params():
    class Bad:
        params = ["ep_a", "ep_b"]
        dtypes = [np.float32]

        def render(self, v, idx):
            return [], v

    with pytest.raises(ValueError, match="2 params"):
        mm.matmul_source(2, 2, 2, 1, np.float32, epilogue=Bad())


# ---- the fuser's door: extern_source with transposed buffers and epilogues ----


def fake_op(op, out_shape, dtype, **attrs):
    """The parts of an extern op's node that extern_source reads."""
    return SimpleNamespace(op=op, shape=out_shape, dtype=np.dtype(dtype), attrs=attrs)


def test_extern_source_transposed_buffers_and_epilogue():
    m, n, k = 5, 6, 7
    a_t, b_t, bias = randn(2, k, m), randn(1, n, k), randn(n)  # buffers holding A^T and B^T
    op = fake_op("matmul", (2, m, n), np.float32)
    src = extern_source(op, [(2, k, m), (1, n, k)], a_trans=True, b_trans=True, epilogue=BiasRelu(axis=2))
    got = run_source(src, (2, m, n), np.float32, a_t, b_t, bias)
    want = np.maximum(a_t.transpose(0, 2, 1).astype(np.float64) @ b_t.transpose(0, 2, 1) + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    x, w, bias = randn(2, 3, 6, 5), randn(4, 3, 3, 3), randn(4)
    op = fake_op("conv2d", (2, 4, 3, 3), np.float32, stride=(2, 2), padding=(1, 1))
    got = run_source(
        extern_source(op, [x.shape, w.shape], epilogue=BiasRelu(axis=1)), (2, 4, 3, 3), np.float32, x, w, bias
    )
    y = OPS["conv2d"].ref(x.astype(np.float64), w.astype(np.float64), stride=(2, 2), padding=(1, 1))
    np.testing.assert_allclose(got, np.maximum(y + bias[:, None, None], 0), rtol=1e-5, atol=1e-5)

    pool = fake_op("max_pool2d", (1, 1, 2, 2), np.float32, kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    with pytest.raises(ValueError, match="no epilogue"):
        extern_source(pool, [(1, 1, 4, 4)], epilogue=BiasRelu(axis=1))
    with pytest.raises(ValueError, match="no transposed"):
        extern_source(pool, [(1, 1, 4, 4)], a_trans=True)
