"""Device memory has explicit owners: outputs kept in reference cycles, exceptions raised while
outputs are alive, garbage collections between and during programs, and training loops that make a
cycle every step give the interpreter's numbers, and no two live Arrays ever share memory.

All of it runs with the session's driver-like allocator (tests/fakedriver.py: memory freed by a
finalizer on the allocation is poisoned and handed to the next allocation at once) and with each
pool's memory check on, on the CPU device and on the CUDA device under the simulator. The same
scenarios gave wrong losses and CUDA_ERROR_ILLEGAL_ADDRESS on a real GPU when the runtime recycled
buffers from `Array.__del__`."""

from __future__ import annotations

import gc
import itertools
import sys

import numpy as np
import pytest
from helpers import assert_same

import jitnet as jn
from jitnet import nn

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 5)).astype(np.float32)


@pytest.fixture(autouse=True)
def memory_check(request):
    """The pool's memory check on, for the device under test, and a clean pool around each test."""
    kind = request.getfixturevalue("backend") if "backend" in request.fixturenames else "cpu"
    pool = jn.device(kind).pool
    saved = pool.check
    pool.check = True
    pool.clear()
    yield pool
    pool.check = saved
    gc.collect()


class Holder:
    """An object that refers to itself: freed only by the cyclic collector."""

    def __init__(self, value):
        self.value = value
        self.me = self


def live_arrays(device_kind: str) -> list:
    gc.collect()
    arrays = [o for o in gc.get_objects() if type(o) is jn.Array]  # isinstance() raises on dead weak proxies
    return [a for a in arrays if a._storage is not None and a.device.kind == device_kind]


def assert_disjoint(arrays) -> None:
    """No two of these Arrays' memory overlaps (distinct Storages only: aliases share on purpose)."""
    pool = arrays[0].device.pool if arrays else None
    spans = sorted({id(a._storage): pool._span(a.buffer()) for a in arrays if a.size}.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two live Arrays share memory"


def test_outputs_in_reference_cycles(backend, driver_like_memory):
    """The six-line reproduction: an output kept in a cycle, collected, then the next program and a
    fresh upload; every other round the pool's idle memory goes back to the allocator, which hands it
    to the next allocation."""
    f = jn.compile(lambda x: x * 2.0 + 1.0, backend=backend)
    kept = f(X)
    reused_before = driver_like_memory["cpu" if backend == "cpu" else "cuda"].reused
    for i in range(20):
        h = Holder(f(X + i))
        del h
        gc.collect()
        if i % 2:
            jn.empty_cache()
        out = f(X)
        fresh = jn.asarray(X * 3, device=backend)
        np.testing.assert_array_equal(out.numpy(), X * 2 + 1)
        np.testing.assert_array_equal(fresh.numpy(), X * 3)
    np.testing.assert_array_equal(kept.numpy(), X * 2 + 1)
    assert_disjoint(live_arrays(backend))
    # the allocator really did hand freed memory out again, or this test proves nothing
    assert driver_like_memory["cpu" if backend == "cpu" else "cuda"].reused > reused_before


def test_cycles_holding_several_outputs_and_views(backend):
    """Cycles that hold whole pytrees of outputs, a reshaped alias and a numpy view of a result."""
    f = jn.compile(lambda x: (jn.exp(x).sum(1), x.reshape(15) * 2, jn.softmax(x, 1), x.T + 1), backend=backend)
    ref = jn.compile(f.fn, backend="interpret")
    kept = []
    for i in range(8):
        x = X * (i + 1) / 8
        outs = f(x)
        if i % 3 == 0:
            view = outs[2].numpy()
            kept.append((outs, ref(x), view, view.copy()))
        else:
            cycle = Holder(outs)
            cycle.view = outs[1].numpy()
            del cycle
        del outs
        gc.collect()
    for got, want, view, snapshot in kept:
        assert_same(got, want, rtol=1e-6)
        np.testing.assert_array_equal(view, snapshot)
    assert_disjoint(live_arrays(backend))


def test_numpy_view_keeps_cpu_memory():
    """A numpy view of a CPU result outlives the Array: its memory must not be reused meanwhile."""
    f = jn.compile(lambda x: x * 3, backend="cpu")
    view = f(X).numpy()
    gc.collect()
    for _ in range(5):
        f(X + 100)
    np.testing.assert_array_equal(view, X * 3)
    assert not view.flags.writeable


def _raise_with_outputs_alive(f, x):
    out = f(x)  # alive in this frame when the exception leaves it
    partial = out * 2
    raise ValueError(f"failed after computing {partial.shape}")


def test_exceptions_raised_while_outputs_are_alive(backend):
    """A traceback keeps the frames (and their Arrays) alive; storing the exception in a local of one
    of them makes a cycle only the collector frees."""
    f = jn.compile(lambda x: jn.tanh(x) * 2 - x, backend=backend)
    want = np.asarray(jn.compile(f.fn, backend="interpret")(X))
    for i in range(6):
        try:
            _raise_with_outputs_alive(f, X + i)
        except ValueError as e:
            err = e
            err.frame_locals = sys.exc_info()[2].tb_next.tb_frame.f_locals  # traceback -> frame -> err: a cycle
        del err
        gc.collect()
        assert_same(f(X), want, rtol=1e-6)


def test_exception_inside_a_trace_with_arrays_alive(backend):
    """A TraceError raised while device Arrays are alive in the failing frames; later programs are right."""
    good = jn.compile(lambda a, b: a @ b + 1, backend=backend)
    bad = jn.compile(lambda a, b: a @ b, backend=backend)
    a, b = jn.asarray(X, device=backend), jn.asarray(X.T.copy(), device=backend)
    for _ in range(3):
        with pytest.raises(jn.TraceError):
            bad(a, a)  # (3, 5) @ (3, 5)
        gc.collect()
        np.testing.assert_allclose(good(a, b).numpy(), X @ X.T + 1, rtol=1e-5, atol=1e-6)


def test_collections_while_a_program_runs(backend):
    """The collector runs during program runs (a low threshold), frees cycles of Arrays there, and a
    gc callback drops Arrays mid-run: their memory goes back while the executor takes and gives."""
    f = jn.compile(lambda x: (jn.softmax(x * 2, 1) + x.sum(1, keepdims=True), jn.exp(x) - 1), backend=backend)
    ref = jn.compile(f.fn, backend="interpret")
    dropped = []

    def drop(phase, info):
        if phase == "start" and dropped:
            dropped.pop()

    threshold = gc.get_threshold()
    gc.callbacks.append(drop)
    gc.set_threshold(5, 1, 1)
    try:
        kept = []
        for i in range(10):
            x = X + i / 10
            dropped.append(f(x * 3))
            Holder(f(x - 1))  # garbage at once: a cycle
            kept.append((f(x), ref(x)))
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(drop)
    for got, want in kept:
        assert_same(got, want, rtol=1e-5)
    assert_disjoint(live_arrays(backend))


def _mlp(backend: str):
    jn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    return model.to("cpu" if backend == "interpret" else backend)


def _train(backend: str, steps: int, monkeypatch) -> tuple[list[float], dict]:
    """A train_step loop that leaves a cycle holding the step's outputs, and one failing step."""
    monkeypatch.setenv("JITNET_BACKEND", backend)  # CPU parameters run on the default backend
    model = _mlp(backend)
    step = nn.train_step(model, nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    rng = np.random.default_rng(3)
    losses = []
    for i in range(steps):
        x = rng.standard_normal((4, 6)).astype(np.float32)
        y = rng.integers(0, 3, 4).astype(np.int32)
        loss = step(x, y)
        Holder((loss, model.parameters()))
        if i == 2:
            with pytest.raises(ValueError, match="batch"):
                step(x, y[:3])
        gc.collect()
        losses.append(float(loss))
    return losses, {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_train_step_with_a_cycle_every_step(backend, monkeypatch):
    losses, params = _train(backend, 6, monkeypatch)
    want_losses, want_params = _train("interpret", 6, monkeypatch)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-6)
    for k in want_params:
        np.testing.assert_allclose(params[k], want_params[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert_disjoint(live_arrays(backend))


def test_assign_move_returns_old_memory_only_when_unheld(backend):
    """`assign(move=True)` drops the old Storage; a numpy view (CPU) or another Array alias keeps it."""
    f = jn.compile(lambda x: x + 1, backend=backend)
    a = jn.asarray(X, device=backend)
    before = a.numpy()
    a.assign(f(a), move=True)
    gc.collect()
    for _ in range(4):
        f(X * 7)
    np.testing.assert_array_equal(before, X)
    np.testing.assert_array_equal(a.numpy(), X + 1)


def test_empty_cache_releases_idle_memory(backend):
    f = jn.compile(lambda x: x * 2, backend=backend)
    del_me = [f(X) for _ in range(3)]
    del del_me
    gc.collect()
    pool = jn.device(backend).pool
    assert pool.idle_bytes > 0
    jn.empty_cache()
    assert pool.idle_bytes == 0
    np.testing.assert_array_equal(f(X).numpy(), X * 2)


def test_memory_check_catches_memory_handed_out_twice(backend):
    """The debug check itself: a buffer given back while an Array still holds it must not be taken."""
    pool = jn.device(backend).pool
    a = jn.asarray(X, device=backend)
    pool.give(a.buffer())  # a pool bug, made on purpose
    with pytest.raises(RuntimeError, match="still held by a live Array"):
        pool.take(X.size, X.dtype)
    pool.clear()


def test_resurrected_array_fails_loudly():
    """An Array resurrected by a __del__ after its memory went back to the pool raises, never reads."""
    saved = []

    class Resurrects:
        def __del__(self):
            saved.append(self.array)

    r = Resurrects()
    r.array = jn.compile(lambda x: x * 2, backend="cpu")(X)
    r.me = r
    del r
    gc.collect()
    (array,) = saved
    with pytest.raises(RuntimeError, match="resurrected"):
        array.numpy()
