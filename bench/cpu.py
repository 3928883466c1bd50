"""The CPU suite: peers on this machine's cores (THREADS each: numexpr and torch through their
set_num_threads, torch on torch.from_numpy views; numpy's ufuncs are one thread), np.copyto's
bandwidth as the floor, and the machine's facts."""

from __future__ import annotations

import functools
import os
import platform
import subprocess

import numpy as np

from bench import timing
from bench.runner import ROOT, Suite

THREADS = 2  # the machine's cores
COPY_N = 2**24  # np.copyto of 2**24 float32: 64 MiB read + 64 MiB written


@functools.cache
def _peer(module: str) -> bool:
    """Whether `module` imports; set to THREADS threads if it does."""
    try:
        __import__(module).set_num_threads(THREADS)
    except Exception:
        return False
    return True


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", "?")
    except Exception:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_info() -> dict:
    import numba

    info = {"cpu_model": _cpuinfo("model name") or platform.processor() or platform.machine(), "cores": os.cpu_count()}
    info["cpu_flags"] = sorted(f for f in (_cpuinfo("flags") or "").split() if f.startswith(("avx", "fma", "sse4")))
    info.update(platform=platform.platform(), python=platform.python_version(), numpy=np.__version__)
    info.update(numba=numba.__version__, **{m: _version(m) for m in ("llvmlite", "numexpr", "torch", "jitnet")})
    info.update(numba_threads=numba.config.NUMBA_NUM_THREADS, git_commit=_git("rev-parse", "HEAD"))
    info["git_dirty"] = bool(_git("status", "--porcelain", "--", "jitnet"))
    if hasattr(os, "getloadavg"):
        info["loadavg"] = list(os.getloadavg())
    return info


class CpuSuite(Suite):
    """The workloads against numpy, numexpr and torch on this machine."""

    load_meter, copy_what = True, "np.copyto"
    definitions = {
        "flops": "1 per elementwise op, comparison or transcendental per element; n per n-element reduction",
        "bytes": "minimum moved: each input read once, each output written once",
        "cgma": "flops / (bytes / 4): FLOPs per float32-sized global memory access",
        "floor_ms": "bytes / copy bandwidth (np.copyto of 2**24 float32, read+write, this run)",
        "floor_frac": "floor_ms / median_ms",
        "speedup": "peer median / jitnet median (> 1: jitnet faster)",
        "spread": "interquartile range / median of the samples",
        "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|",
    }

    def unavailable(self, requires):
        module = {"torch.compile": "torch"}.get(requires, requires)
        return None if module in (None, "numpy") or _peer(module) else f"{requires} does not import"

    def convert(self, inputs, requires):
        if requires not in ("torch", "torch.compile"):
            return inputs
        import torch

        return {k: torch.from_numpy(v) for k, v in inputs.items()}

    def machine(self):
        return machine_info()

    def describe(self, m):
        libs = f"numpy {m['numpy']}, numba {m['numba']}, numexpr {m['numexpr']}, torch {m['torch']}"
        return f"{m['cpu_model']}, {m['cores']} cores; {libs}"

    def copy_elements(self, quick):
        return COPY_N

    def copy_times(self, quick):
        src = np.random.default_rng(1).standard_normal(COPY_N, dtype=np.float32)
        dst = np.empty_like(src)
        plan = {"warmup": 3, "max_samples": 10 if quick else 15, "budget_s": None, "rounds": 1}
        return timing.time_interleaved({"np.copyto": lambda: np.copyto(dst, src)}, **plan)[0]
