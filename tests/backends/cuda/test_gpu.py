"""CUDA kernels at real sizes on a real GPU: compiled vs interpreted, the split path of long
reductions with one and with many outputs, and zero-copy `__cuda_array_interface__` export.

Skipped unless a real GPU is usable (not the simulator, which is far too slow for these shapes):

    python -m pytest -q -m gpu
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same

import jitnet as jn
from jitnet.backends.cuda.device import cuda_available, simulator

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available() or simulator(), reason="needs a real CUDA GPU (not the simulator)"),
]

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape, dtype=np.float64).astype(dtype)


def check(fn, *args, rtol: float = 1e-5, atol: float = 1e-6):
    f = jn.compile(fn, backend="cuda")
    got = f(*args)
    want = jn.compile(fn, backend="interpret")(*args)
    for leaf in jn.ir.pytree.flatten(got)[0]:
        assert isinstance(leaf, jn.Array) and leaf.device.kind == "cuda"
    assert_same(got, want, rtol, atol)
    return f


def source(fn, *args) -> str:
    return jn.compile(fn, backend="cuda").inspect(*args)


def gelu(x):
    return 0.5 * x * (1 + jn.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


# ---- elementwise ----


def test_elementwise_2_20():
    x = randn(2**20)
    check(gelu, x, rtol=2e-5, atol=1e-6)
    check(lambda x, s: jn.sigmoid(x * s) - jn.exp(-jn.abs(x)), x, 0.5, rtol=2e-5, atol=1e-6)


def test_elementwise_broadcast_and_views_large():
    x, row, col = randn(1024, 1024), randn(1024), randn(1024, 1)
    check(lambda x, r, c: jn.maximum(x * r + c, 0.0) + x.T * 0.5, x, row, col)
    check(lambda x: jn.concatenate([x[::-1, ::2], jn.pad(x[:, 3::2], ((0, 0), (1, 0)))], axis=0) * 2, x)


def test_int_and_bool_large():
    a = rng.integers(-1000, 1000, 2**20).astype(np.int32)
    check(lambda a: (a * 3 + 1, a > 0, jn.where(a > 0, a, -a)), a)


# ---- reductions: the split path on hardware ----


@pytest.mark.parametrize("n", [2**16, 2**22, 3_000_001])
def test_long_vector_split_reductions(n):
    v = randn(n)
    assert "def partial(" in source(lambda v: v.sum(), v), "expected the split (two-kernel) path"
    check(lambda v: (v.sum(), v.max(), v.min(), (v * v).sum() * 0.5 + 1, v.mean()), v, rtol=1e-5, atol=1e-5)


def test_split_nan_and_int():
    v = randn(2**21)
    v[123_456] = np.nan
    got = jn.compile(lambda v: (v.max(), v.min(), v.sum()), backend="cuda")(v)
    assert all(np.isnan(np.asarray(g)) for g in got)
    a = rng.integers(-1000, 1000, 2**22).astype(np.int32)
    check(lambda a: (a.sum(), a.max(), a.min()), a)  # int64 accumulation: exact


@pytest.mark.parametrize(
    "shape, axis",
    [((8, 2**18), 1), ((64, 100_000), 1), ((100_000, 16), 0), ((4, 512, 257), (1, 2))],
    ids=["8_rows", "64_rows", "16_columns", "3d_two_axes"],
)
def test_split_with_several_outputs(shape, axis):
    x = randn(*shape)
    assert "def partial(" in source(lambda x: x.sum(axis), x), "expected the split (two-kernel) path"
    check(lambda x: (x.sum(axis) * 2 - 1, x.max(axis), x.min(axis, keepdims=True)), x, rtol=1e-5, atol=1e-4)


def test_row_reductions_without_split():
    x = randn(512, 4096)
    check(
        lambda x: (x.sum(1), x.max(1), jn.argmax(x, 1), jn.logsumexp(x, 1), x.mean(0), jn.argmax(x, 0)),
        x,
        rtol=2e-5,
        atol=1e-5,
    )


def test_long_argmax_and_logsumexp():
    v = randn(2**20)
    v[[77, 900_000]] = 10.0  # a tie: the first index wins
    f = check(lambda v: (jn.argmax(v), jn.logsumexp(v)), v, rtol=2e-5)
    assert int(np.asarray(f(v)[0])) == 77


# ---- row-wise ----


def test_softmax_4096x1024():
    x = randn(4096, 1024) * 3
    check(lambda x: jn.softmax(x, axis=-1), x, rtol=2e-5, atol=1e-7)
    check(lambda x: jn.log_softmax(x, axis=1) * 2 + 1, x, rtol=2e-5, atol=2e-5)


def test_softmax_columns_and_epilogue():
    x, b = randn(1024, 512), randn(512)
    check(lambda x, b: jn.softmax(x * 2 + b, axis=0) * (1 + x), x, b, rtol=2e-5, atol=1e-6)


def test_softmax_infinities():
    x = randn(256, 1024)
    x[0, :] = -np.inf
    x[1, 5] = np.inf
    x[2, 7] = np.nan
    x[3, ::2] = -np.inf
    check(lambda x: (jn.softmax(x, 1), jn.log_softmax(x, 1), jn.logsumexp(x, 1)), x, rtol=2e-5, atol=1e-6)


# ---- backward ----


def test_value_and_grad_large():
    def loss(x, w, b, y):
        h = jn.relu(x @ w + b)
        return -(jn.log_softmax(h, axis=1) * jn.one_hot(y, 10)).sum() / x.shape[0] + 1e-3 * (w * w).sum()

    x, w, b = randn(4096, 256), randn(256, 10) * 0.1, randn(10)
    y = rng.integers(0, 10, 4096).astype(np.int32)
    check(jn.value_and_grad(loss, argnums=(1, 2)), x, w, b, y, rtol=1e-4, atol=1e-5)


def test_default_backend_is_the_gpu(monkeypatch):
    monkeypatch.delenv("JITNET_BACKEND", raising=False)
    r = jn.compile(lambda x: x + 1)(np.ones(4, np.float32))
    assert r.device.kind == "cuda"


# ---- __cuda_array_interface__: zero-copy export ----


def _pointer(a: jn.Array) -> int:
    return a.buffer().device_ctypes_pointer.value


def test_cuda_array_interface_numba():
    from numba import cuda

    x = randn(1024, 257)
    a = jn.asarray(x, device="cuda")
    cai = a.__cuda_array_interface__
    assert cai["shape"] == (1024, 257) and np.dtype(cai["typestr"]) == np.float32
    d = cuda.as_cuda_array(a)
    assert d.shape == (1024, 257)
    assert d.__cuda_array_interface__["data"][0] == _pointer(a), "as_cuda_array copied"
    np.testing.assert_array_equal(d.copy_to_host(), x)
    d[0, 0:1].copy_to_device(np.array([42.0], np.float32))  # a write through the export shows in the Array
    assert a.numpy()[0, 0] == 42.0


def test_compiled_results_export_without_copy():
    from numba import cuda

    f = jn.compile(lambda x: jn.softmax(x, 1), backend="cuda")
    r = f(randn(64, 100))
    d = cuda.as_cuda_array(r)
    assert d.__cuda_array_interface__["data"][0] == _pointer(r)
    np.testing.assert_allclose(d.copy_to_host().sum(1), 1.0, rtol=1e-5)
    # exported buffers leave the pool for good: later calls must not overwrite them
    before = d.copy_to_host()
    del r
    for _ in range(3):
        f(randn(64, 100))
    np.testing.assert_array_equal(d.copy_to_host(), before)


def test_cuda_array_interface_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = randn(300, 7)
    a = jn.asarray(x, device="cuda")
    t = torch.as_tensor(a, device="cuda")
    assert t.data_ptr() == _pointer(a), "torch copied"
    assert tuple(t.shape) == (300, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.cpu().numpy(), x)
    t.add_(1)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(a.numpy(), x + 1)


def test_cuda_array_interface_cupy():
    cupy = pytest.importorskip("cupy")
    x = randn(300, 7)
    a = jn.asarray(x, device="cuda")
    c = cupy.asarray(a)
    assert c.data.ptr == _pointer(a), "cupy copied"
    np.testing.assert_array_equal(cupy.asnumpy(c), x)
