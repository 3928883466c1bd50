"""jn.dropout: a counter-based mask computed inside the kernel, identical in every backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same

import jitnet as jn


def _mix32(x, key, shift, mult):
    y = (x ^ key) & 0xFFFFFFFF
    return ((y ^ (y >> shift)) * mult) & 0xFFFFFFFF


def _fmix32(x, key):
    x = _mix32(x, key, 16, 0x85EBCA6B)
    x = _mix32(x, 0, 13, 0xC2B2AE35)
    return _mix32(x, 0, 16, 1)


def _mask(shape, seed, rate):
    """The documented generator written with Python integers: fmix32(fmix32(i ^ k1) ^ k2)."""
    s = seed & 0xFFFFFFFF
    k1, k2 = _fmix32(s, 0), _fmix32(s, 0x9E3779B9)
    bits = np.array([_fmix32(_fmix32(i, k1), k2) for i in range(int(np.prod(shape)))], dtype=np.int64)
    return (bits >= round(rate * 2**32)).reshape(shape)


def _drop(backend, rate=0.3):
    return jn.compile(lambda x, s: jn.dropout(x, rate, s), backend=backend)


def test_mask_is_the_documented_hash_in_every_backend():
    x = np.arange(1, 1 + 6 * 37, dtype=np.float32).reshape(6, 37)
    for seed in (0, 7, -3, 2**40 + 5):
        want = np.where(_mask(x.shape, seed, 0.3), x / np.float32(0.7), 0).astype(np.float32)
        for backend in ("cpu", "interpret"):
            np.testing.assert_array_equal(_drop(backend)(x, seed).numpy(), want)


def test_keep_rate_and_scale():
    x = np.ones((200, 500), np.float32)
    f = _drop("cpu", 0.25)
    y = f(x, 11).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.005  # 100k Bernoulli(0.75): sd 0.0014
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    # no structure along rows or columns: every row and column keeps about 75%
    assert abs(kept.mean(0) - 0.75).max() < 0.12 and abs(kept.mean(1) - 0.75).max() < 0.12


def test_seed_is_a_runtime_input_deterministic_and_fresh():
    x = np.ones((50, 40), np.float32)
    f = _drop("cpu")
    a, b, c = f(x, 1).numpy(), f(x, 1).numpy(), f(x, 2).numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3  # independent masks differ in 2 * 0.3 * 0.7 = 42% of places
    assert f.traces == 1


def test_gradient_is_the_same_mask():
    x = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((30, 20)).astype(np.float32)

    def loss(x, s):
        return (jn.dropout(x, 0.4, s) * g).sum()

    for backend in ("cpu", "interpret"):
        grad = jn.compile(jn.grad(loss), backend=backend)(x, 5).numpy()
        want = np.where(_mask(x.shape, 5, 0.4), g / np.float32(0.6), 0).astype(np.float32)
        np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_rate_edges_and_eager():
    x = np.full((4, 5), 3.0, np.float32)
    assert_same(jn.dropout(x, 0.0, 1), x)
    assert_same(jn.dropout(x, 1.0, 1), np.zeros_like(x))
    assert_same(jn.dropout(x, 0.5, 3), _drop("interpret", 0.5)(x, 3))


def test_bad_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="rate must be in"):
        jn.dropout(x, 1.5, 0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        jn.dropout(x, 0.5, 1.5)


@pytest.mark.cuda
def test_cuda_mask_matches_interpreter():
    from jitnet.backends.cuda.device import cuda_available

    if not cuda_available():
        pytest.skip("needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1")
    x = np.arange(1, 65, dtype=np.float32).reshape(8, 8)
    got = _drop("cuda")(jn.asarray(x, device="cuda"), 9)
    assert got.device is jn.device("cuda")
    np.testing.assert_array_equal(got.numpy(), _drop("interpret")(x, 9).numpy())
