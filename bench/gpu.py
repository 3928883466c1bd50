"""GPU benchmarks: `python -m bench --device cuda [--only NAME[,NAME]] [--quick] [--repeat N] [--json PATH]`.

Runs only on a real, usable CUDA GPU. Without one (or under numba's CUDA simulator, whose timings
mean nothing) it prints why and exits 0.

Method (the CPU suite's, adapted to an asynchronous device)
----------------------------------------------------------
- Inputs live on the device before timing: jitnet gets `jn.asarray(x, device="cuda")` Arrays,
  torch CUDA tensors, cupy arrays. No host<->device transfer is timed. The first call (jitnet's
  trace + numba compile, torch.compile's) and warm-up calls are never timed.
- A sample is `perf_counter()` around a batch of `inner` back-to-back calls, with the device
  synchronised before the batch starts and before the clock is read at its end (each library's own
  synchronise: numba.cuda.synchronize(), torch.cuda.synchronize(), cupy's device synchronize), divided
  by `inner`. `inner` is picked from a warm-up estimate so a batch lasts ~10 ms (launch latency is
  hidden as it would be in a real program; a host-bound implementation shows as such).
  launch_overhead uses batches of 1000 calls on a 4-element array: host cost per call.
- Implementations of a workload are timed in interleaved rounds with gc off (as on the CPU).
  Reported: median (headline), min, spread = interquartile range / median.
- Floor: device-to-device copy bandwidth measured in the same run, before and after the workloads
  (samples pooled): 2**26 float32 (256 MiB) copied by a trivial numba.cuda grid-stride kernel and by
  `copy_to_device` (cuMemcpyDtoD), counting read + write bytes; the faster of the two is the floor.
  floor% = (minimum bytes / copy bandwidth) / median time.
- Correctness: each implementation's last result is copied to the host and compared with a float64
  numpy reference (max abs or relative error against the workload's tolerance), as on the CPU.
- Peers when importable and CUDA-capable: torch (eager, CUDA tensors), torch.compile (inductor;
  first probed in a child process under a time limit), cupy (eager; cupy.fuse where it applies),
  and a hand-written numba.cuda kernel where it shows what numba itself reaches.

Targets (printed, not errors): gelu_chain >= 85% of the copy floor, sum_squares >= 70%,
softmax_rows at least torch's speed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import cuda  # kernels below name `cuda` as a module global (the simulator swaps it there)

from bench import harness, runner
from bench import workloads as cpu_workloads
from bench.workloads import Impl, Workload

COPY_N = 2**26  # float32 elements of the copy-bandwidth measurement: 256 MiB each way
BATCH_S = 0.010  # target duration of one timed batch
F32 = np.float32


# ---- availability ------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why GPU benchmarks cannot run here, or None when they can."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return (
            "NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator runs kernels as Python threads, so GPU "
            "timings would be meaningless. Unset it and run on a machine with a CUDA GPU "
            "(the simulator is for tests: NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda)."
        )
    from jitnet.runtime.device import cuda_available

    if not cuda_available():
        return (
            "no usable CUDA GPU here (numba.cuda.is_available() is False: no GPU, no driver, or the "
            "'cuda' extra is not installed); nothing to run on --device cuda. Use --device cpu."
        )
    return None


def _torch():
    try:
        import torch
    except Exception:
        return None
    return torch if torch.cuda.is_available() else None


def _cupy():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def _sync_numba() -> None:
    cuda.synchronize()


def _sync_torch() -> None:
    _torch().cuda.synchronize()


def _sync_cupy() -> None:
    _cupy().cuda.Device().synchronize()


# ---- workloads -----------------------------------------------------------------------------------


@dataclass
class GpuWorkload(Workload):
    """A Workload run on the GPU: its implementations' `make` return (call, sync), the call on
    device-resident inputs and the sync that waits for that call's device."""

    inner: int | None = None  # calls per sample; None: picked so that a batch lasts ~BATCH_S
    max_samples: int = 30
    quick_samples: int = 8

    @property
    def impls(self) -> list[Impl]:
        return [Impl("jitnet", _jitnet_maker(self.jitnet_fn), note="jn.compile, device Arrays")] + self.peers


def _jitnet_maker(fn: Callable):
    def make(inputs: dict):
        import jitnet as jn

        f = jn.compile(fn, backend="cuda")
        args = tuple(jn.asarray(v, device="cuda") for v in inputs.values())
        t0 = time.perf_counter()
        f(*args)  # traces, compiles (numba.cuda), runs once
        _sync_numba()
        compile_s = time.perf_counter() - t0
        kernels = f.lower(*args).schedule.kernels

        def run():
            return f(*args)

        run.info = {"compile_s": compile_s, "kernels": len(kernels), "kernel_kinds": [k.kind for k in kernels]}
        run.after = lambda: {"traces": f.traces}
        return run, _sync_numba

    return make


def _torch_inputs(inputs: dict) -> list:
    torch = _torch()
    return [torch.as_tensor(v).cuda() for v in inputs.values()]


def _cupy_inputs(inputs: dict) -> list:
    cupy = _cupy()
    return [cupy.asarray(v) for v in inputs.values()]


def _rng():
    return np.random.default_rng(0)


# gelu_chain: the CPU workload's expression, 2**26 float32

GELU_C, GELU_K = cpu_workloads.GELU_C, cpu_workloads.GELU_K


def _gelu_torch(inp):
    (t,) = _torch_inputs(inp)
    g = cpu_workloads._torch_gelu(_torch())
    return (lambda: g(t)), _sync_torch


def _gelu_torch_F(inp):
    torch = _torch()
    (t,) = _torch_inputs(inp)
    return (lambda: torch.nn.functional.gelu(t, approximate="tanh")), _sync_torch


def _gelu_torch_compile(inp):
    torch = _torch()
    (t,) = _torch_inputs(inp)
    g = torch.compile(cpu_workloads._torch_gelu(torch), fullgraph=True)
    g(t)
    return (lambda: g(t)), _sync_torch


def _gelu_cupy(inp):
    cupy = _cupy()
    (x,) = _cupy_inputs(inp)
    c, k, h, one = F32(GELU_C), F32(GELU_K), F32(0.5), F32(1)
    return (lambda: h * x * (one + cupy.tanh(c * (x + k * x * x * x)))), _sync_cupy


def _gelu_cupy_fuse(inp):
    cupy = _cupy()
    (x,) = _cupy_inputs(inp)
    c, k, h, one = F32(GELU_C), F32(GELU_K), F32(0.5), F32(1)

    @cupy.fuse()
    def gelu(x):
        return h * x * (one + cupy.tanh(c * (x + k * x * x * x)))

    return (lambda: gelu(x)), _sync_cupy


def _gelu_numba(inp):
    """A hand-written numba.cuda kernel: one element per thread, preallocated output."""
    x = cuda.to_device(inp["x"])
    out = cuda.device_array_like(x)
    c, k = F32(GELU_C), F32(GELU_K)

    @cuda.jit("void(float32[::1], float32[::1])")
    def gelu(out, x):
        i = cuda.grid(1)
        if i < x.size:
            v = x[i]
            out[i] = F32(0.5) * v * (F32(1) + math.tanh(c * (v + k * v * v * v)))

    launch = gelu[(x.size + 255) // 256, 256]

    def run():
        launch(out, x)
        return out

    return run, _sync_numba


# sum_squares: sum(x*x) of 2**26 float32


def _sumsq_torch(inp):
    (t,) = _torch_inputs(inp)
    return (lambda: (t * t).sum()), _sync_torch


def _sumsq_torch_dot(inp):
    torch = _torch()
    (t,) = _torch_inputs(inp)
    return (lambda: torch.dot(t, t)), _sync_torch


def _sumsq_torch_compile(inp):
    torch = _torch()
    (t,) = _torch_inputs(inp)
    g = torch.compile(lambda t: (t * t).sum(), fullgraph=True)
    g(t)
    return (lambda: g(t)), _sync_torch


def _sumsq_cupy(inp):
    (x,) = _cupy_inputs(inp)
    return (lambda: (x * x).sum()), _sync_cupy


def _sumsq_cupy_dot(inp):
    cupy = _cupy()
    (x,) = _cupy_inputs(inp)
    return (lambda: cupy.dot(x, x)), _sync_cupy


# softmax_rows: 16384 x 1024 float32


def _softmax_torch(inp):
    torch = _torch()
    (t,) = _torch_inputs(inp)
    return (lambda: torch.softmax(t, dim=-1)), _sync_torch


def _softmax_cupy(inp):
    cupy = _cupy()
    (x,) = _cupy_inputs(inp)

    def run():
        e = cupy.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return run, _sync_cupy


# launch_overhead: x + 1.0 on 4 float32 on the device


def _plus1_numba(inp):
    """The floor for a launch from Python: one numba.cuda kernel, 2 device-array arguments,
    preallocated output, eagerly compiled signature."""
    x = cuda.to_device(inp["x"])
    out = cuda.device_array_like(x)

    @cuda.jit("void(float32[::1], float32[::1])")
    def plus1(out, x):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = x[i] + F32(1)

    launch = plus1[1, 32]

    def run():
        launch(out, x)
        return out

    return run, _sync_numba


def _plus1_torch(inp):
    (t,) = _torch_inputs(inp)
    return (lambda: t + 1.0), _sync_torch


def _plus1_cupy(inp):
    (x,) = _cupy_inputs(inp)
    return (lambda: x + F32(1)), _sync_cupy


def _vector(quick: bool) -> dict:
    return {"x": _rng().standard_normal(2**22 if quick else 2**26, dtype=F32)}


def _matrix(quick: bool) -> dict:
    return {"x": _rng().standard_normal((4096, 1024) if quick else (16384, 1024), dtype=F32)}


REGISTRY: dict[str, GpuWorkload] = {}


def register(cpu: str, **fields) -> GpuWorkload:
    """The CPU workload `cpu`'s computation on the GPU: its name, inputs, FLOPs, bytes, reference,
    jitnet function, error measure and unit, but for `fields`."""
    w = cpu_workloads.REGISTRY[cpu]
    same = ("name", "make_inputs", "flops", "bytes", "reference", "jitnet_fn", "error_kind", "unit")
    gw = GpuWorkload(**{**{k: getattr(w, k) for k in same}, **fields})
    REGISTRY[gw.name] = gw
    return gw


def _inductor(make) -> Impl:
    """torch.compile: probed in a child process first, and not run in --quick (a cold compile)."""
    return Impl("torch.compile", make, "torch.compile", note="inductor (triton)", probe_s=180, in_quick=False)


register(
    "gelu_chain",
    description="tanh GELU 0.5*x*(1+tanh(0.7978845608*(x+0.044715*x*x*x))) over 2**26 float32 on the GPU",
    make_inputs=_vector,
    tol=1e-6,
    targets={"floor_frac": 0.85},
    peers=[
        Impl("numba.cuda", _gelu_numba, "numba", note="hand-written kernel, one element per thread"),
        Impl("torch", _gelu_torch, "torch", note="eager, the same expression (one kernel per op)"),
        Impl("torch.F.gelu", _gelu_torch_F, "torch", note="eager F.gelu(approximate='tanh'): one kernel"),
        _inductor(_gelu_torch_compile),
        Impl("cupy", _gelu_cupy, "cupy", note="eager, the same expression"),
        Impl("cupy.fuse", _gelu_cupy_fuse, "cupy", note="@cupy.fuse: one kernel"),
    ],
)

register(
    "sum_squares",
    description="sum(x*x) over 2**26 float32 on the GPU (one scalar out)",
    make_inputs=_vector,
    tol=1e-4,  # relative; jitnet accumulates in float64
    targets={"floor_frac": 0.70},
    peers=[
        Impl("torch", _sumsq_torch, "torch", note="eager (t*t).sum(): two kernels"),
        Impl("torch.dot", _sumsq_torch_dot, "torch", note="eager torch.dot(t, t): cuBLAS"),
        _inductor(_sumsq_torch_compile),
        Impl("cupy", _sumsq_cupy, "cupy", note="eager (x*x).sum()"),
        Impl("cupy.dot", _sumsq_cupy_dot, "cupy", note="cupy.dot(x, x): cuBLAS"),
    ],
)

register(
    "softmax_rows",
    description="softmax over the last axis of a 16384 x 1024 float32 matrix on the GPU",
    make_inputs=_matrix,
    tol=1e-6,
    targets={"beats": ("torch",)},
    peers=[
        Impl("torch", _softmax_torch, "torch", note="eager torch.softmax(x, dim=-1): one kernel"),
        Impl("cupy", _softmax_cupy, "cupy", note="eager max, subtract, exp, sum, divide"),
    ],
)

register(
    "call_overhead",  # x + 1.0 on 4 float32
    name="launch_overhead",
    description="per-call time of x + 1.0 on 4 float32 on the GPU (one kernel): launch cost, not compute",
    tol=1e-6,
    inner=1000,
    max_samples=40,
    quick_samples=10,
    peers=[
        Impl("numba.cuda", _plus1_numba, "numba", note="one raw kernel launch, preallocated output"),
        Impl("torch", _plus1_torch, "torch", note="eager t + 1.0 (allocates its result, like jitnet)"),
        Impl("cupy", _plus1_cupy, "cupy", note="eager x + 1 (allocates its result)"),
    ],
)


# ---- the copy-bandwidth floor -------------------------------------------------------------------


def copy_bandwidth(samples: int = 15, n: int = COPY_N) -> tuple[float, dict[str, harness.Stats]]:
    """Device-to-device copy bandwidth (bytes/s, read + write) of n float32: the faster of a trivial
    numba.cuda grid-stride copy kernel and copy_to_device (cuMemcpyDtoD)."""
    host = np.random.default_rng(1).standard_normal(n, dtype=F32)
    src = cuda.to_device(host)
    dst = cuda.device_array_like(src)

    @cuda.jit("void(float32[::1], float32[::1])")
    def copy(dst, src):
        start = cuda.grid(1)
        for i in range(start, src.size, cuda.gridsize(1)):
            dst[i] = src[i]

    launch = copy[(n + 255) // 256, 256]

    def kernel():
        launch(dst, src)

    def memcpy():
        dst.copy_to_device(src)

    stats, _ = harness.time_interleaved(
        {"copy kernel": kernel, "copy_to_device": memcpy},
        syncs={"copy kernel": _sync_numba, "copy_to_device": _sync_numba},
        inner=None,
        batch_s=BATCH_S,
        warmup=3,
        max_samples=samples,
        min_samples=samples,
        budget_s=None,
        rounds=3,
    )
    for probe in (0, n // 2, n - 1):  # the copy really happened
        assert dst[probe : probe + 1].copy_to_host()[0] == host[probe]
    best = min(s.median for s in stats.values())
    return 2 * 4 * n / best, stats


# ---- probing torch.compile in a child process ---------------------------------------------------


def probe(workload: str, impl: str, quick: bool, timeout_s: float) -> tuple[bool, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "bench.gpu", "probe", workload, impl] + (["--quick"] if quick else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"did not compile within {timeout_s:.0f} s (probe in a child process)"
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr or out.stdout).strip().splitlines() if ln.strip()]
        return False, "failed in probe: " + (lines[-1][:200] if lines else f"exit code {out.returncode}")
    return True, f"probe compiled and ran in {time.perf_counter() - t0:.1f} s"


def _probe_main(argv: list[str]) -> int:
    w = REGISTRY[argv[0]]
    fn, sync = w.impl(argv[1]).make(w.make_inputs("--quick" in argv))
    fn()
    fn()
    sync()
    return 0


def gpu_info() -> dict:
    info: dict = {}
    try:
        dev = cuda.get_current_device()
        name = dev.name
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = list(dev.compute_capability)
        info["sms"] = int(dev.MULTIPROCESSOR_COUNT)
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
    torch = _torch()
    if torch is not None:
        info["torch_cuda"] = torch.version.cuda
    return info


class GpuSuite(runner.Suite):
    """The GPU workloads above on device-resident inputs, against the device-to-device copy floor."""

    device = "cuda"
    registry = REGISTRY
    label = "GPU workload"
    budget_s = 3.0
    batch_s = BATCH_S
    method = "inputs resident on the device; a sample = a synchronised batch of back-to-back calls; "
    definitions = {
        "time": "median over samples; a sample = perf_counter around a synchronised batch of `inner` calls / inner",
        "bytes": "minimum moved: each input read once, each output written once",
        "cgma": "flops / (bytes / 4)",
        "floor_ms": "bytes / device-to-device copy bandwidth (this run, faster of copy kernel and memcpy)",
        "floor_frac": "floor_ms / median_ms",
        "speedup": "peer median / jitnet median (> 1: jitnet faster)",
        "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|",
    }

    @staticmethod
    def note_order(pair):
        return f"{pair[0]}: {pair[1]}"

    def unavailable(self, requires):
        if requires in ("torch", "torch.compile") and _torch() is None:
            return "torch with CUDA does not import"
        if requires == "cupy" and _cupy() is None:
            return "cupy with a CUDA device does not import"
        if requires not in (None, "numba", "torch", "torch.compile", "cupy"):
            raise ValueError(f"unknown GPU peer requirement {requires!r}")
        return None

    def probe(self, workload, impl, quick, timeout_s):
        return probe(workload, impl, quick, timeout_s)

    def build(self, impl, inputs):
        return impl.make(inputs)

    def machine(self):
        machine = harness.machine_info()
        machine.update(gpu_info())
        return machine

    def describe(self, machine):
        return (
            f"{machine.get('gpu')} (cc {'.'.join(map(str, machine.get('compute_capability', [])))}, "
            f"{machine.get('sms', '?')} SMs, {machine.get('memory_GiB', '?')} GiB); "
            f"driver {machine.get('driver_version', '?')}; numba {machine['numba']}, "
            f"numba-cuda {machine.get('numba-cuda', '-')}, torch {machine.get('torch', '-')}, "
            f"cupy {machine.get('cupy', machine.get('cupy-cuda12x', '-'))}; host {machine['cpu_model']}"
        )

    def floor(self, quick, log):
        copy_n = 2**24 if quick else COPY_N
        copy_samples = 8 if quick else 15
        per_copy, n_log2 = 2 * 4 * copy_n, int(math.log2(copy_n))
        bw_a, copy_a = copy_bandwidth(copy_samples, copy_n)
        log(f"device copy bandwidth: {bw_a / 1e9:.0f} GB/s (2**{n_log2} float32, read+write)")

        def after():
            bw_b, copy_b = copy_bandwidth(copy_samples, copy_n)
            copy = {k: harness.Stats(copy_a[k].samples + copy_b[k].samples) for k in copy_a}
            best = min(copy, key=lambda k: copy[k].median)
            bandwidth = per_copy / copy[best].median
            line = (
                f"device copy bandwidth (2**{n_log2} float32 device-to-device, read+write): "
                f"{bandwidth / 1e9:.0f} GB/s median, from {best} "
                + ", ".join(f"{k} {per_copy / v.median / 1e9:.0f} GB/s" for k, v in copy.items())
                + f" (start {bw_a / 1e9:.0f}, end {bw_b / 1e9:.0f})"
            )
            return (
                bandwidth,
                [line],
                {
                    "bytes_per_s": bandwidth,
                    "GBps": bandwidth / 1e9,
                    "method": best,
                    "elements": copy_n,
                    "bytes_per_copy": per_copy,
                    "median_ms": copy[best].median * 1e3,
                    "spread": copy[best].spread,
                    "by_method_GBps": {k: per_copy / v.median / 1e9 for k, v in copy.items()},
                    "start_GBps": bw_a / 1e9,
                    "end_GBps": bw_b / 1e9,
                    "samples": copy[best].n,
                },
            )

        return after

    def summary(self, rows):
        launch = {r["impl"]: r for r in rows if r["workload"] == "launch_overhead" and "median_us" in r}
        if "jitnet" not in launch or "numba.cuda" not in launch:
            return []
        j, n = launch["jitnet"]["median_us"], launch["numba.cuda"]["median_us"]
        return [f"launch overhead: jitnet {j:.1f} us per call = raw numba.cuda launch {n:.1f} us + {j - n:.1f} us"]


def main(args, argv=None) -> int:
    """`python -m bench --device cuda ...` (args parsed by bench.__main__)."""
    reason = unavailable_reason()
    if reason is not None:
        print(f"jitnet bench --device cuda: {reason}")
        return 0
    return runner.run(GpuSuite(), args, argv)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "probe":
        sys.exit(_probe_main(sys.argv[2:]))
    print("usage: python -m bench.gpu probe WORKLOAD IMPL [--quick]  (the suite: python -m bench --device cuda)")
    sys.exit(2)
