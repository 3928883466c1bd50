"""The backend seam: a backend is a package exporting BACKEND plus one line in the registry, and
the compiler reaches a backend only through that object."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import jitnet as jn
from jitnet import backends
from jitnet.backends import Backend


@pytest.fixture
def recording_backend(monkeypatch):
    """A new backend, registered as a test would add one: the CPU's device and kernels, through
    its own rules and a lowering table that records what it lowered."""
    cpu = backends.get("cpu")
    lowered, prepared = [], []

    def recording(lower):
        def run(kernel):
            lowered.append(kernel.kind)
            return lower(kernel)

        return run

    package = types.ModuleType("recording_backend")
    package.BACKEND = Backend(
        "recording",
        "cpu",
        cpu.device,
        cpu.rules,
        {kind: recording(lower) for kind, lower in cpu.lowerings.items()},
        prepare=prepared.append,
    )
    monkeypatch.setitem(sys.modules, "recording_backend", package)
    monkeypatch.setitem(backends._PACKAGES, "recording", "recording_backend")
    return lowered, prepared


def test_a_registered_backend_compiles_through_its_own_table(recording_backend):
    lowered, prepared = recording_backend
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = jn.compile(lambda a: (jn.exp(a) * 2).sum(axis=1) + 1, backend="recording")
    np.testing.assert_allclose(np.asarray(f(x)), (np.exp(x) * 2).sum(axis=1) + 1, rtol=1e-6)
    kinds = [k.kind for k in f.lower(x).schedule.kernels]
    assert lowered == kinds and len(prepared) == 1 and prepared[0] == f.lower(x).schedule.kernels
    assert "recording" in backends.names()


def test_the_fuser_asks_the_backend_rules(recording_backend, monkeypatch):
    """A backend whose matmul takes no fused epilogue gets relu(x @ w) as two kernels."""
    cpu = backends.get("cpu")
    rules = type(cpu.rules)(frozenset(), cpu.rules.transposed_operands, cpu.rules.split_reductions, 16)
    recording = sys.modules["recording_backend"]
    monkeypatch.setattr(recording, "BACKEND", Backend("recording", "cpu", cpu.device, rules, cpu.lowerings))
    x, w = np.ones((4, 8), np.float32), np.ones((8, 3), np.float32)

    def f(a, b):
        return jn.relu(a @ b)

    fused = [k.kind for k in jn.compile(f, backend="cpu").lower(x, w).schedule.kernels]
    plain = [k.kind for k in jn.compile(f, backend="recording").lower(x, w).schedule.kernels]
    assert fused == ["extern"] and plain == ["extern", "elementwise"]
    np.testing.assert_allclose(np.asarray(jn.compile(f, backend="recording")(x, w)), np.full((4, 3), 8.0))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        backends.get("tpu")
    with pytest.raises(ValueError, match="unknown device 'interpret'; expected one of 'cpu', 'cuda'"):
        jn.device("interpret")
    with pytest.raises(ValueError, match="backend must be one of"):
        jn.compile(lambda a: a, backend="tpu")
