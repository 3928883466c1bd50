"""The CUDA program runner (jitnet/backends/cuda/runner.py): direct launches and graph replay.

numba's simulator has no driver, no graphs and synchronous launches, so the runner is given a
recording fake driver that behaves like the real one where it matters: it receives kernels' flat
parameter blocks (as cuda.core does) and finds each buffer by its address, checking the size and
item size fields; launches captured into a graph are only recorded, and each replay finds its
buffers by address again, so a graph whose memory was freed (and, through the test allocator,
poisoned and reused) fails or gives wrong numbers, as on a GPU. On a real GPU the same tests run
against the real driver (cuda.core) where marked.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from helpers import CUDA_MARKS

import jitnet as jn
from jitnet.backends.cuda import launch as launch_mod
from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.launch import Launch, Plan
from jitnet.backends.cuda.runner import GRAPH_MIN_LAUNCHES, ProgramRunner, launch_mode

pytestmark = CUDA_MARKS

rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


class RecordingDriver:
    """A fake of driver.CoreDriver over the simulator (see the module doc)."""

    def __init__(self):
        self.calls: list[str] = []  # "launch <kernel>" on the stream, "capture <kernel>", "graph"
        self._buffers: dict[int, weakref.ref] = {}

    def address(self, buf) -> int:
        if not buf.size:
            return 0
        address = buf.ctypes.data
        self._buffers[address] = weakref.ref(buf)
        return address

    def function(self, kernel):
        return kernel

    def config(self, grid, block):
        return (tuple(grid), block)

    def _resolve(self, params: list) -> list:
        assert len(params) % 7 == 0, "7 parameters per 1-D array"
        buffers = []
        for j in range(0, len(params), 7):
            meminfo, parent, size, itemsize, address, shape, stride = params[j : j + 7]
            assert meminfo == parent == 0 and shape == size and stride == itemsize
            ref = self._buffers.get(address)
            buf = ref() if ref is not None else None
            assert buf is not None, f"a launch reads memory at {address:#x} that no live buffer holds"
            assert buf.ctypes.data == address and buf.size == size and buf.dtype.itemsize == itemsize
            buffers.append(buf)
        return buffers

    def launch(self, target, config, function, params) -> None:
        name = function.__name__ if hasattr(function, "__name__") else str(function)
        if target is None:
            self.calls.append(f"launch {name}")
            function[config](*self._resolve(params))
        else:
            self.calls.append(f"capture {name}")
            target.append((config, function, list(params)))

    def begin_graph(self):
        return []

    def end_graph(self, builder):
        return tuple(builder)

    def launch_graph(self, graph) -> None:
        self.calls.append("graph")
        for config, function, params in graph:
            function[config](*self._resolve(params))


def graph_function(x, w):
    h = jn.tanh(x @ w)
    return h.sum(axis=1), jn.softmax(h, axis=-1), (h * 2.0).max(), x.sum()


def reference(x, w):
    h = np.tanh(x.astype(np.float64) @ w)
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    return h.sum(axis=1), e / e.sum(axis=-1, keepdims=True), (h * 2).max(), x.astype(np.float64).sum()


def with_runner(fn, args, driver, mode="graph"):
    """fn compiled for the CUDA backend, its program run by a ProgramRunner over `driver`."""
    f = jn.compile(fn, backend="cuda")
    entry = f.lower(*args)
    entry.runner = ProgramRunner(entry.program, driver, mode)
    return f, entry.runner


def check_close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=2e-5, atol=2e-5)


def test_graph_replay_runs_each_call_in_three_launches():
    driver = RecordingDriver()
    x, w = randn(4, 300), randn(300, 8)  # x.sum() over 1200 elements takes the split path (two kernels)
    f, runner = with_runner(graph_function, (x, w), driver)
    assert runner.launches >= GRAPH_MIN_LAUNCHES
    check_close(f(x, w), reference(x, w))
    assert runner.mode == "graph"
    captured = [c for c in driver.calls if c.startswith("capture")]
    assert len(captured) == runner.launches  # every kernel of the program, once
    for _ in range(3):
        x, w = randn(4, 300), randn(300, 8)
        driver.calls.clear()
        outs = f(x, w)
        gc.collect()  # nothing the graph uses may be freed (the test allocator poisons and reuses it)
        check_close(outs, reference(x, w))
        assert driver.calls == ["launch copy", "graph", "launch copy"]


def test_graph_outputs_belong_to_the_caller():
    driver = RecordingDriver()
    x, w = randn(4, 300), randn(300, 8)
    f, _ = with_runner(graph_function, (x, w), driver)
    first = f(x, w)
    kept = [np.asarray(a).copy() for a in first]
    for _ in range(2):
        f(randn(4, 300), randn(300, 8))
        gc.collect()
    check_close(first, kept)  # later replays wrote the graph's buffers, not the arrays handed out


def test_direct_launches_for_small_programs():
    driver = RecordingDriver()
    x = randn(5, 7)
    f, runner = with_runner(lambda a: jn.exp(a) * 2.0 + 1.0, (x,), driver)
    assert runner.launches < GRAPH_MIN_LAUNCHES
    np.testing.assert_allclose(np.asarray(f(x)), np.exp(x) * 2 + 1, rtol=1e-6)
    assert runner.mode == "direct"
    driver.calls.clear()
    x = randn(5, 7)
    np.testing.assert_allclose(np.asarray(f(x)), np.exp(x) * 2 + 1, rtol=1e-6)
    assert driver.calls == ["launch kernel"]


def test_direct_launches_pass_reordered_extern_arguments():
    driver = RecordingDriver()
    x, w = randn(6, 6), randn(6, 6)
    f, runner = with_runner(lambda a, b: a @ b + a, (x, w), driver, mode="direct")  # x read twice, by name
    for _ in range(2):
        np.testing.assert_allclose(np.asarray(f(x, w)), x @ w + x, rtol=1e-5, atol=1e-5)
        x, w = randn(6, 6), randn(6, 6)
    assert runner.mode == "direct"


class DroppingDriver(RecordingDriver):
    """A broken graph: its replay skips the last kernel."""

    def end_graph(self, builder):
        return tuple(builder[:-1])


class FailingDriver(RecordingDriver):
    def begin_graph(self):
        raise RuntimeError("graphs are not supported here")


@pytest.mark.parametrize("driver_cls, message", [(DroppingDriver, "different results"), (FailingDriver, "failed")])
def test_a_bad_graph_warns_and_falls_back_with_right_numbers(driver_cls, message):
    driver = driver_cls()
    x, w = randn(4, 300), randn(300, 8)
    f, runner = with_runner(graph_function, (x, w), driver)
    with pytest.warns(RuntimeWarning, match=message):
        outs = f(x, w)
    check_close(outs, reference(x, w))
    assert runner.mode == "direct"
    x, w = randn(4, 300), randn(300, 8)
    check_close(f(x, w), reference(x, w))


def test_plain_mode_never_touches_the_driver():
    driver = RecordingDriver()
    x = randn(3, 3)
    f, runner = with_runner(lambda a: a * 3.0, (x,), driver, mode="plain")
    np.testing.assert_allclose(np.asarray(f(x)), x * 3, rtol=1e-6)
    assert runner.mode == "plain" and driver.calls == []


def test_launch_mode_setting(monkeypatch):
    monkeypatch.delenv("JITNET_CUDA_LAUNCH", raising=False)
    assert launch_mode() == "graph"
    monkeypatch.setenv("JITNET_CUDA_LAUNCH", "Direct")
    assert launch_mode() == "direct"
    monkeypatch.setenv("JITNET_CUDA_LAUNCH", "fast")
    with pytest.raises(ValueError, match="JITNET_CUDA_LAUNCH='fast'"):
        launch_mode()


def test_plan_reorder_maps_parameters_and_keeps_scratch():
    calls = []

    class Kernel:
        def __getitem__(self, config):
            return lambda *bufs: calls.append(bufs)

    k = Kernel()
    # buffers (out, q, p, q, scratch)
    plan = Plan(4, [Launch(k, 2, 32, (4, 1, 2)), Launch(k, (1, 2), 32, (0, 3, 4))], scratch=[(4, "float32")])
    assert plan.launches[1].grid == (1, 2, 1)
    moved = plan.reorder([1, 0, 1], 3)  # for a caller passing (out, p, q)
    assert moved.n_params == 3
    assert [x.args for x in moved.launches] == [(3, 2, 1), (0, 2, 3)]
    assert moved.scratch(lambda n, dt: np.zeros(n, dt)) is plan.scratch(lambda n, dt: None)
    with pytest.raises(ValueError, match="out of range"):
        Plan(1, [Launch(k, 1, 32, (0, 2))])
    with pytest.raises(TypeError, match="takes 4 buffers"):
        plan(1, 2)
    assert launch_mod.plan_source(2) == "launch = Plan(2, [])"


@pytest.mark.skipif(simulator(), reason="the real driver needs a GPU")
def test_real_driver_graph_and_direct_launches():
    from jitnet.backends.cuda import core_driver

    x, w = randn(64, 300), randn(300, 32)
    for mode in ("graph", "direct"):
        f, runner = with_runner(graph_function, (x, w), core_driver(), mode)
        for _ in range(3):
            check_close(f(x, w), reference(x, w))
            x, w = randn(64, 300), randn(300, 32)
        assert runner.mode == mode
