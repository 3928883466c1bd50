"""The one timing method, for every device: interleaved rounds of samples with gc off, so that a burst
of noise on a shared machine hits every row alike. `settle_s`: a pause and one untimed call before each
implementation's turn, since OpenBLAS's threads spin ~0.1 s after a call (a 10 ms 1024^3 kernel timed
right after numpy took 15-26 ms; after a 0.3 s pause, 10 ms)."""

import gc
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def summary(samples: list[float]) -> dict:
    """Seconds per call: median (the headline), min, max, spread = interquartile range / median."""
    q1, median, q3 = (float(q) for q in np.percentile(samples, [25, 50, 75]))
    spread = (q3 - q1) / median if median > 0 else 0.0
    return {"median": median, "min": float(np.min(samples)), "max": float(np.max(samples)), "spread": spread}


def _sample(fn: Callable[[], Any], inner: int, sync: Callable[[], None] | None) -> tuple[float, Any]:
    """Seconds per call of `inner` back-to-back calls, the device synchronised before and after."""
    res = None  # each result stays alive until the next call replaces it
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(inner):
        res = fn()
    if sync:
        sync()
    return (time.perf_counter() - t0) / inner, res


def time_interleaved(
    fns, *, warmup, max_samples, budget_s, inner=1, min_samples=7, rounds=5, syncs=None, batch_s=None, settle_s=0.0
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, Any]]:
    """Time every callable of `fns`: (seconds per call of each sample, calls per sample, the result of
    each one's last call), by name. Each takes max_samples, cut so that it lasts about
    budget_s (None: no cut) but at least min_samples. `syncs`: the call that waits for each one's
    device; `inner=None`: calls per sample sized from the warm-up so that a sample lasts `batch_s`."""
    syncs, last, want, calls = syncs or {}, {}, {}, {}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up: caches, page faults, buffer pools, clocks
        sync, est = syncs.get(name), math.inf
        for _ in range(warmup):
            dt, last[name] = _sample(fn, inner or 1, sync)
            est = min(est, dt)
        k = inner or max(1, min(1000, math.ceil(batch_s / max(est, 1e-7))))  # None: sized to last batch_s
        if inner is None:
            est, last[name] = _sample(fn, k, sync)
        calls[name] = k
        fit = max_samples if budget_s is None else int(budget_s / max(est * k, 1e-9))
        want[name] = max(min(max_samples, fit), min(min_samples, max_samples))
    rounds = max(1, min(rounds, min(want.values())))
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, fn in fns.items():
                if settle_s:
                    time.sleep(settle_s)
                    fn()
                for _ in range(want[name] * (r + 1) // rounds - want[name] * r // rounds):
                    dt, last[name] = _sample(fn, calls[name], syncs.get(name))
                    samples[name].append(dt)
    finally:
        if gc_was:
            gc.enable()
    return samples, calls, last


class LoadMeter:
    """How many cores other processes kept busy (and the hypervisor stole) over an interval, from
    /proc/stat minus this process's own CPU time. On a shared 2-core machine a multi-threaded
    kernel waits at every barrier for a descheduled thread, so its rows suffer first."""

    def __init__(self):
        self.start = self._snap()

    @staticmethod
    def _snap() -> tuple | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        t, steal = os.times(), v[7] if len(v) > 7 else 0
        busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
        return time.perf_counter(), busy, steal, t.user + t.system + t.children_user + t.children_system

    def read(self) -> dict:
        end = self._snap()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return {}
        (wall, busy, steal, mine), hz = (e - s for e, s in zip(end, self.start)), os.sysconf("SC_CLK_TCK")
        other = max(0.0, busy / hz - mine) / wall
        return {"wall_s": wall, "own_cores": mine / wall, "other_cores": other, "steal_cores": steal / hz / wall}
