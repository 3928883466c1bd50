"""What a workload is (inputs from a fixed seed, FLOP and minimum-byte counts, a float64 reference with
a tolerance, jitnet's and the peers' implementations), how jitnet's row is built, how a result is
checked. A peer is written once for every device: the suite hands it the inputs as its library's arrays."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

import jitnet as jn

F32 = np.float32
CPU_ONLY, GPU_ONLY = {"numpy", "numexpr"}, {"cupy", "numba"}  # Impl.requires that run on one device only


class LazyModule:
    """A module imported on first use, so that peers can name torch or cupy where neither imports."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


torch, cupy, numexpr = LazyModule("torch"), LazyModule("cupy"), LazyModule("numexpr")
rng = lambda seed=0: np.random.default_rng(seed)  # every input's generator: a fixed seed
array_module = lambda x: importlib.import_module(type(x).__module__.split(".")[0])  # numpy, torch or cupy: x's


@dataclass
class Impl:
    name: str  # row label: "jitnet", "numpy", "torch", ...
    make: Callable[[dict], Callable[[], Any]]  # the inputs, as the row's library takes them -> the timed call
    requires: str | None = None  # "numpy", "numexpr", "torch", "torch.compile", "cupy", "numba"; None: jitnet
    note: str = ""  # how the row is written, printed under the table
    cold: bool = False  # a cold compile that may take long: first probed in a child process, skipped by --quick
    only: str | None = None  # "cpu" or "cuda": the one device it runs on (else: where `requires` allows)


@dataclass
class Workload:
    name: str
    description: str
    make_inputs: Callable[[bool], dict]  # quick -> {name: array}, in argument order
    flops: Callable[[dict], float]
    reference: Callable[[dict], Any]  # float64
    impls: list[Impl]  # jitnet's first
    bytes: Callable[[dict], float] | None = None  # minimum bytes moved; None: inputs + float32 outputs
    tol: float = 1e-6  # a row whose error exceeds this is a FAIL
    error_kind: str = "abs"  # see `error`
    inner: int | None = 1  # calls per sample; None: sized so that a sample lasts the suite's batch_s
    max_samples: int = 40  # per implementation (fewer if the time budget runs out)
    quick_samples: int = 10
    unit: str = "ms"  # how the table shows times ("us" for the overhead workloads)
    settle_s: float = 0.0  # see bench.timing
    # Goals printed after the table (none is an error): "floor_frac": jitnet's fraction of the
    # memory floor at least this; "beats": jitnet faster than these peers ("all": every peer row);
    # "max_us": jitnet's median per call at most this many microseconds.
    targets: dict = field(default_factory=dict)
    gpu: dict | None = None  # how the GPU's differs (None: not run there); see `on`

    def on(self, device: str) -> Workload:
        """This workload as `device` runs it: its implementations there; on the GPU with `self.gpu`'s
        changes, samples of batches sized to the suite's batch_s and no targets unless given."""
        w, skip = self, GPU_ONLY
        if device == "cuda":
            gpu_defaults = {"inner": None, "max_samples": 30, "quick_samples": 8, "targets": {}}
            gpu_defaults["description"] = f"{self.description}, on the GPU"
            w, skip = dataclasses.replace(self, **{**gpu_defaults, **(self.gpu or {})}), CPU_ONLY
        impls = [i for i in w.impls if i.requires not in skip and i.only in (None, device)]
        return dataclasses.replace(w, impls=impls, gpu=None)

    def impl(self, name: str) -> Impl:
        return next(i for i in self.impls if i.name == name)

    def count_bytes(self, inputs: dict, ref: Any) -> float:
        if self.bytes is not None:
            return float(self.bytes(inputs))
        return float(sum(v.nbytes for v in inputs.values()) + 4 * to_numpy(ref).size)


def _jitnet_make(fn: Callable, inputs: dict):
    args = tuple(inputs.values())
    on_gpu = any(isinstance(a, jn.Array) and a.device.kind == "cuda" for a in args)
    f = jn.compile(fn, backend="cuda" if on_gpu else "cpu")
    t0 = time.perf_counter()
    f(*args)  # traces, compiles and runs once
    if on_gpu:
        from numba import cuda

        cuda.synchronize()
    compile_s, kinds, run = time.perf_counter() - t0, kernel_kinds(f, args), partial(f, *args)
    run.info = {"compile_s": compile_s, "kernels": len(kinds), "kernel_kinds": kinds}
    run.after = lambda: {"traces": f.traces}  # 1: no re-trace while timing
    return run


# jitnet's row: jn.compile(fn), for the device the inputs live on
jitnet_impl = lambda fn: Impl("jitnet", partial(_jitnet_make, fn), note="jn.compile")
kernel_kinds = lambda f, args: [getattr(k.kind, "value", str(k.kind)) for k in f.lower(*args).schedule.kernels]


def run_ufuncs(steps: list[tuple]) -> Any:
    """numpy peers' body: each step `(ufunc, *inputs, out)` in order, into its preallocated `out`; returns
    the last output."""
    for ufunc, *inputs, out in steps:
        ufunc(*inputs, out=out)
    return out


def to_numpy(result: Any) -> np.ndarray:
    """A float64 host copy of what an implementation returned (jn.Array, torch tensor, ndarray, cupy or
    numba device array); a tuple (a value and its gradients) becomes its leaves raveled end to end."""
    if isinstance(result, (tuple, list)):
        return np.concatenate([to_numpy(r).ravel() for r in result])
    if hasattr(result, "detach") and hasattr(result, "numpy"):  # torch.Tensor
        result = result.detach().cpu().numpy()
    elif type(result).__module__.split(".")[0] == "cupy":
        result = result.get()
    elif hasattr(result, "copy_to_host"):  # numba device array
        result = result.copy_to_host()
    return np.array(np.asarray(result), dtype=np.float64)


def error(result: Any, ref: Any, kind: str) -> float:
    """Error of `result` against the float64 reference: "abs" = max |y - ref|, "rel" = max |y - ref|
    / max |ref|, "fro" = ||y - ref|| / ||ref|| (Frobenius). Shape mismatches and NaNs give inf."""
    y, ref = to_numpy(result), to_numpy(ref)
    if y.shape != ref.shape:
        return math.inf
    diff = np.abs(y - ref)
    if diff.size and not np.all(np.isfinite(diff)):
        return math.inf
    if kind == "fro":
        worst, scale = float(np.linalg.norm(diff)), float(np.linalg.norm(ref))
    else:
        worst = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size and kind == "rel" else 0.0
    return worst / scale if scale > 0 else worst
