"""What only the CUDA kernels do: the split path's two kernels, the launch configuration's edges,
softmax over an empty axis, and `inspect` showing `cuda.jit` source. The op-by-op differential suite
for every backend is tests/codegen/test_kernels.py.

Runs under numba's CUDA simulator (no GPU needed) or on a real GPU; skipped when neither is there:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda

In the simulator a block has 32 threads and a grid at most 4 blocks, and reductions of at least 256
elements per output take the split (two-kernel) path (jitnet/backends/cuda/kernels.py: BLOCK,
MAX_BLOCKS, SPLIT_MIN); on a GPU the split path starts at 65536 elements.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CUDA_MARKS, check, on_device

import jitnet as jn
from jitnet.backends.cuda.device import simulator

pytestmark = CUDA_MARKS

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def split_min() -> int:
    """The reduction length from which the kernels this process generates take the split path."""
    from jitnet.backends.cuda import kernels

    return kernels.SPLIT_MIN


def source(fn, *args) -> str:
    return jn.compile(fn, backend="cuda").inspect(*args)


def splits(fn, *args) -> bool:
    src = source(fn, *args)
    return "def partial(" in src and "def finish(" in src


# ---- split path: a long reduction spread over blocks, combined by a second kernel ----


def test_split_path_is_taken():
    """From SPLIT_MIN elements a whole-array sum splits (and still agrees); from half of it, not."""
    n = split_min()
    v = randn(max(1000, n))
    assert splits(lambda v: v.sum(), v)
    check(lambda v: v.sum(), v, backend="cuda", rtol=1e-5, atol=1e-5)
    assert not splits(lambda v: v.sum(), randn(max(2, n // 2)))


# The long-reduction shapes of tests/codegen/test_kernels.py, which reach SPLIT_MIN in the simulator.
SHARED_LONG = {
    "long_1000": (lambda v: v.sum(), (1000,)),
    "long_2999": (lambda v: v.max() - v.min(), (2999,)),
    "long_2d": (lambda x: (x.sum(), x.T.max(), x[::-1, ::2].min()), (40, 50)),
    "nan_inf": (lambda v: (v.max(), v.min(), v.sum()), (1500,)),
    "grad": (jn.value_and_grad(lambda v: (v * v).sum() + v.max()), (1200,)),
    "sibling_outputs": (jn.value_and_grad(lambda x: jn.sum(jn.tanh(x) * x)), (600,)),
    "sharing_a_loop": (lambda x, y: ((x * y).sum(1), y.sum(1, keepdims=True) * 2, jn.exp(y) + x), (1, 600), (1, 600)),
}


@pytest.mark.skipif(not simulator(), reason="SPLIT_MIN is 65536 on a GPU: these shapes take the block path there")
@pytest.mark.parametrize("name", list(SHARED_LONG))
def test_shared_long_shapes_take_the_split_path(name):
    fn, *shapes = SHARED_LONG[name]
    assert splits(fn, *(randn(*s) for s in shapes))


def test_argmax_and_logsumexp_do_not_split():
    """Only sum, max and min split: argmax and logsumexp of a long vector stay on one block per output."""
    v = randn(max(1000, split_min()))
    assert not splits(lambda v: jn.argmax(v), v)
    assert not splits(lambda v: jn.logsumexp(v), v)


# ---- softmax over an empty axis ----

# Over a zero-length axis the reference interpreter raises (numpy's max of an empty array; the CPU
# backend gives what numpy's formulas do), so these compare with the expected values directly.


def test_softmax_over_empty_axis():
    got = jn.compile(lambda x: jn.softmax(x, 0) + 1, backend="cuda")(np.zeros((0, 4), np.float32))
    on_device(got, "cuda")
    assert np.asarray(got).shape == (0, 4)


def test_log_softmax_logsumexp_over_empty_axis():
    ls, lse = jn.compile(lambda x: (jn.log_softmax(x, 0), jn.logsumexp(x, 0)), backend="cuda")(
        np.zeros((0, 4), np.float32)
    )
    assert np.asarray(ls).shape == (0, 4)
    np.testing.assert_array_equal(np.asarray(lse), np.full(4, -np.inf, np.float32))


# ---- the generated source ----


def test_inspect_shows_cuda_source():
    text = source(lambda x: x.sum(1) * 2, randn(3, 5))
    assert "cuda.jit" in text and "cuda.shared.array" in text


@pytest.mark.parametrize("extra", [-1, 0, 1, 97])
def test_unrolled_elementwise_edges(extra):
    """Elementwise kernels take UNROLL elements per thread per step and the last partial step one at
    a time: sizes around whole steps of the grid, with a sibling output and a broadcast operand."""
    from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS, UNROLL

    n = 2 * UNROLL * BLOCK * MAX_BLOCKS + extra
    x, b = randn(n, 1), randn(1, 3)
    source = jn.compile(lambda a, c: a + c, backend="cuda").inspect(x, b)
    assert f"range(start, {3 * n}, {UNROLL} * stride)" in source
    check(lambda a, c: (jn.tanh(a) * c + a, a * c - 1.0), x, b, backend="cuda")


@pytest.mark.parametrize("extra", [0, 1])
def test_softmax_rows_cached_in_registers_or_not(extra):
    """Rows of up to ROW_CACHE * BLOCK elements are read once into each thread's local array; longer
    rows are read in each pass. Both with a fused producer, an epilogue and -inf entries."""
    from jitnet.backends.cuda.kernels import BLOCK, ROW_CACHE

    row = ROW_CACHE * BLOCK + extra
    x = randn(3, row)
    x[1, 5] = -np.inf
    fn = lambda a: (jn.softmax(a * 2.0 + 1.0, axis=1) * a, jn.log_softmax(a, axis=1))
    assert ("cuda.local.array" in source(fn, x)) == (extra == 0)
    with np.errstate(invalid="ignore"):  # -inf * 0 in the epilogue: NaN on every backend
        check(fn, x, backend="cuda", rtol=1e-5, atol=1e-6)
