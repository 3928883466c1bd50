"""The CUDA device: `jn.device("cuda")`, device Arrays, transfers, compute following the data,
buffer reuse, and the error without a GPU.

Runs under numba's CUDA simulator (or on a real GPU); skipped when neither is there:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
from helpers import CUDA_MARKS

import jitnet as jn
from jitnet.backends import default_backend
from jitnet.backends.cuda.device import simulator

pytestmark = CUDA_MARKS

M = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
N = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


def gpu(x) -> jn.Array:
    return jn.asarray(x, device="cuda")


def on_cuda(a) -> np.ndarray:
    assert isinstance(a, jn.Array), type(a)
    assert a.device is jn.device("cuda"), a.device
    return np.asarray(a)


# ---- the device ----


def test_device_cuda():
    d = jn.device("cuda")
    assert d.kind == "cuda"
    assert repr(d) == "device('cuda')"
    assert jn.device("cuda") is d
    assert jn.device(d) is d
    assert d is not jn.device("cpu")


def test_default_backend(monkeypatch):
    """The simulator is never the default (it is for tests); a real GPU is; JITNET_BACKEND overrides."""
    monkeypatch.delenv("JITNET_BACKEND", raising=False)
    expect = "cpu" if simulator() else "cuda"
    assert default_backend() == expect
    assert jn.default_device() is jn.device(expect)
    monkeypatch.setenv("JITNET_BACKEND", "cuda")
    assert default_backend() == "cuda"
    assert jn.default_device() is jn.device("cuda")
    r = jn.compile(lambda x: x * 2)(M)  # numpy inputs, no backend: the default, now CUDA
    np.testing.assert_array_equal(on_cuda(r), M * 2)


# ---- Arrays on the device ----

ROUND_TRIP = {
    "f32": M,
    "f64": M.astype(np.float64),
    "i32": np.arange(-3, 4, dtype=np.int32),
    "i64": np.arange(12, dtype=np.int64).reshape(3, 1, 4),
    "bool": M > 0,
    "0d": np.float32(3.5),
    "empty": np.zeros((0, 3), np.float32),
    "transposed": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)).T,
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_asarray_round_trip(name):
    x = ROUND_TRIP[name]
    a = gpu(x)
    assert a.device is jn.device("cuda")
    assert a.shape == np.shape(x) and a.dtype == np.asarray(x).dtype and a.ndim == np.ndim(x)
    host = a.numpy()
    assert isinstance(host, np.ndarray) and host.shape == np.shape(x) and host.dtype == a.dtype
    np.testing.assert_array_equal(host, x)
    np.testing.assert_array_equal(np.asarray(a), x)
    np.testing.assert_array_equal(np.array(a, dtype=np.float64), np.asarray(x, dtype=np.float64))


def test_asarray_copies_host_data_in():
    x = M.copy()
    a = gpu(x)
    x[:] = 100
    np.testing.assert_array_equal(a.numpy(), M)
    h = a.numpy()
    with pytest.raises(ValueError):
        h[0, 0] = 1  # read-only, like CPU arrays' numpy()
    np.testing.assert_array_equal(a.numpy(), M)


def test_asarray_python_values():
    a = gpu([1.5, 2.0])
    assert a.dtype == np.float32 and a.device.kind == "cuda"
    b = gpu(3)
    assert b.dtype == np.int64 and b.shape == () and b.item() == 3
    c = jn.asarray(M, device="cuda", dtype=np.float64)
    assert c.dtype == np.float64
    np.testing.assert_array_equal(c.numpy(), M)


def test_move_between_devices():
    c = jn.asarray(M)
    g = jn.asarray(c, device="cuda")
    assert g.device.kind == "cuda" and c.device.kind == "cpu"
    back = jn.asarray(g, device="cpu")
    assert back.device.kind == "cpu"
    np.testing.assert_array_equal(back.numpy(), M)
    assert jn.asarray(g) is g
    assert jn.asarray(g, device="cuda") is g
    assert jn.asarray(g, device=jn.device("cuda")) is g
    assert jn.asarray(g, dtype=np.float64).device.kind == "cuda"


def test_repr_len_item_iter():
    a = gpu(M)
    assert "device='cuda'" in repr(a) and "dtype=float32" in repr(a)
    assert len(a) == 2
    assert gpu(np.float32(2.5)).item() == 2.5 and float(gpu(np.float32(2.5))) == 2.5
    assert a.tolist() == M.tolist()
    rows = list(a)
    assert len(rows) == 2
    np.testing.assert_array_equal(on_cuda(rows[1]), M[1])


# ---- compute follows the data ----


def test_compiled_function_follows_the_data():
    f = jn.compile(lambda x, y: x * y + 1)
    r = f(gpu(M), gpu(N))
    np.testing.assert_allclose(on_cuda(r), M * N + 1)
    host = f(M, N)  # numpy inputs: the default device
    assert host.device is jn.default_device()
    mixed = f(gpu(M), N)  # one CUDA Array is enough: the numpy operand is copied over
    np.testing.assert_allclose(on_cuda(mixed), M * N + 1)
    assert f.lower(gpu(M), gpu(N)).device.kind == "cuda"


def test_explicit_backend_wins():
    g = gpu(M)
    r = jn.compile(lambda x: x + 1, backend="cpu")(g)
    assert r.device.kind == "cpu"
    np.testing.assert_array_equal(np.asarray(r), M + 1)
    i = jn.compile(lambda x: x + 1, backend="interpret")(g)
    np.testing.assert_array_equal(np.asarray(i), M + 1)
    c = jn.compile(lambda x: x + 1, backend="cuda")(M)
    np.testing.assert_array_equal(on_cuda(c), M + 1)


def test_eager_ops_follow_the_data():
    g = gpu(M)
    np.testing.assert_array_equal(on_cuda(g + 1), M + 1)
    np.testing.assert_array_equal(on_cuda(g * g), M * M)
    np.testing.assert_array_equal(on_cuda(g.T), M.T)
    np.testing.assert_array_equal(on_cuda(g[::-1, 1:]), M[::-1, 1:])
    np.testing.assert_array_equal(on_cuda(g.sum(1)), M.sum(1))
    np.testing.assert_allclose(on_cuda(jn.exp(g)), np.exp(M), rtol=1e-6)
    np.testing.assert_array_equal(on_cuda(g > 0), M > 0)


def test_scalar_arguments_on_cuda_do_not_retrace():
    f = jn.compile(lambda x, s: x * s + s)
    g = gpu(M)
    for s in (2.0, -1.5, 0.25):
        np.testing.assert_allclose(on_cuda(f(g, s)), M * np.float32(s) + np.float32(s))
    assert f.traces == 1


def test_captured_arrays_are_moved_to_the_device():
    w_cpu, w_gpu = jn.asarray(N), gpu(N)
    f = jn.compile(lambda x: x * w_cpu + w_gpu)
    np.testing.assert_allclose(on_cuda(f(gpu(M))), M * N + N)


def test_pytree_outputs_on_device():
    f = jn.compile(lambda x, y: {"s": x + y, "t": (x.sum(0), [y * 2])})
    out = f(gpu(M), gpu(N))
    np.testing.assert_allclose(on_cuda(out["s"]), M + N)
    np.testing.assert_allclose(on_cuda(out["t"][0]), M.sum(0))
    np.testing.assert_allclose(on_cuda(out["t"][1][0]), N * 2)


# ---- transfers: what is copied and what is not ----


def _record_kernel_inputs(f, *args) -> list:
    """Wrap the first kernel of f's program for these args; returns the list its inputs go to."""
    step = f.lower(*args).program.steps[0]
    seen, fn = [], step.fn

    def recording(out, *ins):
        seen.append(ins)
        return fn(out, *ins)

    step.fn = recording
    return seen


def test_cuda_arrays_are_passed_not_copied(monkeypatch):
    f = jn.compile(lambda x: x * 2 + 1, backend="cuda")
    g = gpu(M)
    f(g)  # compiled and constants placed
    dev = jn.device("cuda")
    puts = []
    real_put = dev.put
    monkeypatch.setattr(dev, "put", lambda host: puts.append(host.shape) or real_put(host))
    seen = _record_kernel_inputs(f, g)
    r = f(g)
    assert puts == [], "a CUDA Array input was copied"
    assert seen[-1][0] is g.buffer(), "the kernel did not get the Array's own buffer"
    np.testing.assert_array_equal(on_cuda(r), M * 2 + 1)


def test_empty_numpy_input_with_numbas_own_allocator(monkeypatch):
    """An empty host array is uploaded without a copy call: numba compares the strides of empty arrays
    (a flattened (2, 0) array has stride 0, a fresh device array the item size) and raises. The
    session's driver-like allocator hides this, so the device's own allocator is put back here."""
    from numba import cuda

    monkeypatch.setattr(jn.device("cuda").pool, "allocate", cuda.device_array)
    out = jn.compile(lambda x: x * 2, backend="cuda")(np.zeros((2, 0), np.float32))
    assert out.shape == (2, 0) and out.numpy().shape == (2, 0)


def test_numpy_inputs_are_copied_to_the_device(monkeypatch):
    f = jn.compile(lambda x: x * 2 + 1, backend="cuda")
    x = M.copy()
    f(x)
    dev = jn.device("cuda")
    puts = []
    real_put = dev.put
    monkeypatch.setattr(dev, "put", lambda host: puts.append(host.shape) or real_put(host))
    r = f(x)
    assert puts == [(6,)]  # one transfer per call, of the flat input
    x[:] = 100  # the result does not alias the host data
    np.testing.assert_array_equal(on_cuda(r), M * 2 + 1)


def test_outputs_that_are_inputs_are_copies():
    f = jn.compile(lambda x, y: (x, y * 1, x, y))
    g, h = gpu(M), gpu(N)
    a, b, c, d = f(g, h)
    for out in (a, c):
        assert out.buffer() is not g.buffer()
        np.testing.assert_array_equal(on_cuda(out), M)
    assert a.buffer() is not c.buffer()
    assert d.buffer() is not h.buffer()
    np.testing.assert_array_equal(on_cuda(d), N)
    del a, b, c, d
    gc.collect()
    for _ in range(3):  # the pool hands the copies' buffers out again: the inputs must not change
        f(gpu(N), gpu(M))
    np.testing.assert_array_equal(g.numpy(), M)
    np.testing.assert_array_equal(h.numpy(), N)


# ---- the device pool ----


def test_pool_reuses_result_buffers():
    f = jn.compile(lambda x: x * 3)
    g = gpu(M)
    r = f(g)
    ref = weakref.ref(r.buffer())
    del r
    gc.collect()
    assert ref() is not None, "a dropped result's buffer was not kept by the pool"
    r2 = f(g)
    assert r2.buffer() is ref(), "the next call did not reuse the pooled buffer"
    np.testing.assert_array_equal(on_cuda(r2), M * 3)


def test_pool_reuse_does_not_corrupt_kept_results():
    """Results kept across calls while others are dropped, through a program with intermediates."""
    f = jn.compile(lambda x: (jn.softmax(x * 2, 1) + x.sum(1, keepdims=True), jn.exp(x) - 1))
    g = jn.compile(f.fn, backend="interpret")
    rng = np.random.default_rng(1)
    kept = []
    for i in range(6):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        out = f(gpu(x))
        if i % 2 == 0:
            kept.append((out, g(x)))
        del out
        gc.collect()
    for got, want in kept:
        for a, b in zip(got, want):
            np.testing.assert_allclose(on_cuda(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_dropping_an_input_array_recycles_it_safely():
    f = jn.compile(lambda x: x + 1)
    keep = f(gpu(M))
    for _ in range(4):
        tmp = gpu(N)
        f(tmp)
        del tmp
        gc.collect()
    np.testing.assert_array_equal(on_cuda(keep), M + 1)


# ---- __cuda_array_interface__ ----


def test_cuda_array_interface_only_on_cuda():
    c = jn.asarray(M)
    assert not hasattr(c, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="cuda"):
        c.__cuda_array_interface__  # noqa: B018


@pytest.mark.skipif(simulator(), reason="the simulator's device arrays have no __cuda_array_interface__")
def test_cuda_array_interface_on_gpu():
    g = gpu(M)
    cai = g.__cuda_array_interface__
    assert cai["shape"] == (2, 3)
    assert np.dtype(cai["typestr"]) == np.float32
    assert cai["data"][0] == g.buffer().device_ctypes_pointer.value
    assert g._storage.reclaimed() is False and g._storage._claim is None  # exported: never recycled


# ---- no GPU: a clear error ----

_NO_GPU_SCRIPT = r"""
import json
import numpy as np
import jitnet as jn
from jitnet.backends import default_backend
from jitnet.backends.cuda.device import cuda_available
if cuda_available():
    print(json.dumps("HAS-GPU"))
    raise SystemExit(0)
msgs = []
for thunk in (
    lambda: jn.device("cuda"),
    lambda: jn.asarray([1.0], device="cuda"),
    lambda: jn.compile(lambda x: x + 1, backend="cuda")(np.ones(2, np.float32)),
):
    try:
        thunk()
        msgs.append("no error")
    except RuntimeError as e:
        msgs.append(str(e))
ok = np.asarray(jn.compile(lambda x: x + 1)(np.ones(2, np.float32))).tolist()
print(json.dumps({"messages": msgs, "default": default_backend(), "cpu_result": ok}))
"""


def test_no_gpu_error_is_clear():
    """Without the simulator (and on a machine without a GPU), asking for CUDA says what to do."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "JITNET_BACKEND")}
    out = subprocess.run([sys.executable, "-c", _NO_GPU_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if doc == "HAS-GPU":
        pytest.skip("a real GPU is usable here")
    assert doc["default"] == "cpu" and doc["cpu_result"] == [2.0, 2.0]
    for msg in doc["messages"]:
        assert "CUDA" in msg and "'cpu'" in msg, msg
        assert "NUMBA_ENABLE_CUDASIM" in msg
