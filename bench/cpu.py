"""How a device runs the workloads (Suite): the CPU's, with peers on this machine's cores (THREADS each:
numexpr and torch through their set_num_threads, torch on torch.from_numpy views; numpy's ufuncs are
one thread), np.copyto's bandwidth as the floor; bench/gpu.py's GpuSuite overrides it for the GPU."""

import functools
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2  # the machine's cores
COPY_N = 2**24  # np.copyto of 2**24 float32: 64 MiB read + 64 MiB written


def attempt(fn, default=None):
    """fn(), or `default` where it raises: a library that does not import, a file or command not there."""
    try:
        return fn()
    except Exception:
        return default


@functools.cache
def _peer(module: str) -> bool:
    """Whether `module` imports; set to THREADS threads if it does."""
    return attempt(lambda: __import__(module).set_num_threads(THREADS) or True, default=False)


def _cpuinfo(key: str) -> str | None:
    lines = attempt(lambda: Path("/proc/cpuinfo").read_text().splitlines(), default=[])
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), None)


def _version(module: str) -> str | None:
    return attempt(lambda: getattr(__import__(module), "__version__", "?"))


def _git(*args: str) -> str | None:
    out = attempt(lambda: subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=ROOT))
    return out.stdout.strip() if out is not None and out.returncode == 0 else None


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


DEFINITIONS = {  # the JSON's: each device adds its own
    "bytes": "minimum moved: each input read once, each output written once",
    "cgma": "flops / (bytes / 4): FLOPs per float32-sized global memory access",
    "floor_frac": "floor_ms / median_ms",
    "speedup": "peer median / jitnet median (> 1: jitnet faster)",
    "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|, fro = ||y-ref||/||ref||",
}


class Suite:
    """What a device decides for bench.runner: which peers run and on what arrays, how to wait for the
    device, the floor's copy, the machine's facts. This one is the CPU's."""

    device = "cpu"  # the JSON's "device" and the results file names
    budget_s = 5.0  # seconds of samples per implementation in a full run
    batch_s: float | None = None  # None: w.inner calls a sample; else batches sized to last this long
    load_meter = True  # measure the other processes' load (rows' and the JSON's "load")
    method = ""  # opens the line that defines the table's columns
    probe_s = 60.0  # the time limit of a cold compile's probe (bench.runner.probe)
    copy_what = "np.copyto"  # how the floor's copy is made
    definitions = DEFINITIONS | {
        "flops": "1 per elementwise op, comparison or transcendental per element; n per n-element reduction",
        "floor_ms": "bytes / copy bandwidth (np.copyto of 2**24 float32, read+write, this run)",
        "spread": "interquartile range / median of the samples",
    }

    def unavailable(self, requires: str | None) -> str | None:
        """Why an implementation that needs `requires` cannot run here; None: it can."""
        module = {"torch.compile": "torch"}.get(requires, requires)
        return None if module in (None, "numpy") or _peer(module) else f"{requires} does not import"

    def convert(self, inputs: dict, requires: str | None) -> dict:
        """The inputs as an implementation that needs `requires` takes them."""
        if requires not in ("torch", "torch.compile"):
            return inputs
        import torch

        return {k: torch.from_numpy(v) for k, v in inputs.items()}

    def sync(self, requires: str | None) -> Callable[[], None] | None:
        """The call that waits for the device of `requires` (None: it is synchronous)."""
        return None

    def machine(self) -> dict:
        return machine_info()

    def describe(self, m: dict) -> str:
        libs = f"numpy {m['numpy']}, numba {m['numba']}, numexpr {m['numexpr']}, torch {m['torch']}"
        return f"{m['cpu_model']}, {m['cores']} cores; {libs}"

    def copy_times(self, quick: bool) -> tuple[int, dict[str, list[float]]]:
        """float32 elements per copy, and seconds per copy by method."""
        src = np.random.default_rng(1).standard_normal(COPY_N, dtype=np.float32)
        dst = np.empty_like(src)
        plan = {"warmup": 3, "max_samples": 10 if quick else 15, "budget_s": None, "rounds": 1}
        return COPY_N, timing.time_interleaved({"np.copyto": lambda: np.copyto(dst, src)}, **plan)[0]

    def summary(self, rows: list[dict]) -> list[str]:
        return []  # lines after the table
