"""The generated CUDA matmul kernel (jitnet/backends/cuda/matmul.py) against numpy in float64.

Runs under numba's CUDA simulator (no GPU needed) or on a real GPU; skipped when neither is there:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/backends/cuda/test_matmul.py

Under the simulator the tile rule picks from SIM_TILES (16 threads a block) and the grid's z limit
is tiny, so small shapes still cover partial tiles on every edge, the grouped block order, several
K steps with prefetch, a partial last K step and the loop over batches. Every tile of both sets
(the GPU set has 256 threads a block) runs at least once, forced with `tile=`, on tiny matrices.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import CUDA_MARKS

from jitnet.backends.cuda import matmul as mm
from jitnet.backends.cuda.device import simulator
from jitnet.codegen import cache

pytestmark = CUDA_MARKS

rng = np.random.default_rng(0)


def operands(m, n, k, batch, dtype, a_trans, b_trans):
    a = rng.standard_normal((batch, k, m) if a_trans else (batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, n, k) if b_trans else (batch, k, n)).astype(dtype)
    return a, b


def reference(a, b, a_trans, b_trans):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a.transpose(0, 2, 1) if a_trans else a) @ (b.transpose(0, 2, 1) if b_trans else b)


def run(a, b, m, n, k, batch, a_trans=False, b_trans=False, tile=None):
    """The kernel's result, from an output poisoned with NaN (every element must be written)."""
    from numba import cuda

    dtype = a.dtype
    launch = cache.load(mm.matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile), "launch")
    out = cuda.to_device(np.full(batch * m * n, np.nan, dtype))
    launch(out, cuda.to_device(a.reshape(-1)), cuda.to_device(b.reshape(-1)))
    return out.copy_to_host().reshape(batch, m, n)


def check(m, n, k, batch=1, dtype=np.float32, a_trans=False, b_trans=False, tile=None):
    a, b = operands(m, n, k, batch, dtype, a_trans, b_trans)
    got = run(a, b, m, n, k, batch, a_trans, b_trans, tile)
    want = reference(a, b, a_trans, b_trans)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.sqrt(k)))
    return got


# ---- shapes: partial tiles on every edge, vectors, K = 1, batches, layouts, float64 ----


@pytest.mark.parametrize(
    "m, n, k",
    [(1, 1, 1), (3, 7, 9), (9, 17, 7), (17, 3, 1), (7, 9, 17), (8, 8, 8), (16, 16, 12)],
)
def test_shapes_not_multiples_of_the_tile(m, n, k):
    check(m, n, k)


@pytest.mark.parametrize("m, n, k", [(1, 17, 9), (17, 1, 9), (1, 1, 17), (1, 9, 1), (9, 1, 1)])
def test_vectors_and_k1(m, n, k):
    check(m, n, k)


@pytest.mark.parametrize("a_trans, b_trans", [(False, True), (True, False), (True, True)])
def test_transposed_operands(a_trans, b_trans):
    check(9, 7, 13, a_trans=a_trans, b_trans=b_trans)


@pytest.mark.parametrize("a_trans, b_trans", [(False, False), (True, True)])
def test_batched(a_trans, b_trans):
    check(5, 9, 7, batch=3, a_trans=a_trans, b_trans=b_trans)


def test_batches_past_the_grid_z_limit_loop():
    batch = mm.MAX_GRID_Z + 2
    assert "for z in range(cuda.blockIdx.z" in mm.matmul_source(3, 5, 4, batch, np.float32, False, False)
    check(3, 5, 4, batch=batch, b_trans=True)


def test_float64():
    check(7, 9, 17, dtype=np.float64)
    check(5, 3, 9, batch=2, dtype=np.float64, a_trans=True, b_trans=True)


def test_grouped_block_order_and_long_k():
    """More tile rows than GROUP_M (the grouped order with a partial last group) and many K steps
    (the prefetch loop, then a partial one)."""
    t = mm.SIM_TILES["4x4x4_1x1"] if simulator() else mm.TILES["16x16x16_1x1"]
    m = t.bm * (2 * mm.GROUP_M + 1) - 1
    src = mm.matmul_source(m, 2 * t.bn, 5 * t.bk + 3, 1, np.float32, False, False, t)
    assert "first = " in src and "for k0 in range(" in src
    check(m, 2 * t.bn, 5 * t.bk + 3, tile=t)


def test_nan_and_inf_propagate_only_where_numpy_puts_them():
    m, n, k = 6, 7, 9
    a, b = operands(m, n, k, 1, np.float32, False, False)
    a[0, 2, 4] = np.nan  # row 2 of the product is all NaN
    b[0, 3, 5] = np.inf  # column 5: inf (or NaN where a row also has the NaN)
    got = run(a, b, m, n, k, 1)
    want = reference(a, b, False, False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[0, 2]).all() and np.isinf(got[0, 0, 5])
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_empty_outputs_and_k0():
    a, b = operands(0, 5, 3, 1, np.float32, False, False)
    assert run(a, b, 0, 5, 3, 1).shape == (1, 0, 5)
    a, b = operands(3, 4, 0, 2, np.float32, False, False)
    np.testing.assert_array_equal(run(a, b, 3, 4, 0, 2), np.zeros((2, 3, 4), np.float32))


# ---- every tile of both sets, forced with tile= ----


@pytest.mark.parametrize("name", list(mm.SIM_TILES))
def test_every_simulator_tile(name):
    t = mm.SIM_TILES[name]
    # two tiles' worth plus a ragged edge in M and N; three full K steps and a partial one
    check(t.bm + 3, t.bn + 1, 3 * t.bk + 1, tile=name)
    check(t.bm - 1, 2 * t.bn, 2 * t.bk, batch=2, a_trans=True, b_trans=True, tile=t)
    check(3, 2, t.bk + 1, dtype=np.float64, b_trans=True, tile=dataclasses.replace(t, prefetch=False))


@pytest.mark.parametrize("name", list(mm.TILES))
def test_every_gpu_tile(name):
    """The GPU set's tiles (256 threads a block: one block in the simulator), on tiny matrices."""
    t = mm.TILES[name]
    check(5, 7, 2 * t.bk + 3, tile=name)
    check(3, 4, t.bk + 1, dtype=np.float64, a_trans=True, b_trans=True, tile=t)


# ---- the generator's claims: the tile rule, the layouts, the source ----


def test_tile_rule():
    big = list(mm.TILES.values())
    assert mm.choose_tile(4096, 4096, 4096, tiles=mm.TILES) == mm.TILES["128x128x8_8x8"]
    assert mm.choose_tile(2048, 2048, 2048, tiles=mm.TILES) == mm.TILES["128x128x8_8x8"]
    assert mm.choose_tile(1024, 1024, 1024, tiles=mm.TILES) == mm.TILES["64x64x8_4x4"]
    assert mm.choose_tile(1024, 1024, 1024, batch=8, tiles=mm.TILES) == mm.TILES["128x128x8_8x8"]
    assert mm.choose_tile(8, 8, 8, tiles=mm.TILES) == big[-1]  # nothing fills the GPU: most blocks
    for shape in [(1, 4096, 4096), (4096, 1, 64), (100, 100, 100), (3, 5, 7)]:
        assert mm.choose_tile(*shape, tiles=mm.TILES) in big
    assert mm.resolve_tile(None, 9, 9, 9) in mm.tile_set().values()
    assert mm.resolve_tile("128x64x8_8x4", 1, 1, 1) == mm.TILES["128x64x8_8x4"]
    with pytest.raises(ValueError):
        mm.resolve_tile("7x7x7_1x1", 1, 1, 1)
    with pytest.raises(ValueError):
        mm.Tile(64, 64, 8, 3, 4)


def test_cgma_formula():
    t = mm.TILES["128x128x8_8x8"]
    assert t.cgma() == 2 * 128 * 128 * 8 / (4 * (128 * 8 + 8 * 128)) == 32
    assert mm.TILES["64x64x8_4x4"].cgma() == 16 and mm.TILES["64x64x8_4x4"].cgma(8) == 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_memory_is_conflict_free(dtype):
    """Stores (transposed where global memory is k-contiguous) and inner-loop reads: one word per
    bank per warp, thanks to the generated pads; without the pad the transposed store conflicts."""
    for t in mm.TILES.values():
        for a_trans in (False, True):
            for b_trans in (False, True):
                assert set(mm.smem_conflicts(t, dtype, a_trans, b_trans).values()) == {1}, (t.name, a_trans, b_trans)
    t = mm.TILES["128x128x8_8x8"]
    unpadded = mm._store_degree(t, 4, t.bm, lambda th, s: mm._swap(mm._a_slot(t, False, th, s)))
    assert unpadded >= 4


def test_global_loads_are_coalesced():
    """Within a warp and a load slot, consecutive threads read consecutive addresses of the
    operand's global layout, in runs of at least 8 elements (one 32-byte sector of float32)."""
    m, n, k = 1 << 12, 1 << 12, 1 << 12
    for t in mm.TILES.values():
        for trans in (False, True):
            for slot in range(-(-t.bm * t.bk // t.threads)):
                addr = [
                    (c * m + r) if trans else (r * k + c)
                    for r, c in (mm._a_slot(t, trans, th, slot) for th in range(32))
                ]
                runs = np.split(np.arange(32), np.where(np.diff(addr) != 1)[0] + 1)
                assert min(len(r) for r in runs) >= min(8, t.bk if not trans else t.bm), (t.name, trans, slot)
            for slot in range(-(-t.bk * t.bn // t.threads)):
                addr = [
                    ((col * k + c) if trans else (c * n + col))
                    for c, col in (mm._b_slot(t, trans, th, slot) for th in range(32))
                ]
                runs = np.split(np.arange(32), np.where(np.diff(addr) != 1)[0] + 1)
                assert min(len(r) for r in runs) >= min(8, t.bk if trans else t.bn), (t.name, trans, slot)


def test_source_structure():
    """Register tiling as separate scalars, explicit signature, shapes baked in, guards only where
    the shape needs them."""
    t = mm.TILES["128x128x8_8x8"]
    src = mm.matmul_source(256, 256, 64, 1, np.float32, False, False, t)
    assert "@cuda.jit(void(float32[::1], float32[::1], float32[::1]), cache=True)" in src
    assert src.count("cuda.shared.array(") == 2 and "c7_7 = np.float32(0.0)" in src
    assert "cuda.fma(a7, b7, c7_7)" in src
    assert " if " not in src.split("def kernel")[1]  # multiples of the tile: no guard at all
    assert "launch = Plan(3, [Launch(kernel, (4, 1, 1), 256, (0, 1, 2))])" in src
    ragged = mm.matmul_source(250, 255, 63, 1, np.float32, False, False, t)
    assert "< 250" in ragged and "< 255" in ragged and "< 7" in ragged
    assert mm.matmul_source(3, 3, 3, 1, np.float64, True, True) != mm.matmul_source(3, 3, 3, 1, np.float64, False, True)
    with pytest.raises(TypeError):
        mm.matmul_source(3, 3, 3, 1, np.bool_, False, False)
