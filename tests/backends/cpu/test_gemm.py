"""The GEMM core (jitnet/backends/cpu/gemm.py) called directly through its C address, against numpy:
every flag, edges in M and N, several K blocks and A chunks, sub-blocks."""

from __future__ import annotations

import ctypes
import itertools
import re

import numpy as np
import pytest

from jitnet.backends.cpu import gemm
from jitnet.codegen import cache

rng = np.random.default_rng(0)


def core(dtype, mr, nr):
    fn = cache.load(gemm.core_source(dtype, mr, nr), "gemm")
    return ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * 16)(fn.address)


SHAPES = [(1, 1, 1), (5, 17, 3), (13, 70, 600), (33, 130, 40)]
FLAGS = [f for f in itertools.product([0, 1], repeat=4) if f[2] or not f[1]]  # a transposed B is packed


@pytest.mark.parametrize("dtype,mr,nr", [(np.float32, 4, 64), (np.float32, 8, 16), (np.float64, 4, 32)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_core_against_numpy(dtype, mr, nr, shape):
    m, n, k = shape
    f = core(dtype, mr, nr)
    for a_trans, b_trans, pack_b, accumulate in FLAGS:
        A, B = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        a, b = np.ascontiguousarray(A.T if a_trans else A), np.ascontiguousarray(B.T if b_trans else B)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        c = c0.copy()
        mp, np_ = -(-m // mr), -(-n // nr)
        f(
            c.ctypes.data,
            a.ctypes.data,
            b.ctypes.data,
            m,
            n,
            k,
            a_trans,
            b_trans,
            pack_b,
            accumulate,
            0,
            mp,
            0,
            np_,
            256,
            3,
        )  # kc 256: K = 600 takes three K blocks; 3 row panels per A chunk
        want = A.astype(np.float64) @ B + (c0 if accumulate else 0)
        tol = 4 * np.sqrt(k) * np.finfo(dtype).eps * (np.abs(A) @ np.abs(B) + np.abs(c0))
        assert np.all(np.abs(c - want) <= tol), (a_trans, b_trans, pack_b, accumulate)


def test_core_writes_only_its_block():
    m, n, k, mr, nr = 30, 100, 20, 4, 16
    f = core(np.float32, mr, nr)
    A, B = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    f(c.ctypes.data, A.ctypes.data, B.ctypes.data, m, n, k, 0, 0, 0, 0, 2, 5, 1, 3, 512, 24)
    rows, cols = slice(2 * mr, 5 * mr), slice(nr, 3 * nr)
    np.testing.assert_allclose(c[rows, cols], (A @ B)[rows, cols], rtol=1e-4, atol=1e-4)
    c[rows, cols] = np.nan
    assert np.isnan(c).all()


def test_core_is_vector_fmas():
    """512-bit FMAs in the micro-kernel, and no scalar FMA anywhere."""
    namespace = {}
    exec(gemm.core_source(np.float32, 4, 64).replace("cache=True", "cache=False"), namespace)
    llvm_ir = namespace["gemm"].inspect_llvm()
    assert len(re.findall(r"call <16 x float> @llvm\.fma\.v16f32", llvm_ir)) >= 16
    assert "@llvm.fma.f32" not in llvm_ir


def test_bad_tiles_and_dtypes():
    with pytest.raises(ValueError, match="multiple of 16"):
        gemm.core_source(np.float32, 4, 20)
    with pytest.raises(ValueError, match="float32 and float64"):
        gemm.core_source(np.int32, 4, 64)


@pytest.mark.parametrize("table", ["TILES_AVX512", "TILES_AVX2"])
def test_modules_name_the_cores_they_load(monkeypatch, table):
    from jitnet.backends.cpu import conv, matmul

    monkeypatch.setattr(matmul, "TILES", getattr(matmul, table))
    big32, big64 = matmul.TILES["float32"], matmul.TILES["float64"]
    assert gemm.required(matmul.matmul_source(100, 500, 80, 1, np.float32)) == {("float32", big32.mr, big32.nr)}
    narrow64 = (8, 8) if big64.nr > 8 else (big64.mr, big64.nr)  # 10 columns: one vector of 8
    assert gemm.required(matmul.matmul_source(100, 10, 80, 2, np.float64)) == {("float64", *narrow64)}
    src = conv.conv2d_source((2, 3, 9, 9), (5, 3, 3, 3), (1, 1), (1, 1), np.float32)
    narrow32 = (8, 16) if big32.nr > 16 else (big32.mr, big32.nr)  # 81 output pixels: 4 x 64 would pad 47
    assert gemm.required(src) == {("float32", *narrow32)}


@pytest.mark.parametrize("table,registers,width", [("TILES_AVX512", 32, 64), ("TILES_AVX2", 16, 32)])
def test_register_tiles_fit_the_vector_registers(table, registers, width):
    """MR x NR/lanes accumulators, NR/lanes vectors of B and one broadcast of A must fit the
    register file (AVX-512: 32 of 64 bytes, AVX2: 16 of 32), or the micro-kernel spills (4 x 64
    on AVX2 ran at a third of 6 x 16's speed); the table in use is the host's."""
    from jitnet.backends.cpu import matmul

    for dtype, tile in getattr(matmul, table).items():
        lanes = width // np.dtype(dtype).itemsize
        vectors = tile.nr // lanes
        assert tile.mr * vectors + vectors + 1 <= registers, (table, dtype, tile)
    assert matmul.TILES is (matmul.TILES_AVX512 if gemm.has_avx512() else matmul.TILES_AVX2)


@pytest.mark.parametrize("dtype,lanes", [(np.float32, 16), (np.float64, 8)])
def test_vtranspose_block(dtype, lanes):
    """The transposed-B pack's building block: a lanes x lanes block, any strides and offsets."""
    from numba import njit

    from jitnet.backends.cpu.intrinsics import vtranspose

    @njit
    def transpose(src, dst, s_off, s_stride, d_off, d_stride):
        vtranspose(src, s_off, s_stride, dst, d_off, d_stride, lanes)

    src, dst = np.arange(40 * 50, dtype=dtype), np.zeros(60 * 70, dtype)
    transpose(src, dst, 3, 50, 5, 70)
    block = src[3 : 3 + 50 * lanes].reshape(lanes, 50)[:, :lanes]
    np.testing.assert_array_equal(dst[5 : 5 + 70 * lanes].reshape(lanes, 70)[:, :lanes], block.T)
    assert not dst[:5].any() and not dst[5 + 70 * (lanes - 1) + lanes :].any()
