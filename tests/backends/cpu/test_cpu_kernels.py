"""What only the CPU kernels do: loops split across threads on arrays large enough to pay for it,
float32 sums accurate over millions of terms, reductions over a contiguous trailing run, and kernel
sources independent of trace order. The op-by-op differential suite for every backend is
tests/codegen/test_kernels.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import assert_same, check

import jitnet as jn
from jitnet.backends.cpu.kernels import PARALLEL_MIN_WORK

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def randint(*shape, dtype=np.int32, lo=-5, hi=6):
    return rng.integers(lo, hi, shape).astype(dtype)


X = randn(3, 5)

# ---- kernels large enough to run in parallel ----

BIG = randn(256, 300)
PARALLEL_LOOP = re.compile(r"^    nt = num_threads\(\)$", re.M)  # a chunked kernel on every thread
assert BIG.size >= 2 * PARALLEL_MIN_WORK


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: jn.exp(a) * 2 + a,
        lambda a: a.T * 2,
        lambda a: (jn.sum(a * a), jn.max(a[::-1]), jn.min(jn.abs(a), (0, 1))),
        lambda a: a.sum(1),
        lambda a: a.max(0),
        lambda a: (a.reshape(-1, 4).sum(0), a.reshape(-1, 4).max(0)),
        lambda a: jn.argmax(a),
        lambda a: jn.logsumexp(a),
        lambda a: jn.softmax(a),
        lambda a: jn.log_softmax(a, 0),
    ],
    ids=[
        "elementwise",
        "transpose",
        "whole_fused",
        "rows",
        "cols",
        "few_columns",
        "argmax",
        "logsumexp",
        "softmax",
        "log_softmax_axis0",
    ],
)
def test_parallel(fn):
    f = jn.compile(fn, backend="cpu")
    assert_same(f(BIG), jn.compile(fn, backend="interpret")(BIG), rtol=1e-4, atol=1e-4)
    assert any(PARALLEL_LOOP.search(src) for src in f.lower(BIG).sources)


def _whole(a):
    return a.sum(), a.max(), a.min(), jn.argmax(a)


WHOLE = jn.compile(_whole, backend="cpu")


def test_parallel_whole_reductions():
    assert_same(WHOLE(BIG), jn.compile(_whole, backend="interpret")(BIG), rtol=1e-4, atol=1e-4)
    (split,) = [src for src in WHOLE.lower(BIG).sources if "part_acc" in src]
    assert PARALLEL_LOOP.search(split) and "# max sum min" in split, "whole-array sum, max and min share one split loop"


@pytest.mark.parametrize("where", [0, 9000, 40000, BIG.size - 1])
def test_parallel_whole_reductions_with_nan(where):
    """Whole-array max/min split across threads still let NaN win, wherever it is."""
    x = BIG.copy().reshape(-1)
    x[(where + 12345) % x.size] = np.inf
    x[(where + 23456) % x.size] = -np.inf
    x[where] = np.nan
    total, hi, lo, arg = (np.asarray(v) for v in WHOLE(x.reshape(BIG.shape)))
    assert np.isnan(total) and np.isnan(hi) and np.isnan(lo)
    assert arg == where


def test_parallel_whole_reductions_with_infinities():
    x = BIG.copy()
    x[100, 7] = x[200, 9] = np.inf
    x[3, 250] = -np.inf
    total, hi, lo, arg = (np.asarray(v) for v in WHOLE(x))
    assert np.isnan(total) and hi == np.inf and lo == -np.inf and arg == 100 * BIG.shape[1] + 7


def test_parallel_int_reductions():
    x = randint(300, 256, dtype=np.int32, lo=-1000, hi=1000)
    check(lambda a: (a.sum(), a.max(), a.sum(0)), x)


def test_kernel_source_does_not_depend_on_trace_order():
    """The kernel cache is keyed by source: the same function traced again must give the same source."""

    def fn(a):
        return jn.exp(a) * 2 - a.sum(0)

    first = jn.compile(fn, backend="cpu").lower(X).sources
    jn.compile(lambda a: a + 1, backend="cpu").lower(X)
    assert jn.compile(fn, backend="cpu").lower(X).sources == first


@pytest.mark.parametrize("shape, axis", [((1 << 22,), None), ((3, 300_000), 1), ((5, 9000), 1)])
def test_float32_sums_stay_accurate(shape, axis):
    """float32 sums add blocks of BLOCK_SUM terms in float32 and the blocks in float64: over millions
    of terms the result is within a few float32 ulps of the float64 sum (a plain float32 running
    sum of 0.1s is off by ~1e-3 relative after 2**22 terms)."""
    x = np.full(shape, 0.1, np.float32) + np.random.default_rng(0).random(shape, np.float32) * 1e-3
    f = jn.compile(lambda x: (x.sum(axis), jn.logsumexp(x, axis)), backend="cpu")
    s, lse = f(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(s), x64.sum(axis), rtol=3e-7)
    np.testing.assert_allclose(np.asarray(lse), np.log(np.exp(x64).sum(axis)), rtol=3e-7)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_reduction_over_a_contiguous_trailing_run(parallel):
    """Reduced dims that end the input run in an inner loop of their own (r = ro * run + ri): sums and
    extrema as over the flat reduced index, NaN included, beside plain last-axis reductions."""
    n = 64 if parallel else 3
    x = randn(n, 20, 5, 40)
    x[1, 3, 2, 17] = np.nan

    def f(a):
        return (
            jn.sum(a, axis=(0, 2, 3)),
            jn.max(a * 2, axis=(0, 2, 3)),
            jn.min(a, axis=(2, 3)),
            jn.argmax(a.reshape(n, 4000), 1),
        )

    got = check(f, x, rtol=1e-4, atol=1e-4)
    assert np.isnan(np.asarray(got[0])[3]) and np.isnan(np.asarray(got[1])[3])
    sources = jn.compile(f, backend="cpu").lower(x).sources
    assert any("for ri in range(200):" in s for s in sources)
