"""Compiling a program's new kernels in two processes (jitnet/backends/cpu/precompile.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import jitnet as jn
from jitnet.backends.cpu import precompile
from jitnet.codegen import cache, workers


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JITNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precompile, "MIN_WORK_S", 0.0)  # a worker for any program
    return tmp_path


def _net(x, w1, w2):
    h = jn.relu(x @ w1)
    return jn.sum(jn.tanh(h @ w2) * 2 + 1, axis=1), jn.max(h, axis=0)


def test_a_worker_compiles_part_of_a_program(fresh_cache):
    rng = np.random.default_rng(0)
    x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in [(70, 90), (90, 80), (80, 60)])
    compiled, loaded = cache.stats.compiles, cache.stats.disk_loads
    got = jn.compile(_net)(x, w1, w2)
    compiled_here, loaded_here = cache.stats.compiles - compiled, cache.stats.disk_loads - loaded
    # the worker's share reached this process as machine code on disk (unless this process already
    # held every module from an earlier test: then nothing is compiled or loaded again)
    assert loaded_here > 0 or compiled_here == 0, "the main process loaded no module the worker compiled"
    want = jn.compile(_net, backend="interpret")(x, w1, w2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)


def test_split_and_order():
    """The worker's share holds its GEMM modules last; the costliest modules are placed first."""
    sources = ['gemm.require("float32", 4, 64)\nlaunch(', "launch(", "plain", 'gemm.require("float32", 8, 16)']
    assert [precompile._cost(s) for s in sources] == [0.4, 0.2, 0.08, 0.4]
    cores = {s for s, name in precompile._shared(sources) if name == "gemm"}
    assert len(cores) == 2 and any(name != "gemm" for _, name in precompile._shared(sources))


def test_a_failing_worker_changes_nothing(fresh_cache, monkeypatch):
    """If the worker cannot run, every module compiles in this process."""
    monkeypatch.setattr(workers.sys, "executable", "/nonexistent/python")
    x = np.ones((40, 50), np.float32)
    before = cache.stats.compiles
    got = jn.compile(lambda a: jn.exp(a) * 3 + jn.sum(a))(x)
    np.testing.assert_allclose(np.asarray(got), np.exp(x) * 3 + 2000, rtol=1e-5)
    assert cache.stats.compiles > before


def test_a_hanging_worker_is_stopped(fresh_cache, monkeypatch, tmp_path):
    """A worker far past its time bound is killed; this process compiles what it did not."""
    sleeper = tmp_path / "python"
    sleeper.write_text("#!/bin/sh\nexec sleep 600\n")
    sleeper.chmod(0o755)
    monkeypatch.setattr(workers.sys, "executable", str(sleeper))
    monkeypatch.setattr(precompile, "WORKER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(precompile, "WORKER_TIMEOUT_FACTOR", 0.0)
    rng = np.random.default_rng(1)
    x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in [(30, 40), (40, 50), (50, 20)])
    t0 = time.perf_counter()
    got = jn.compile(_net)(x, w1, w2)
    assert time.perf_counter() - t0 < 120
    want = jn.compile(_net, backend="interpret")(x, w1, w2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)
