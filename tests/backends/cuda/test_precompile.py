"""Compiling a program's new CUDA kernels in parallel processes (jitnet/backends/cuda/precompile.py):
how the modules are shared out, and that every new module is compiled once, by this process or a
worker. (The workers themselves are tested with the CPU backend: tests/backends/cpu/test_precompile.py.)"""

from __future__ import annotations

import pytest

from jitnet.backends.cuda import precompile
from jitnet.codegen import cache, workers


def test_shares_round_robin_this_process_first():
    todo = [f"m{i}" for i in range(20)]
    mine, *theirs = precompile.shares(todo, cpus=16)
    assert len(theirs) == min(precompile.MAX_WORKERS, 20 // precompile.PER_WORKER - 1)
    assert mine == todo[:: len(theirs) + 1]
    assert sorted(m for share in [mine, *theirs] for m in share) == sorted(todo)  # each module exactly once
    assert precompile.shares(todo, cpus=3) == [todo[0::3], todo[1::3], todo[2::3]]  # one core each
    assert precompile.shares(todo[:5], cpus=16) == [todo[:5]]  # too few to pay for a worker
    assert precompile.shares(todo, cpus=1) == [todo]


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """compile_new outside the simulator, with the workers and the loads recorded, not run."""
    started, loaded = [], []
    monkeypatch.setattr(precompile, "simulator", lambda: False)
    monkeypatch.setattr(precompile.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(cache, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(cache, "on_disk", lambda source: source.startswith("old"))
    monkeypatch.setattr(cache, "module", loaded.append)
    monkeypatch.setattr(workers, "start", lambda share: started.append(share))
    return started, loaded


def test_every_new_module_compiles_once(recorded):
    started, loaded = recorded
    sources = [f"new{i}" for i in range(30)] + ["old0", "old1", "new3"]  # new3 twice: once is enough
    precompile.compile_new(sources)
    assert len(started) == precompile.MAX_WORKERS
    compiled = loaded + [s for share in started for s in share]
    assert sorted(compiled) == sorted(f"new{i}" for i in range(30))


def test_small_programs_compile_here(recorded):
    started, loaded = recorded
    precompile.compile_new([f"new{i}" for i in range(2 * precompile.PER_WORKER - 1)])
    assert started == [] and loaded == []  # left to the lowering, which loads them one by one
