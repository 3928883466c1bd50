"""Timing, the memory-bandwidth floor, error checks and machine facts.

Timing rules (the same for every implementation):
- each implementation is a zero-argument callable; its inputs, output buffers and compiled
  programs are built before timing, and the first call (jitnet's compile) is never timed;
- a sample is `perf_counter()` around `inner` back-to-back calls (1 for the big workloads), divided
  by `inner`; the result of each call is kept alive in one local until the next call replaces it;
  on a GPU the device is synchronised before the batch starts and before its clock is read, and
  `inner` may be sized from the warm-up so that a batch lasts about `batch_s`;
- the implementations of a workload are timed in interleaved rounds (round 1: a few samples of
  each, round 2: ..., so a burst of noise on this shared machine hits every row alike), with the
  garbage collector off;
- reported: median (the headline), min, and the spread = interquartile range / median.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COPY_N = 2**24  # np.copyto of 2**24 float32: 64 MiB read + 64 MiB written


@dataclass
class Stats:
    samples: list[float] = field(default_factory=list)  # seconds per call
    inner: int = 1  # calls per sample

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def min(self) -> float:
        return float(np.min(self.samples))

    @property
    def max(self) -> float:
        return float(np.max(self.samples))

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0.05 = the middle half of samples within 5%)."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else 0.0


def _sample(fn: Callable[[], Any], inner: int, sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    res = None
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    for _ in range(inner):
        res = fn()
    if sync is not None:
        sync()
    t1 = time.perf_counter()
    return (t1 - t0) / inner, res


def plan_samples(per_call: float, inner: int, max_samples: int, budget_s: float | None, min_samples: int) -> int:
    """How many samples to take: max_samples, cut so that one implementation takes about budget_s."""
    if budget_s is None:
        return max_samples
    fit = int(budget_s / max(per_call * inner, 1e-9))
    return max(min(max_samples, fit), min(min_samples, max_samples))


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    inner: int | None = 1,
    warmup: int = 2,
    max_samples: int = 40,
    min_samples: int = 7,
    budget_s: float | None = 5.0,
    rounds: int = 5,
    syncs: dict[str, Callable[[], None]] | None = None,
    batch_s: float | None = None,
) -> tuple[dict[str, Stats], dict[str, Any]]:
    """Time every callable of `fns`; return their Stats and the result of each one's last call.
    `syncs`: name -> the call that waits for its device (asynchronous implementations);
    `inner=None`: each implementation's calls per sample are picked from its warm-up (batches of
    one call) so that a sample lasts about `batch_s` (Stats.inner says how many)."""
    syncs = syncs or {}
    last: dict[str, Any] = {}
    want: dict[str, int] = {}
    stats: dict[str, Stats] = {}
    for name, fn in fns.items():  # warm-up: caches, page faults, buffer pools, clocks
        sync, est = syncs.get(name), math.inf
        for _ in range(warmup):
            dt, last[name] = _sample(fn, inner or 1, sync)
            est = min(est, dt)
        k = inner
        if k is None:  # size the batch from the warm-up, then time one batch of that size
            k = max(1, min(1000, math.ceil(batch_s / max(est, 1e-7))))
            est, last[name] = _sample(fn, k, sync)
        stats[name] = Stats(inner=k)
        want[name] = plan_samples(est, k, max_samples, budget_s, min_samples)
    rounds = max(1, min(rounds, min(want.values())))
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, fn in fns.items():
                k = want[name] * (r + 1) // rounds - want[name] * r // rounds
                for _ in range(k):
                    dt, last[name] = _sample(fn, stats[name].inner, syncs.get(name))
                    stats[name].samples.append(dt)
    finally:
        if gc_was:
            gc.enable()
    return stats, last


def copy_bandwidth(samples: int = 20) -> tuple[float, Stats]:
    """Bytes per second of np.copyto over 2**24 float32, counting the read and the write."""
    rng = np.random.default_rng(1)
    src = rng.standard_normal(COPY_N, dtype=np.float32)
    dst = np.empty_like(src)
    stats, _ = time_interleaved(
        {"copyto": lambda: np.copyto(dst, src)}, warmup=3, max_samples=samples, budget_s=None, rounds=1
    )
    return 2 * src.nbytes / stats["copyto"].median, stats["copyto"]


# ---- machine load ----------------------------------------------------------------------------------


class LoadMeter:
    """How many cores other processes kept busy (and the hypervisor stole) over an interval, from
    /proc/stat minus this process's own CPU time. On a shared 2-core machine a multi-threaded
    kernel waits at every barrier for a descheduled thread, so its rows suffer first."""

    def __init__(self):
        self.start = self._snap()

    @staticmethod
    def _snap():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
        steal = v[7] if len(v) > 7 else 0
        t = os.times()
        return time.perf_counter(), busy, steal, t.user + t.system + t.children_user + t.children_system

    def read(self) -> dict:
        end = self._snap()
        if self.start is None or end is None:
            return {}
        hz = os.sysconf("SC_CLK_TCK")
        wall = end[0] - self.start[0]
        if wall <= 0:
            return {}
        mine = end[3] - self.start[3]
        busy = (end[1] - self.start[1]) / hz
        return {
            "wall_s": wall,
            "own_cores": mine / wall,
            "other_cores": max(0.0, busy - mine) / wall,
            "steal_cores": (end[2] - self.start[2]) / hz / wall,
        }


# ---- correctness --------------------------------------------------------------------------------


def to_numpy(result: Any) -> np.ndarray:
    """A float64 host numpy copy of whatever an implementation returned (jn.Array, torch tensor,
    ndarray, cupy or numba device array); a tuple (say, a value and its gradient) becomes its leaves
    raveled end to end."""
    if isinstance(result, (tuple, list)):
        return np.concatenate([to_numpy(r).ravel() for r in result])
    if hasattr(result, "detach") and hasattr(result, "numpy"):  # torch.Tensor
        result = result.detach().cpu().numpy()
    elif type(result).__module__.split(".")[0] == "cupy":
        result = result.get()
    elif hasattr(result, "copy_to_host"):  # numba device array
        result = result.copy_to_host()
    return np.array(np.asarray(result), dtype=np.float64)


def error(result: Any, ref: np.ndarray, kind: str) -> float:
    """Max error of `result` against the float64 reference: "abs" = max |y - ref|,
    "rel" = max |y - ref| / max |ref|. Shape mismatches and NaNs give inf."""
    y, ref = to_numpy(result), to_numpy(ref)
    if y.shape != ref.shape:
        return math.inf
    diff = np.abs(y - ref)
    if diff.size and not np.all(np.isfinite(diff)):
        return math.inf
    worst = float(diff.max()) if diff.size else 0.0
    if kind == "rel":
        scale = float(np.abs(ref).max()) if ref.size else 1.0
        return worst / scale if scale > 0 else worst
    return worst


# ---- machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "sse4")))
    except OSError:
        pass
    return []


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "?")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=os.path.dirname(os.path.dirname(__file__))
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_info() -> dict:
    import numba

    info = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": _version("llvmlite"),
        "numexpr": _version("numexpr"),
        "torch": _version("torch"),
        "jitnet": _version("jitnet"),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "jitnet")),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = list(os.getloadavg())
    return info
