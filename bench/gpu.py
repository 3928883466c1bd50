"""The GPU suite: inputs on the device, each library's own synchronise, the device-to-device copy
bandwidth as the floor; and the hand-written numba.cuda kernels (the copy, and the peers that show
what numba itself reaches). A sample is a synchronised batch of calls sized from the warm-up to last
~10 ms: launch latency hides as in a real program, a host-bound implementation shows as such."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import math

import numpy as np
from numba import cuda  # the kernels below name `cuda` as a module global

from bench import timing
from bench.cpu import machine_info
from bench.runner import Suite

COPY_N = 2**26  # float32 elements of the copy-bandwidth measurement: 256 MiB each way
BATCH_S = 0.010  # the duration of one timed batch
F32 = np.float32


@functools.cache
def _torch():
    """torch with a CUDA device, set to plain float32 matmuls and convolutions (no TF32), or None."""
    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        return torch if torch.cuda.is_available() else None
    except Exception:
        return None


@functools.cache
def _cupy():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


# ---- hand-written kernels -------------------------------------------------------------------------


def _elementwise_launch(body, x):
    """A call that launches `body(out, x)`, a thread per element, into a preallocated output."""
    out, launch = cuda.device_array_like(x), body[(x.size + 255) // 256, 256]
    return lambda: (launch(out, x), out)[1]


def gelu(x):
    """One element per thread, eagerly compiled signature."""
    c, k = F32(0.7978845608), F32(0.044715)

    @cuda.jit("void(float32[::1], float32[::1])")
    def kernel(out, x):
        i = cuda.grid(1)
        if i < x.size:
            v = x[i]
            out[i] = F32(0.5) * v * (F32(1) + math.tanh(c * (v + k * v * v * v)))

    return _elementwise_launch(kernel, x)


def plus_one(x):
    """The floor of a launch from Python: one kernel, two device-array arguments."""

    @cuda.jit("void(float32[::1], float32[::1])")
    def kernel(out, x):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = x[i] + F32(1)

    return _elementwise_launch(kernel, x)


# ---- the suite ------------------------------------------------------------------------------------


def gpu_info() -> dict:
    info: dict = {}
    try:
        dev = cuda.get_current_device()
        info["gpu"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        info.update(compute_capability=list(dev.compute_capability), sms=int(dev.MULTIPROCESSOR_COUNT))
    except Exception as e:
        info["gpu"] = f"? ({type(e).__name__}: {e})"
    with contextlib.suppress(Exception):
        info["memory_GiB"] = round(cuda.current_context().get_memory_info()[1] / 2**30, 1)
    with contextlib.suppress(Exception):
        from numba.cuda.cudadrv import driver

        info["driver_version"] = ".".join(map(str, driver.driver.get_version()))
    with contextlib.suppress(Exception):
        info["cuda_runtime"] = ".".join(map(str, cuda.runtime.get_version()))
    for dist in ("numba-cuda", "cupy", "cupy-cuda12x", "torch", "triton"):
        with contextlib.suppress(Exception):
            info[dist] = importlib.metadata.version(dist)
    if _torch() is not None:
        info["torch_cuda"] = _torch().version.cuda
    return info


class GpuSuite(Suite):
    """The GPU workloads on device-resident inputs, against the device-to-device copy floor."""

    device, copy_what = "cuda", "device-to-device"
    budget_s, probe_s = 3.0, 180.0
    batch_s = BATCH_S
    method = "inputs resident on the device; a sample = a synchronised batch of back-to-back calls; "
    definitions = {
        "time": "median over samples; a sample = perf_counter around a synchronised batch of `inner` calls / inner",
        "bytes": "minimum moved: each input read once, each output written once",
        "cgma": "flops / (bytes / 4)",
        "floor_ms": "bytes / device-to-device copy bandwidth (this run, faster of copy kernel and memcpy)",
        "floor_frac": "floor_ms / median_ms",
        "speedup": "peer median / jitnet median (> 1: jitnet faster)",
        "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|, fro = ||y-ref||/||ref||",
    }

    def unavailable(self, requires):
        if requires in ("torch", "torch.compile") and _torch() is None:
            return "torch with CUDA does not import"
        if requires == "cupy" and _cupy() is None:
            return "cupy with a CUDA device does not import"
        return None

    def convert(self, inputs, requires):
        if requires in ("torch", "torch.compile"):
            return {k: _torch().as_tensor(v).cuda() for k, v in inputs.items()}
        if requires == "cupy":
            return {k: _cupy().asarray(v) for k, v in inputs.items()}
        if requires == "numba":
            return {k: cuda.to_device(v) for k, v in inputs.items()}
        import jitnet as jn

        return {k: jn.asarray(v, device="cuda") for k, v in inputs.items()}

    def sync(self, requires):
        if requires in ("torch", "torch.compile"):
            return _torch().cuda.synchronize
        if requires == "cupy":
            return _cupy().cuda.Device().synchronize
        return cuda.synchronize

    def machine(self):
        return machine_info() | gpu_info()

    def describe(self, m):
        return (
            f"{m.get('gpu')} (cc {'.'.join(map(str, m.get('compute_capability', [])))}, "
            f"{m.get('sms', '?')} SMs, {m.get('memory_GiB', '?')} GiB); driver {m.get('driver_version', '?')}; "
            f"numba {m['numba']}, numba-cuda {m.get('numba-cuda', '-')}, torch {m.get('torch', '-')}, "
            f"cupy {m.get('cupy', m.get('cupy-cuda12x', '-'))}; host {m['cpu_model']}"
        )

    def copy_elements(self, quick):
        return 2**24 if quick else COPY_N

    def copy_times(self, quick):
        """Seconds per device-to-device copy by a grid-stride kernel and by copy_to_device (cuMemcpyDtoD)."""
        n = self.copy_elements(quick)
        host = np.random.default_rng(1).standard_normal(n, dtype=F32)
        src = cuda.to_device(host)
        dst = cuda.device_array_like(src)

        @cuda.jit("void(float32[::1], float32[::1])")
        def copy(dst, src):
            for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
                dst[i] = src[i]

        launch = copy[(n + 255) // 256, 256]
        fns = {"copy kernel": lambda: launch(dst, src), "copy_to_device": lambda: dst.copy_to_device(src)}
        plan = {"inner": None, "batch_s": BATCH_S, "warmup": 3, "max_samples": 8 if quick else 15, "rounds": 3}
        times = timing.time_interleaved(fns, syncs=dict.fromkeys(fns, cuda.synchronize), budget_s=None, **plan)[0]
        for i in (0, n // 2, n - 1):  # the copy really happened
            assert dst[i : i + 1].copy_to_host()[0] == host[i]
        return times

    def summary(self, rows):
        launch = {r["impl"]: r["median_us"] for r in rows if r["workload"] == "launch_overhead" and "median_us" in r}
        if "jitnet" not in launch or "numba.cuda" not in launch:
            return []
        j, n = launch["jitnet"], launch["numba.cuda"]
        return [f"launch overhead: jitnet {j:.1f} us per call = raw numba.cuda launch {n:.1f} us + {j - n:.1f} us"]
