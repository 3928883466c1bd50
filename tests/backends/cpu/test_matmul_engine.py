"""matmul through the engine on the CPU (jitnet/backends/cpu/matmul.py `matmul_kernel`): both routes
(the generated kernel and BLAS, per `choose_path`) and numpy's integer loops against the
interpreter, for sizes off every tile, 1 x N, N x 1, K = 1, batches with broadcasting; transposed
operands read in place; the epilogue hook on both routes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn
from jitnet.backends.cpu import extern_kernel
from jitnet.backends.cpu import matmul as mm
from jitnet.codegen import cache

rng = np.random.default_rng(7)

CASES = [
    # a shape, b shape, dtype
    ((37, 29), (29, 41), np.float32),  # off every tile: generated kernel
    ((70, 19), (19, 83), np.float64),
    ((1, 33), (33, 50), np.float32),  # 1 x N: BLAS
    ((50, 33), (33, 1), np.float64),  # N x 1: BLAS
    ((40, 1), (1, 45), np.float32),  # K = 1
    ((3, 17, 23), (3, 23, 19), np.float32),  # batched
    ((4, 9, 11), (11, 21), np.float32),  # B shared by the batch: one (B*M, K) product
    ((2, 1, 9, 11), (1, 3, 11, 20), np.float64),  # both broadcast
    ((9, 11), (5, 11, 18), np.float32),  # A shared by the batch
    ((4, 6, 13), (4, 13, 3), np.float32),  # batched, n <= 4: BLAS
    ((6, 7), (7, 5), np.int32),  # integers: numpy
    ((2, 6, 7), (7, 5), np.int64),
]


def arr(shape, dtype):
    if np.dtype(dtype).kind == "i":
        return rng.integers(-9, 9, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}@{c[1]}-{np.dtype(c[2]).name}".replace(" ", ""))
def test_engine_against_interpreter(case):
    sa, sb, dtype = case
    a, b = arr(sa, dtype), arr(sb, dtype)
    check(lambda a, b: a @ b, a, b, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)


def test_routes_are_the_rule():
    a, b = arr((37, 29), np.float32), arr((29, 41), np.float32)
    assert "jitnet cpu matmul" in jn.compile(lambda a, b: a @ b, backend="cpu").inspect(a, b)
    a1 = arr((1, 29), np.float32)
    assert "np.matmul (BLAS)" in jn.compile(lambda a, b: a @ b, backend="cpu").inspect(a1, b)
    ai = arr((3, 4), np.int32)
    assert "numpy's integer loops" in jn.compile(lambda a, b: a @ b, backend="cpu").inspect(ai, ai.T.copy())


def test_gradients_against_interpreter():
    a, b = arr((2, 13, 9), np.float32), arr((9, 17), np.float32)
    check(jn.value_and_grad(lambda a, b: jn.sum(jn.tanh(a @ b)), argnums=(0, 1)), a, b, rtol=1e-4, atol=1e-4)


class BiasRelu:
    """relu(v + bias[j]) with params ["bias"]: a hand-written epilogue."""

    params = ["bias"]

    def render(self, v, idx):
        return [f"ep_t = {v} + bias[{idx[2]}]"], "max(ep_t, 0.0)"


class ScaleResidual:
    """2 * v + res[z, i, j] over an out of shape (batch, m, n)."""

    params = ["res"]

    def __init__(self, m, n):
        self.m, self.n = m, n

    def render(self, v, idx):
        z, i, j = idx
        return [], f"2.0 * {v} + res[(({z}) * {self.m} + ({i})) * {self.n} + ({j})]"


@pytest.mark.parametrize("a_trans, b_trans", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, n, k, batch", [(37, 70, 300, 1), (19, 3, 11, 2), (1, 40, 9, 1)])
def test_transposed_operands_and_epilogue(m, n, k, batch, a_trans, b_trans):
    """Operands as transposed buffers (read in place), and an epilogue, on both routes
    (n = 3 and m = 1 go to BLAS, whose epilogue is its own pass)."""
    A, B = arr((batch, m, k), np.float32), arr((batch, k, n), np.float32)
    bias, res = arr((n,), np.float32), arr((batch, m, n), np.float32)
    a = np.ascontiguousarray(A.transpose(0, 2, 1) if a_trans else A)
    b = np.ascontiguousarray(B.transpose(0, 2, 1) if b_trans else B)
    want = A.astype(np.float64) @ B.astype(np.float64)
    for ep, expect in ((BiasRelu(), np.maximum(want + bias, 0)), (ScaleResidual(m, n), 2 * want + res)):
        fn, source = mm.matmul_kernel((batch, m, n), a.shape, b.shape, np.float32, a_trans, b_trans, ep)
        out = np.full(batch * m * n, np.nan, np.float32)
        fn(out, a.ravel(), b.ravel(), (bias if isinstance(ep, BiasRelu) else res).ravel())
        np.testing.assert_allclose(out.reshape(batch, m, n), expect, rtol=1e-4, atol=1e-4)
        assert ("np.matmul" in source) == (mm.choose_path(m, n, k, batch) == "blas")


def test_epilogue_over_several_k_blocks_and_folded_rows():
    """The epilogue runs once, after the last K block; a batch folded into rows keeps its [z, i, j]."""
    A, B = arr((3, 20, 1100), np.float32), arr((1100, 40), np.float32)
    res = arr((3, 20, 40), np.float32)
    fn, source = mm.matmul_kernel((3, 20, 40), A.shape, B.shape, np.float32, epilogue=ScaleResidual(20, 40))
    kc = mm.TILES["float32"].kc
    assert "out (1, 60, 40)" in source and f"KC={kc}" in source and 2 * kc < 1100  # folded rows; 3+ K blocks
    out = np.empty(3 * 20 * 40, np.float32)
    fn(out, A.ravel(), B.ravel(), res.ravel())
    np.testing.assert_allclose(out.reshape(3, 20, 40), 2 * (A.astype(np.float64) @ B) + res, rtol=1e-4, atol=1e-3)


def test_accumulate_and_degenerate_k():
    A, B = arr((1, 9, 7), np.float64), arr((1, 7, 33), np.float64)
    fn = cache.load(mm.matmul_source(9, 33, 7, 1, np.float64, accumulate=True))
    out = np.ones(9 * 33)
    fn(out, A.ravel(), B.ravel())
    np.testing.assert_allclose(out.reshape(9, 33), 1 + A[0] @ B[0], rtol=1e-12)
    fn = cache.load(mm.matmul_source(4, 5, 0, 1, np.float32, epilogue=BiasRelu()))
    out = np.full(20, np.nan, np.float32)
    bias = np.arange(-2, 3, dtype=np.float32)
    fn(out, np.empty(0, np.float32), np.empty(0, np.float32), bias)
    np.testing.assert_array_equal(out.reshape(4, 5), np.broadcast_to(np.maximum(bias, 0), (4, 5)))


def test_batch_offsets():
    assert mm._batch_offset((2, 3), (2, 3), 10) == "z * 10"
    assert mm._batch_offset((2, 3), (1, 3), 10) == "(z // 1 % 3) * 10"
    assert mm._batch_offset((2, 3), (2, 1), 10) == "(z // 3 % 2) * 10"
    assert mm._batch_offset((2, 3), (1, 1), 10) == "0"
    with pytest.raises(ValueError, match="does not broadcast"):
        mm.matmul_source(2, 2, 2, (2, 3), np.float32, a_batch=(3, 3))


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="no kernel for extern op"):
        extern_kernel("fft", (2,), np.float32, [(2,)], {})
    with pytest.raises(ValueError, match="takes no epilogue"):
        extern_kernel("max_pool2d", (1, 1, 2, 2), np.float32, [(1, 1, 4, 4)], {}, epilogue=BiasRelu())
    with pytest.raises(ValueError, match="do not fit"):
        mm.matmul_kernel((3, 4), (3, 5), (6, 4), np.float32)
    with pytest.raises(ValueError, match="accumulate"):
        mm.matmul_source(2, 2, 2, 1, np.float32, accumulate=True, epilogue=BiasRelu())
