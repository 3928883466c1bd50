"""The generated CPU matmul kernel (jitnet/backends/cpu/matmul.py) against numpy in float64: edges
of every tile in M, N and K, vectors, K = 1, batches, transposed operands, both dtypes, NaN and inf,
the packed and the in-place operand paths, serial, parallel and batch-parallel kernels."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.backends.cpu import matmul as mm
from jitnet.codegen import cache

rng = np.random.default_rng(0)


def operands(m, n, k, batch, dtype, a_trans, b_trans):
    """Flat buffers a, b in the kernel's layouts, and the float64 A (batch, m, k), B (batch, k, n)."""
    A = rng.standard_normal((batch, m, k)).astype(dtype)
    B = rng.standard_normal((batch, k, n)).astype(dtype)
    a = np.ascontiguousarray(A.transpose(0, 2, 1) if a_trans else A).ravel()
    b = np.ascontiguousarray(B.transpose(0, 2, 1) if b_trans else B).ravel()
    return a, b, A.astype(np.float64), B.astype(np.float64)


def flat(A, B, a_trans, b_trans):
    a = np.ascontiguousarray(A.transpose(0, 2, 1) if a_trans else A).ravel()
    b = np.ascontiguousarray(B.transpose(0, 2, 1) if b_trans else B).ravel()
    return a, b


def kernel(m, n, k, batch=1, dtype=np.float32, a_trans=False, b_trans=False, **kw):
    return cache.load(mm.matmul_source(m, n, k, batch, dtype, a_trans, b_trans, **kw), "kernel")


def run(fn, a, b, m, n, batch, dtype):
    out = np.full(batch * m * n, np.nan, dtype)  # the kernel must write every element
    fn(out, a, b)
    return out.reshape(batch, m, n)


def assert_matmul(got, A, B, dtype):
    ref = A @ B
    k = A.shape[-1]
    eps = np.finfo(dtype).eps
    scale = np.abs(A) @ np.abs(B)  # error bound of a dot product: ~ sqrt(k) * eps * sum |a_i b_i|
    assert np.all(np.abs(got - ref) <= 2 * np.sqrt(max(k, 1)) * eps * scale + 1e-30), np.abs(got - ref).max()


CASES = [
    # m, n, k, batch, dtype, a_trans, b_trans
    (1, 1, 1, 1, np.float32, False, False),
    (3, 17, 5, 1, np.float64, False, False),
    (17, 33, 65, 1, np.float32, True, False),
    (33, 65, 17, 1, np.float64, False, True),
    (65, 100, 3, 2, np.float32, True, True),
    (1, 100, 33, 1, np.float32, False, False),  # 1 x N
    (100, 1, 33, 1, np.float64, False, False),  # N x 1
    (40, 50, 1, 1, np.float32, False, True),  # K = 1
    (7, 9, 13, 4, np.float64, True, True),  # a batch of small ones
]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}b{c[3]}-{np.dtype(c[4]).name}{'-aT' if c[5] else ''}{'-bT' if c[6] else ''}",
)
def test_against_numpy(case):
    m, n, k, batch, dtype, a_trans, b_trans = case
    a, b, A, B = operands(m, n, k, batch, dtype, a_trans, b_trans)
    got = run(kernel(m, n, k, batch, dtype, a_trans, b_trans), a, b, m, n, batch, dtype)
    assert_matmul(got, A, B, dtype)


@pytest.mark.parametrize("pack_b", [False, True])
@pytest.mark.parametrize("a_trans", [False, True])
def test_operands_in_place(pack_b, a_trans):
    """The micro-kernel reading A, and B packed or where it lies, at every edge."""
    m, n, k = 17, 45, 23
    a, b, A, B = operands(m, n, k, 1, np.float32, a_trans, False)
    fn = kernel(m, n, k, 1, np.float32, a_trans, False, pack_b=pack_b)
    assert_matmul(run(fn, a, b, m, n, 1, np.float32), A, B, np.float32)


PARALLEL = [
    (130, 97, 70, 1, np.float32, False, False),  # threads split the rows
    (20, 700, 64, 1, np.float64, True, False),  # ... the columns
    (150, 90, 600, 1, np.float32, True, True),  # two K blocks: C accumulates
    (70, 50, 40, 3, np.float64, False, True),  # threads split each matrix of a batch
    (300, 700, 600, 2, np.float32, False, False),  # ... with B packed (its block is L2-sized), 2 K blocks
    (37, 33, 29, 9, np.float32, True, True),  # threads take whole products (9 = 4 + 5 with 2 threads)
    (40, 24, 70, 11, np.float64, False, False),  # ... odd sizes, a K block
]


@pytest.mark.parametrize("case", PARALLEL, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}b{c[3]}-{np.dtype(c[4]).name}")
def test_parallel(case):
    m, n, k, batch, dtype, a_trans, b_trans = case
    src = mm.matmul_source(m, n, k, batch, dtype, a_trans, b_trans)
    assert "nt = num_threads()" in src  # chunks on every thread
    a, b, A, B = operands(m, n, k, batch, dtype, a_trans, b_trans)
    got = run(cache.load(src, "kernel"), a, b, m, n, batch, dtype)
    assert_matmul(got, A, B, dtype)


def test_small_is_serial():
    src = mm.matmul_source(30, 30, 30, 1, np.float32, False, False)
    assert "nt = 1\n" in src  # one chunk, called directly


@pytest.mark.parametrize("case", [(9, 37, 20, 1), (130, 97, 70, 1)], ids=["serial", "parallel"])
def test_nan_inf_propagate(case):
    m, n, k, batch = case
    dtype = np.float32
    A = rng.standard_normal((batch, m, k)).astype(np.float64)
    B = rng.standard_normal((batch, k, n)).astype(np.float64)
    A[0, 0, 3] = np.nan  # row 0 of out: all NaN
    A[0, m - 1, 0] = np.inf  # the last row (an edge panel): +-inf, NaN where B[0, j] == 0
    B[0, 0, 5] = 0.0
    B[0, 7, n - 1] = -np.inf  # the last column (an edge panel): -+inf, NaN where it meets inf
    A[0, 4, 7] = 0.0  # ... and 0 * -inf = NaN at out[4, n - 1]
    a, b = flat(A.astype(dtype), B.astype(dtype), False, False)
    got = run(kernel(m, n, k, batch, dtype), a, b, m, n, batch, dtype)
    with np.errstate(invalid="ignore"):
        ref = A @ B
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isposinf(got), np.isposinf(ref))
    assert np.array_equal(np.isneginf(got), np.isneginf(ref))
    finite = np.isfinite(ref)
    assert np.allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)
    assert np.isnan(got[0, 0]).all() and np.isnan(got[0, 4, n - 1])


def test_large_parallel():
    m, n, k = 300, 257, 700
    a, b, A, B = operands(m, n, k, 1, np.float32, False, False)
    got = run(kernel(m, n, k), a, b, m, n, 1, np.float32)
    assert_matmul(got, A, B, np.float32)


def test_degenerate():
    out = np.full(6, np.nan, np.float32)
    kernel(2, 3, 0)(out, np.zeros(0, np.float32), np.zeros(0, np.float32))
    assert (out == 0).all()
    kernel(0, 3, 4)(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(12, np.float32))


def test_tile_override():
    m, n, k = 19, 50, 30
    a, b, A, B = operands(m, n, k, 1, np.float32, False, False)
    fn = kernel(m, n, k, tile="4x48k16m8")  # several K blocks and A chunks at this size
    assert_matmul(run(fn, a, b, m, n, 1, np.float32), A, B, np.float32)
    with pytest.raises(ValueError):
        mm.matmul_source(4, 4, 4, 1, np.float32, False, False, tile="4x20k16m8")
    with pytest.raises(ValueError):
        mm.matmul_source(4, 4, 4, 1, np.int32, False, False)


@pytest.mark.parametrize("a_trans,b_trans", [(False, False), (True, True)])
def test_blas_route(a_trans, b_trans):
    """A product choose_path sends to BLAS (n <= 4 columns) runs np.matmul on views of the flat
    buffers, transposed operands included."""
    m, n, k, batch = 5, 3, 9, 2
    a, b, A, B = operands(m, n, k, batch, np.float64, a_trans, b_trans)
    a_shape = (batch, k, m) if a_trans else (batch, m, k)
    b_shape = (batch, n, k) if b_trans else (batch, k, n)
    fn, source = mm.matmul_kernel((batch, m, n), a_shape, b_shape, np.float64, a_trans, b_trans)
    assert "np.matmul (BLAS)" in source
    out = np.empty(batch * m * n)
    fn(out, a, b)
    assert np.allclose(out.reshape(batch, m, n), A @ B)


def test_choose_path():
    for m, n, k in [(1024, 1024, 1024), (256, 256, 256), (4, 8, 4), (2, 1024, 1024), (1024, 5, 1024)]:
        assert mm.choose_path(m, n, k) == "numba"
    for m, n, k in [(1, 1024, 1024), (1024, 1, 1024), (256, 4, 256), (4, 4, 4)]:  # (nearly) matrix-vector products
        assert mm.choose_path(m, n, k) == "blas"


def test_rules(monkeypatch):
    monkeypatch.setattr(mm, "TILES", mm.TILES_AVX512)  # 4 x 64, and 8 x 16 where 64 columns pad
    t32 = mm.choose_tile(1024, 1024, 1024, np.float32)
    assert (t32.mr, t32.nr) == (4, 64) and mm.choose_tile(100, 8, 100, np.float32).nr == 16
    assert mm.choose_tile(100, 80, 100, np.float32).nr == 16 and mm.choose_tile(100, 500, 100, np.float32).nr == 64
    assert mm.packing(1024, 1024, 1024, False, t32)  # B block > L2: packed
    assert not mm.packing(256, 256, 256, False, t32)  # fits L2: read in place
    assert mm.packing(256, 256, 256, True, t32)  # a transposed B: packed
    assert "B packed" in mm.matmul_source(300, 700, 600, 2, np.float32, False, False)  # in test_parallel
    monkeypatch.setattr(mm, "TILES", mm.TILES_AVX2)  # 6 x 16: one tile, nothing to narrow
    assert {mm.choose_tile(100, n, 100, np.float32) for n in (8, 80, 500, 1024)} == {mm.TILES_AVX2["float32"]}
    t16 = mm.TILES_AVX2["float32"]  # a B row of one cache line: packed wherever a panel is reused
    assert mm.packing(256, 256, 256, False, t16) and not mm.packing(12, 256, 256, False, t16)
