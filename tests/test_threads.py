"""Compiled calls and traces from several threads at once: each thread's trace is its own.

With one trace stack for the whole process, a warm compiled call made while another thread traced
joined that trace and returned a Tracer (thousands of times in 20,000 calls), and concurrent traces
captured each other's Arrays. A short switch interval makes the threads interleave inside traces."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import jitnet as jn
from jitnet.backends.cuda.device import simulator

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)


@pytest.fixture(autouse=True)
def short_switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def run_threads(*targets) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # reported by the test, not lost in the thread
                errors.append(e)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_calls_while_another_thread_traces(backend):
    f = jn.compile(lambda x: jn.exp(x) * 2.0, backend=backend)
    want = np.exp(X) * 2
    f(X)
    calls = {"n": 0, "not_arrays": 0, "wrong": 0}
    done = threading.Event()

    def call():
        while not done.is_set() or calls["n"] < 200:
            r = f(X)
            calls["n"] += 1
            if not isinstance(r, jn.Array):
                calls["not_arrays"] += 1
            elif calls["n"] % 50 == 0 and not np.allclose(r.numpy(), want, rtol=1e-6):
                calls["wrong"] += 1

    def trace():
        try:
            for k in range(3):
                jn.compile(lambda x, k=k: _chain(x, 40 + k), backend=backend).lower(X)  # traces and builds
        finally:
            done.set()

    assert run_threads(call, trace) == []
    assert calls["not_arrays"] == 0 and calls["wrong"] == 0, calls


def _chain(x, n: int):
    for _ in range(n):
        x = jn.tanh(x)
    return x


def test_concurrent_traces_capture_their_own_arrays(backend):
    """Two threads trace functions that capture different Arrays; each program reads its own."""
    if backend == "cuda" and simulator():
        pytest.skip("numba's simulator cannot launch kernels from two threads at once (a GPU can)")
    ws = [jn.asarray(X * (k + 1), device=backend) for k in range(2)]

    def worker(k):
        def run():
            for i in range(4):
                f = jn.compile(lambda x, i=i: _chain(x, 10 + i) * 0 + x * ws[k], backend=backend)
                np.testing.assert_allclose(f(X).numpy(), X * X * (k + 1), rtol=1e-6)

        return run

    assert run_threads(worker(0), worker(1)) == []
