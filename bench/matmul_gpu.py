"""GPU matmul: jitnet's generated numba.cuda kernel (jitnet/backends/cuda/matmul.py) beside cuBLAS
(torch.matmul with TF32 off; cupy.matmul when cupy imports), float32 cubes.

    python -m bench.matmul_gpu                      # 1024, 2048, 4096 cubes + the tile sweep at 4096
    python -m bench.matmul_gpu --sizes 4096 --no-sweep
    python -m bench.matmul_gpu --sweep-size 2048 --tiles 128x128x8_8x8,64x64x8_4x4

Method (docs: .library/device/METHOD.md)
- Inputs are random normal float32, on the device before timing; each implementation writes into
  its own preallocated output (torch: out=). The first calls (numba compile / module load, cuBLAS
  handle and heuristics) are warm-up and never timed.
- A sample is a batch of `inner` back-to-back calls between two CUDA events of the library's own
  (numba.cuda events, torch.cuda.Event, cupy.cuda.Event), divided by `inner`; `inner` is picked so a
  batch lasts ~10 ms (Python launch cost overlaps the previous kernel, as in a real program). The
  median of --samples samples is reported, with the spread (interquartile range / median).
- Implementations are timed in interleaved rounds, so clock or thermal drift hits all alike.
- Correctness: the jitnet output is poisoned with NaN, one call is made, and the result is compared
  with a float64 reference (torch float64 on the GPU when torch is there, else numpy) by
  ||out - ref||_F / ||ref||_F, which must be < 1e-5 (cuBLAS's own error is printed beside it).
- FLOPs = 2*n^3; GFLOP/s = FLOPs / median time; "of cuBLAS" = cuBLAS time / jitnet time.
- The tile sweep times every tile of jitnet's GPU set (and the first without prefetch) at one size
  and prints the fastest, to tune `choose_tile` (jitnet/backends/cuda/matmul.py).

Without a usable GPU (or under numba's CUDA simulator, whose timings mean nothing) it says why and
exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import numpy as np

TOL = 1e-5  # relative Frobenius error against float64
BATCH_MS = 10.0


def unavailable_reason(allow_simulator: bool = False) -> str | None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1" and not allow_simulator:
        return "NUMBA_ENABLE_CUDASIM=1: the CUDA simulator runs kernels as Python threads; its timings mean nothing."
    try:
        from numba import cuda

        if not cuda.is_available():
            return "no usable CUDA GPU (numba.cuda.is_available() is False: no GPU, no driver, or no numba-cuda)."
        cuda.current_context()
    except Exception as e:  # a broken driver or toolkit: no GPU either
        return f"no usable CUDA GPU ({type(e).__name__}: {e})."
    return None


def _torch():
    try:
        import torch

        if not torch.cuda.is_available():
            return None
    except Exception:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False  # plain FP32 cuBLAS, the same arithmetic as ours
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def _cupy():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:
        return None


# ---- timing: batches of back-to-back calls between the library's own CUDA events ----


class _Timer:
    """event pair factory + elapsed(ms) for one library."""

    def __init__(self, lib: str):
        self.lib = lib
        if lib == "numba":
            from numba import cuda

            self._new = cuda.event  # timing=True is the default
            self._elapsed = lambda a, b: a.elapsed_time(b)
        elif lib == "torch":
            torch = _torch()
            self._new = lambda: torch.cuda.Event(enable_timing=True)
            self._elapsed = lambda a, b: a.elapsed_time(b)
        else:
            cupy = _cupy()
            self._new = lambda: cupy.cuda.Event()
            self._elapsed = cupy.cuda.get_elapsed_time

    def batch_ms(self, call, inner: int) -> float:
        start, end = self._new(), self._new()
        start.record()
        for _ in range(inner):
            call()
        end.record()
        end.synchronize()
        return self._elapsed(start, end) / inner


@dataclasses.dataclass
class Impl:
    name: str
    call: object
    timer: _Timer
    inner: int = 1
    samples: list = dataclasses.field(default_factory=list)

    def warm(self) -> None:
        for _ in range(3):
            self.timer.batch_ms(self.call, 1)
        est = min(self.timer.batch_ms(self.call, 1) for _ in range(3))
        self.inner = max(1, min(1000, int(BATCH_MS / est))) if est > 0 else 1  # 0: the simulator

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        if len(self.samples) < 4 or self.median <= 0:
            return float("nan")
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median


def time_interleaved(impls: list[Impl], samples: int) -> None:
    for impl in impls:
        impl.warm()
    for _ in range(samples):
        for impl in impls:
            impl.samples.append(impl.timer.batch_ms(impl.call, impl.inner))


# ---- implementations ----


def _operands(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    torch = _torch()
    if torch is not None:
        ta = torch.from_numpy(a).to("cuda", torch.float64)
        tb = torch.from_numpy(b).to("cuda", torch.float64)
        return (ta @ tb).cpu().numpy()
    return a.astype(np.float64) @ b.astype(np.float64)


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got, np.float64).reshape(ref.shape)
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def jitnet_impl(n: int, a_dev, b_dev, tile=None, label: str | None = None) -> tuple[Impl, object, str]:
    """(Impl, output device array, tile name) for jitnet's kernel on device operands."""
    from numba import cuda

    from jitnet.codegen import cache
    from jitnet.backends.cuda import matmul as mm

    t = mm.resolve_tile(tile, n, n, n, 1)
    t0 = time.perf_counter()
    launch = cache.load(mm.matmul_source(n, n, n, 1, np.float32, False, False, t), "launch")
    compile_s = time.perf_counter() - t0
    out = cuda.device_array(n * n, np.float32)
    impl = Impl(label or f"jitnet {t.name}", lambda: launch(out, a_dev, b_dev), _Timer("numba"))
    print(f"  {impl.name}: loaded in {compile_s:.1f} s (compile or disk cache)", flush=True)
    return impl, out, t.name


def check_jitnet(impl: Impl, out, ref: np.ndarray) -> float:
    from numba import cuda

    out.copy_to_device(np.full(out.size, np.nan, np.float32))
    impl.call()
    cuda.synchronize()
    return rel_error(out.copy_to_host(), ref)


def peers(n: int, a: np.ndarray, b: np.ndarray) -> list[tuple[Impl, object]]:
    """(Impl, function returning the result on the host) for cuBLAS through torch and cupy."""
    found = []
    torch = _torch()
    if torch is not None:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        tout = torch.empty((n, n), device="cuda", dtype=torch.float32)
        found.append(
            (
                Impl("cuBLAS (torch.matmul, no TF32)", lambda: torch.matmul(ta, tb, out=tout), _Timer("torch")),
                lambda: tout.cpu().numpy(),
            )
        )
    cupy = _cupy()
    if cupy is not None:
        ca, cb = cupy.asarray(a), cupy.asarray(b)
        cout = cupy.empty((n, n), dtype=cupy.float32)
        found.append(
            (
                Impl("cuBLAS (cupy.matmul)", lambda: cupy.matmul(ca, cb, out=cout), _Timer("cupy")),
                lambda: cupy.asnumpy(cout),
            )
        )
    return found


# ---- runs ----


def gflops(n: int, ms: float) -> float:
    return 2.0 * n**3 / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def _frac(ref_ms: float | None, ms: float) -> str:
    return f"{ref_ms / ms:6.1%}" if ref_ms and ms > 0 else "   n/a"


def run_size(n: int, samples: int, tile=None) -> tuple[bool, list[tuple]]:
    from numba import cuda

    print(f"\n== {n} x {n} x {n} float32 ==", flush=True)
    a, b = _operands(n, seed=n)
    ref = _reference(a, b)
    a_dev, b_dev = cuda.to_device(a.reshape(-1)), cuda.to_device(b.reshape(-1))
    ours, out, tile_name = jitnet_impl(n, a_dev, b_dev, tile)
    err = check_jitnet(ours, out, ref)
    impls = [ours]
    errors = {ours.name: err}
    for impl, result in peers(n, a, b):
        impl.call()
        cuda.synchronize()
        errors[impl.name] = rel_error(result(), ref)
        impls.append(impl)
    time_interleaved(impls, samples)
    cublas = next((i.median for i in impls[1:] if "torch" in i.name), impls[1].median if len(impls) > 1 else None)
    rows = []
    for impl in impls:
        rows.append(
            (
                n,
                impl.name,
                impl.median,
                gflops(n, impl.median),
                _frac(cublas, impl.median),
                impl.spread,
                errors[impl.name],
            )
        )
    ok = err < TOL
    if not ok:
        print(f"  FAIL: jitnet {tile_name} relative Frobenius error {err:.2e} >= {TOL:g}")
    return ok, rows


def sweep(n: int, samples: int, names: list[str] | None) -> tuple[bool, list[tuple]]:
    from numba import cuda

    from jitnet.backends.cuda import matmul as mm

    print(f"\n== tile sweep at {n} x {n} x {n} float32 (rule picks {mm.choose_tile(n, n, n).name}) ==", flush=True)
    a, b = _operands(n, seed=n + 1)
    ref = _reference(a, b)
    a_dev, b_dev = cuda.to_device(a.reshape(-1)), cuda.to_device(b.reshape(-1))
    tiles = [mm.TILES[name] for name in names] if names else list(mm.TILES.values())
    tiles.append(dataclasses.replace(tiles[0], prefetch=False))
    impls, errors, ok = [], {}, True
    for t in tiles:
        impl, out, _ = jitnet_impl(n, a_dev, b_dev, t)
        errors[impl.name] = err = check_jitnet(impl, out, ref)
        if err >= TOL:
            ok = False
            print(f"  FAIL: {impl.name} relative Frobenius error {err:.2e} >= {TOL:g}")
        impls.append(impl)
    time_interleaved(impls, samples)
    best = min(impls, key=lambda i: i.median)
    rows = [
        (n, i.name, i.median, gflops(n, i.median), _frac(best.median, i.median), i.spread, errors[i.name])
        for i in impls
    ]
    print(f"  fastest tile at {n}: {best.name} ({gflops(n, best.median):.0f} GFLOP/s)")
    return ok, rows


def _describe_device(cuda) -> str:
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        return f"{name}, compute capability {dev.compute_capability}, {dev.MULTIPROCESSOR_COUNT} SMs"
    except Exception as e:  # the simulator has no device to describe
        return f"unknown ({type(e).__name__})"


def print_table(title: str, rows: list[tuple], frac_label: str) -> None:
    print(f"\n{title}")
    print(
        f"{'n':>5}  {'implementation':<34} {'median ms':>10} {'GFLOP/s':>9} {frac_label:>10} {'spread':>7} {'rel err':>9}"
    )
    for n, name, ms, gf, frac, spread, err in rows:
        print(f"{n:>5}  {name:<34} {ms:>10.3f} {gf:>9.0f} {frac:>10} {spread:>7.1%} {err:>9.1e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1024,2048,4096", help="comma-separated cube sizes")
    p.add_argument("--samples", type=int, default=30, help="timed batches per implementation (median)")
    p.add_argument("--tile", default=None, help="force one tile (a name from TILES) for the size table")
    p.add_argument("--no-sweep", action="store_true", help="skip the tile sweep")
    p.add_argument("--sweep-size", type=int, default=4096)
    p.add_argument("--tiles", default=None, help="comma-separated tile names for the sweep (default: all)")
    p.add_argument(
        "--simulator",
        action="store_true",
        help="allow numba's CUDA simulator (checks this script at tiny sizes, e.g. --sizes 8,24 "
        "--sweep-size 16 --samples 3; the timings mean nothing)",
    )
    args = p.parse_args(argv)

    reason = unavailable_reason(args.simulator)
    if reason:
        print(f"bench.matmul_gpu: skipped: {reason}")
        return 0
    from numba import cuda

    print(f"device: {_describe_device(cuda)}")
    print(f"peers: torch {'yes' if _torch() else 'no'}, cupy {'yes' if _cupy() else 'no'}")
    ok, rows = True, []
    for n in (int(s) for s in args.sizes.split(",") if s):
        good, r = run_size(n, args.samples, args.tile)
        ok &= good
        rows += r
    sweep_rows = []
    if not args.no_sweep:
        good, sweep_rows = sweep(
            args.sweep_size, max(10, args.samples // 2), args.tiles.split(",") if args.tiles else None
        )
        ok &= good
    print_table("float32 matmul (median of batches timed with CUDA events)", rows, "of cuBLAS")
    if sweep_rows:
        print_table(f"tile sweep at {args.sweep_size}", sweep_rows, "of best")
    print("\nall results within tolerance" if ok else "\nSOME RESULTS FAILED THE ERROR CHECK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
