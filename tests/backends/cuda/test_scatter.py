"""The CUDA scatter_add kernels on their own (jitnet/backends/cuda/scatter.py): one segment (a
thread per output column), and the indices cut into segments whose partial sums a second kernel
adds in order (uneven runs, more segments asked for than indices), with repeated, negative and
out-of-range (clamped) indices, against numpy's np.add.at.

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/backends/cuda/test_scatter.py
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CUDA_MARKS
from simhelpers import run_source

from jitnet.backends.cuda import scatter

pytestmark = CUDA_MARKS

rng = np.random.default_rng(4)


def reference(out_shape, axis, ind, g):
    n = out_shape[axis]
    clamped = np.clip(np.where(ind < 0, ind + n, ind), 0, n - 1)
    out = np.zeros(out_shape, g.dtype)
    np.add.at(out, (slice(None),) * axis + (clamped,), g)
    return out


@pytest.mark.parametrize("segments", [1, 3, 7, 50])
@pytest.mark.parametrize("out_shape, axis", [((5, 3), 0), ((2, 4, 3), 1)], ids=str)
def test_segments_against_numpy(out_shape, axis, segments):
    n_indices = 7
    ind = np.array([1, -1, 1, 9, 0, 1, -9], np.int64)  # repeats, negative, clamped both ways
    g = rng.standard_normal(out_shape[:axis] + (n_indices,) + out_shape[axis + 1 :]).astype(np.float32)
    source = scatter.scatter_add_source(out_shape, axis, n_indices, np.float32, segments=segments)
    assert ("def combine" in source) == (segments > 1)
    got = run_source(source, out_shape, np.float32, g, ind)
    np.testing.assert_allclose(got, reference(out_shape, axis, ind, g), rtol=1e-6, atol=1e-6)


def test_segments_fill_the_gpu_within_the_scratch_limit():
    """An embedding's gradient (96 x 128 table, 2048 indices): 128 columns -> 512 segments; a huge
    table keeps its partial sums under SCRATCH_MAX; a wide output needs one segment."""
    assert scatter.segments_for(128, 96 * 128, 2048) == scatter.SCATTER_THREADS // 128
    assert scatter.segments_for(768, 50000 * 768, 8192) * 50000 * 768 <= max(scatter.SCRATCH_MAX, 50000 * 768)
    assert scatter.segments_for(scatter.SCATTER_THREADS, 10**6, 100) == 1
    assert scatter.segments_for(4, 40, 3) == 3  # never more segments than indices
