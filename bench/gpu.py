"""Everything on the GPU: the GPU suite (inputs on the device, each library's own synchronise, the
device-to-device copy bandwidth as the floor, the hand-written numba.cuda peers) and the validation of
the CUDA backend run before it. A sample is a synchronised batch of calls sized from the warm-up to
last ~10 ms: launch latency hides as in a real program, a host-bound implementation shows as such."""

import contextlib
import functools
import importlib.metadata
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import cuda  # the kernels below name `cuda` as a module global

import jitnet as jn
from bench import timing
from bench.cpu import DEFINITIONS, Suite, machine_info
from bench.elementwise import GELU_C, GELU_K, gelu
from bench.workload import F32, kernel_kinds, rng
from jitnet.ir.pytree import flatten

COPY_N = 2**26  # float32 elements of the copy-bandwidth measurement: 256 MiB each way


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


def _elementwise_kernel(op):
    """The peer that launches `op` (a float32 device function) on x, a thread per element, into a preallocated
    output; the kernel's signature compiled eagerly, when the peer is built."""

    def make(x):
        device_op = cuda.jit(device=True)(op)

        @cuda.jit("void(float32[::1], float32[::1])")
        def kernel(out, x):
            i = cuda.grid(1)
            if i < x.size:
                out[i] = device_op(x[i])

        out, launch = cuda.device_array_like(x), kernel[(x.size + 255) // 256, 256]
        return lambda: (launch(out, x), out)[1]

    return make


GELU_C32, GELU_K32 = F32(GELU_C), F32(GELU_K)
numba_gelu = _elementwise_kernel(lambda v: F32(0.5) * v * (F32(1) + math.tanh(GELU_C32 * (v + GELU_K32 * v * v * v))))
numba_plus_one = _elementwise_kernel(lambda v: v + F32(1))  # the floor of a launch from Python: one kernel, 2 arguments


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
    budget_s, probe_s, batch_s, load_meter = 3.0, 180.0, 0.010, False  # batch_s: a timed batch lasts ~10 ms
    method = "inputs resident on the device; a sample = a synchronised batch of back-to-back calls; "
    definitions = DEFINITIONS | {
        "time": "median over samples; a sample = perf_counter around a synchronised batch of `inner` calls / inner",
        "floor_ms": "bytes / device-to-device copy bandwidth (this run, faster of copy kernel and memcpy)",
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

    def copy_times(self, quick):
        """Seconds per device-to-device copy by a grid-stride kernel and by copy_to_device (cuMemcpyDtoD)."""
        n = COPY_N  # quick or not: a smaller copy sits in the L2 (60 MB on an H200) and is launch-bound
        host = np.random.default_rng(1).standard_normal(n, dtype=F32)
        src = cuda.to_device(host)
        dst = cuda.device_array_like(src)

        @cuda.jit("void(float32[::1], float32[::1])")
        def copy(dst, src):
            for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
                dst[i] = src[i]

        launch = copy[(n + 255) // 256, 256]
        fns = {"copy kernel": lambda: launch(dst, src), "copy_to_device": lambda: dst.copy_to_device(src)}
        plan = {"inner": None, "batch_s": self.batch_s, "warmup": 3, "max_samples": 8 if quick else 15, "rounds": 3}
        times = timing.time_interleaved(fns, syncs=dict.fromkeys(fns, cuda.synchronize), budget_s=None, **plan)[0]
        for i in (0, n // 2, n - 1):  # the copy really happened
            assert dst[i : i + 1].copy_to_host()[0] == host[i]
        return n, times

    def summary(self, rows):
        launch = {r["impl"]: r["median_us"] for r in rows if r["workload"] == "launch_overhead" and "median_us" in r}
        if "jitnet" not in launch or "numba.cuda" not in launch:
            return []
        j, n = launch["jitnet"], launch["numba.cuda"]
        return [f"launch overhead: jitnet {j:.1f} us per call = raw numba.cuda launch {n:.1f} us + {j - n:.1f} us"]


@dataclass
class Case:
    name: str
    fn: Callable
    args: Callable[[bool], tuple]  # big -> arguments
    rtol: float = 1e-5
    atol: float = 1e-6
    split: bool = False  # the long reductions must take the two-kernel split path


_randn = lambda *shape: rng().standard_normal(shape, dtype=F32)
# the arguments of a case: normal float32 of these shapes, each (shape on a GPU, shape under the simulator)
_normal = lambda *shapes: lambda big: tuple(_randn(*(gpu if big else sim)) for gpu, sim in shapes)


def _cases() -> list[Case]:
    def loss(x, w, b, y):
        h = jn.tanh(x @ w + b)
        return -(jn.log_softmax(h, axis=1) * jn.one_hot(y, w.shape[1])).sum() / x.shape[0] + (w * w).sum() * 1e-3

    def vg_args(big):
        (n, d, k), g = (2048, 256, 10) if big else (8, 6, 3), rng()
        x, w = g.standard_normal((n, d), dtype=F32), g.standard_normal((d, k), dtype=F32) * F32(0.1)
        return x, w, g.standard_normal(k, dtype=F32), g.integers(0, k, n).astype(np.int32)

    def int_args(big):
        return rng().integers(-1000, 1000, 2**20 if big else 300).astype(np.int32), _randn(2**20 if big else 300)

    def views(x, r, c):
        return jn.maximum(x * r + c, 0.0), x.T[::2] * 2, jn.pad(x, ((1, 0), (0, 2)))

    def reductions(x):
        return x.sum(1), x.max(0), jn.argmax(x, 1), jn.logsumexp(x, 1), x.mean(0, keepdims=True) * 2 + 1

    def softmaxes(x):
        return jn.softmax(x, axis=-1) * 2, jn.log_softmax(x, axis=1) - 1

    def ints(a, x):
        return a * 3 + 1, (a > 0).sum(), jn.where(a > 0, x, -x), a.max()

    def whole(v):  # whole-vector reductions: one output each, split into partial and final kernels
        return v.sum(), v.max(), v.min(), (v * v).sum() * 0.5 + 1

    def several(x):
        return x.sum(1) * 2, x.T.max(0)

    views_args = _normal(((2048, 1024), (5, 37)), ((1024,), (37,)), ((2048, 1), (5, 1)))
    rows_args, cols_args = _normal(((4096, 1024), (4, 40))), _normal(((64, 2**17), (1, 1000)))
    vg = jn.value_and_grad(loss, argnums=(1, 2))
    return [
        Case("elementwise gelu", gelu, _normal(((2**22,), (1000,))), rtol=2e-5),
        Case("broadcast row/column + views", views, views_args, atol=1e-3),
        Case("reductions over each axis", reductions, _normal(((1024, 1000), (4, 9))), rtol=2e-5, atol=1e-5),
        Case("split: whole-vector sum/max/min + epilogue", whole, _normal(((2**24,), (3000,))), atol=1e-4, split=True),
        Case("split: several outputs (row sums, column max)", several, cols_args, atol=1e-4, split=True),
        Case("softmax / log_softmax rows + epilogue", softmaxes, rows_args, rtol=2e-5, atol=1e-5),
        Case("value_and_grad (matmul via host, log_softmax)", vg, vg_args, rtol=1e-4, atol=1e-5),
        Case("int32 and bool", ints, int_args),
    ]


def _compare(got, want, rtol: float, atol: float) -> float:
    """Max abs error over the leaves; raises AssertionError on a mismatch."""
    (g_leaves, g_tree), (w_leaves, w_tree) = flatten(got), flatten(want)
    assert g_tree == w_tree, f"structure {g_tree} != {w_tree}"
    worst = 0.0
    for g, w in zip(g_leaves, w_leaves):
        assert isinstance(g, jn.Array) and g.device.kind == "cuda", f"result not on the GPU: {type(g)}"
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{g.shape} {g.dtype} != {w.shape} {w.dtype}"
        if g.dtype.kind != "f":
            np.testing.assert_array_equal(g, w)
            continue
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        d = np.abs(g.astype(np.float64) - w.astype(np.float64))
        if d.size and np.isfinite(d).any():
            worst = max(worst, float(np.nanmax(d)))
    return worst


def _check_cai() -> bool:
    """A device Array exported to numba through __cuda_array_interface__ shares its memory."""
    x = _randn(1000, 3)
    a = jn.asarray(x, device="cuda")
    d = cuda.as_cuda_array(a)
    same = d.__cuda_array_interface__["data"][0] == a.buffer().device_ctypes_pointer.value
    return bool(same and np.array_equal(d.copy_to_host(), x))


def validate(big: bool, log) -> tuple[int, int]:
    """Validate the CUDA backend before the GPU timings: (passed, total). Functions compiled for CUDA and
    checked against the numpy reference interpreter, and on a GPU the zero-copy export through
    __cuda_array_interface__; millions of elements on a GPU, tiny shapes under numba's simulator."""
    from jitnet.backends.cuda import kernels

    sizes = f"{'GPU sizes' if big else 'tiny simulator sizes'}; block {kernels.BLOCK}, max blocks {kernels.MAX_BLOCKS}"
    log(f"validation ({sizes}, split from {kernels.SPLIT_MIN} elements per output)")
    passed = total = 0
    for case in _cases():
        total += 1
        t0 = time.perf_counter()
        try:
            args = case.args(big)
            f = jn.compile(case.fn, backend="cuda")
            err = _compare(f(*args), jn.compile(case.fn, backend="interpret")(*args), case.rtol, case.atol)
            kinds = kernel_kinds(f, args)
            split = "def partial(" in f.inspect(*args)
            if case.split and not split:
                raise AssertionError("expected the split (two-kernel) reduction path, got one kernel per output")
            note = f"kernels {kinds}" + (", split path" if split else "")
            log(f"  ok   {case.name}: max abs err {err:.1e}, {note} ({time.perf_counter() - t0:.1f} s)")
            passed += 1
        except Exception as e:
            log(f"  FAIL {case.name}: {type(e).__name__}: {str(e)[:400]}")
            log("       " + traceback.format_exc().strip().splitlines()[-1][:300])
    if big:
        total += 1
        try:
            ok = _check_cai()
            log(f"  {'ok  ' if ok else 'FAIL'} __cuda_array_interface__ -> numba.cuda.as_cuda_array: zero-copy")
            passed += ok
        except Exception as e:
            log(f"  FAIL __cuda_array_interface__: {type(e).__name__}: {e}")
    return passed, total
