"""CPU matmul: jitnet's generated numba kernel (jitnet/backends/cpu/matmul.py) beside numpy (BLAS,
np.matmul with a preallocated out) and torch (torch.matmul with out=, 2 threads), timed in one run
in interleaved rounds with a pause before each implementation's turn (time_settled), medians
reported.

    python -m bench.matmul_cpu                 # the float32 table: 256^3 .. 2048^3
    python -m bench.matmul_cpu --sizes 1024 --dtype float64
    python -m bench.matmul_cpu --sweep         # tile sweep (MR x NR, KC, MC) at --sizes
    python -m bench.matmul_cpu --route         # small and skinny shapes: numba vs blas, for choose_path
    python -m bench.matmul_cpu --peak          # the machine's FMA peak (2 threads, no memory traffic)
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from bench.harness import LoadMeter, Stats
from jitnet.codegen import cache
from jitnet.backends.cpu import matmul as mm

THREADS = 2
SETTLE_S = 0.3  # pause before each implementation's turn (see time_settled)
QUIET_WAIT_S = 0.0  # --quiet N: before each row, wait up to N s for the other processes to go idle


def wait_quiet(max_wait_s: float = 0.0, threshold: float = 0.2) -> float:
    """Wait (up to max_wait_s) until other processes use less than `threshold` cores over half a
    second; returns the last reading (the bench runs on a shared 2-core machine)."""
    t_end = time.perf_counter() + max_wait_s
    while True:
        meter = LoadMeter()
        time.sleep(0.5)
        other = meter.read().get("other_cores", 0.0)
        if other < threshold or time.perf_counter() >= t_end:
            return other
        time.sleep(2.0)


def time_settled(fns: dict, budget_s: float = 3.0, rounds: int = 5, settle_s: float = SETTLE_S) -> dict[str, Stats]:
    """Per-call seconds of each callable, in interleaved rounds; before each implementation's turn
    in a round: a pause of settle_s and one untimed call. OpenBLAS's worker threads keep spinning
    for ~0.1 s after a call (and OpenMP's for a moment): timed right after numpy, the next
    implementation would share its cores with them (measured: jitnet's 10 ms 1024^3 takes 15-26 ms
    right after a numpy call, 10 ms after a 0.3 s pause)."""
    est = {}
    for name, fn in fns.items():  # warm-up, and a per-call estimate for the sample count
        fn()
        t0 = time.perf_counter()
        fn()
        est[name] = time.perf_counter() - t0
    per_round = {name: max(1, min(12, int(budget_s / rounds / max(t, 1e-7)))) for name, t in est.items()}
    stats = {name: Stats() for name in fns}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                time.sleep(settle_s)
                fn()
                for _ in range(per_round[name]):
                    t0 = time.perf_counter()
                    fn()
                    stats[name].samples.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return stats


def _operands(m, n, k, batch, dtype, a_trans, b_trans, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch * m * k).astype(dtype)
    b = rng.standard_normal(batch * k * n).astype(dtype)
    return a, b


def _views(a, b, m, n, k, batch, a_trans, b_trans):
    a3 = a.reshape(batch, k, m).transpose(0, 2, 1) if a_trans else a.reshape(batch, m, k)
    b3 = b.reshape(batch, n, k).transpose(0, 2, 1) if b_trans else b.reshape(batch, k, n)
    return a3, b3


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


def compile_kernel(m, n, k, batch, dtype, a_trans=False, b_trans=False, tile=None, parallel=None, pack_b=None):
    src = mm.matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile=tile, parallel=parallel, pack_b=pack_b)
    t0 = time.perf_counter()
    fn = cache.load(src, "kernel")
    return fn, time.perf_counter() - t0


def compare(
    m,
    n,
    k,
    batch=1,
    dtype=np.float32,
    a_trans=False,
    b_trans=False,
    tiles=(None,),
    peers=True,
    budget_s=3.0,
    check=True,
):
    """{name: (median seconds, GFLOP/s, spread)} for the kernels of `tiles` and the peers."""
    a, b = _operands(m, n, k, batch, dtype, a_trans, b_trans)
    a3, b3 = _views(a, b, m, n, k, batch, a_trans, b_trans)
    fns, compile_s, outs = {}, {}, {}
    for tile in tiles:
        tile, sep, pack = (tile or "").partition(":")  # "6x32k512m96", "6x32k512m96:b" (B packed), ":" (not)
        fn, ct = compile_kernel(
            m, n, k, batch, dtype, a_trans, b_trans, tile=tile or None, pack_b=pack == "b" if sep else None
        )
        out = np.empty(batch * m * n, dtype)
        name = "jitnet" if not sep and not tile else f"jitnet {tile or 'default'}{':' + (pack or '-') if sep else ''}"
        fns[name] = lambda fn=fn, out=out: fn(out, a, b)
        compile_s[name], outs[name] = ct, out
    if peers:
        out_np = np.empty((batch, m, n), dtype)
        fns["numpy"] = lambda: np.matmul(a3, b3, out=out_np)
        torch = _torch()
        if torch is not None:
            ta, tb = torch.from_numpy(a3.copy()), torch.from_numpy(b3.copy())
            if a_trans:
                ta = torch.from_numpy(a.reshape(batch, k, m)).transpose(1, 2)
            if b_trans:
                tb = torch.from_numpy(b.reshape(batch, n, k)).transpose(1, 2)
            tout = torch.empty((batch, m, n), dtype=ta.dtype)
            fns["torch"] = lambda: torch.matmul(ta, tb, out=tout)
    flops = 2.0 * m * n * k * batch
    stats = time_settled(fns, budget_s=budget_s)
    if check:
        ref = np.matmul(a3.astype(np.float64), b3.astype(np.float64))
        tol = (1e-4 if dtype == np.float32 else 1e-11) * max(1.0, float(np.abs(ref).max()))
        for name, out in outs.items():
            err = float(np.abs(out.reshape(ref.shape) - ref).max())
            if not err <= tol:
                raise AssertionError(f"{name}: max error {err:.3g} > {tol:.3g} at {m}x{n}x{k}")
    rows = {}
    for name, s in stats.items():
        rows[name] = (s.median, flops / s.median / 1e9, s.spread, compile_s.get(name), flops / s.min / 1e9)
    return rows


def table(sizes, dtype, a_trans=False, b_trans=False):
    meter = LoadMeter()
    print(
        f"# float matmul {np.dtype(dtype).name}, a_trans={a_trans} b_trans={b_trans}; GFLOP/s (median); "
        f"numba threads={THREADS}, torch threads={THREADS}"
    )
    print(
        f"{'size':>6} | {'jitnet':>8} {'numpy':>8} {'torch':>8} | {'jitnet/numpy':>12} | {'compile s':>9} | spread j/np/t"
    )
    for s in sizes:
        wait_quiet(QUIET_WAIT_S)
        rows = compare(s, s, s, 1, dtype, a_trans, b_trans)
        j, n_, t = rows["jitnet"], rows["numpy"], rows.get("torch", (0, 0, 0, None))
        print(
            f"{s:>6} | {j[1]:8.1f} {n_[1]:8.1f} {t[1]:8.1f} | {j[1] / n_[1]:12.2f} | {j[3]:9.2f} | "
            f"{j[2]:.2f}/{n_[2]:.2f}/{t[2]:.2f}",
            flush=True,
        )
    print("# machine load during the run:", {k: round(v, 2) for k, v in meter.read().items()})


def sweep(sizes, dtype, tiles):
    for s in sizes:
        wait_quiet(QUIET_WAIT_S)
        rows = compare(s, s, s, 1, dtype, tiles=tiles, peers=True)
        print(f"## {s}^3 {np.dtype(dtype).name}")
        for name, (med, gf, spread, ct, best) in sorted(rows.items(), key=lambda r: -r[1][1]):
            print(
                f"  {name:>24}: {gf:7.1f} GFLOP/s (best {best:6.1f})  spread {spread:.2f}"
                + (f"  compile {ct:.1f}s" if ct else ""),
                flush=True,
            )


ROUTE_SHAPES = [(s, s, s) for s in (4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 192, 256)] + [
    (1, 1024, 1024),
    (1024, 1, 1024),
    (2, 1024, 1024),
    (1024, 2, 1024),
    (4, 1024, 1024),
    (1024, 4, 1024),
    (8, 1024, 1024),
    (1024, 8, 1024),
    (1024, 16, 1024),
    (16, 1024, 1024),
    (1024, 1024, 1),
    (1024, 1024, 8),
    (64, 4096, 64),
    (4096, 64, 64),
    (64, 64, 4096),
    (32, 512, 512),
    (512, 32, 512),
    (128, 784, 256),
    (256, 128, 784),
    (784, 128, 256),
]


def route(dtype, shapes=None):
    """Times per call of the kernel the rules pick, the kernel forced serial and forced parallel,
    and numpy (BLAS), on the shapes that decide choose_path and SERIAL_MAX_WORK."""
    print(f"# {np.dtype(dtype).name}: microseconds per call (median)")
    print(
        f"# {'m':>5} {'n':>5} {'k':>5} | {'jitnet':>9} {'serial':>9} {'parallel':>9} {'numpy':>9} | "
        f"best jitnet/numpy | choose_path"
    )
    for m, n, k in shapes or ROUTE_SHAPES:
        a, b = _operands(m, n, k, 1, dtype, False, False)
        a3, b3 = _views(a, b, m, n, k, 1, False, False)
        out, out_np = np.empty(m * n, dtype), np.empty((1, m, n), dtype)
        fns = {}
        for name, par in (("jitnet", None), ("serial", False), ("parallel", True)):
            fn, _ = compile_kernel(m, n, k, 1, dtype, parallel=par)
            fns[name] = lambda fn=fn: fn(out, a, b)
        fns["numpy"] = lambda: np.matmul(a3, b3, out=out_np)
        for _ in range(4):  # a row hit by other processes (a median far above the best call) runs again
            wait_quiet(QUIET_WAIT_S)
            st = time_settled(fns, budget_s=0.3)
            if all(s.median < 2 * s.min for s in st.values()):
                break
        us = {name: s.median * 1e6 for name, s in st.items()}
        print(
            f"  {m:>5} {n:>5} {k:>5} | {us['jitnet']:9.1f} {us['serial']:9.1f} {us['parallel']:9.1f} "
            f"{us['numpy']:9.1f} | {us['jitnet'] / us['numpy']:17.2f} | {mm.choose_path(m, n, k)}",
            flush=True,
        )


def peak():
    """2 threads of independent zmm FMAs: the machine's float32 FMA ceiling."""
    src = (
        "\n".join(
            [
                "import numpy as np",
                "from numba import njit, prange",
                "from jitnet.backends.cpu.intrinsics import vsplat, vfma, vstore",
                "@njit(parallel=True, cache=True)",
                "def kernel(out, n):",
                "    for t in prange(2):",
                "        x = vsplat(np.float32(1.0000001), 16)",
                "        y = vsplat(np.float32(0.9999999), 16)",
                *[f"        c{i} = vsplat(np.float32({i}), 16)" for i in range(16)],
                "        for p in range(n):",
                *[f"            c{i} = vfma(x, c{i}, y)" for i in range(16)],
                *[f"        vstore(out, t * 256 + {i * 16}, c{i})" for i in range(16)],
            ]
        )
        + "\n"
    )
    fn = cache.load(src, "kernel")
    out = np.zeros(512, np.float32)
    n = 2_000_000
    fn(out, 10)
    res = []
    for _ in range(7):
        t0 = time.perf_counter()
        fn(out, n)
        res.append(2 * 2 * 16 * 16 * n / (time.perf_counter() - t0) / 1e9)
    print(f"FMA peak, 2 threads, float32: median {np.median(res):.1f} GFLOP/s, max {max(res):.1f}")


SWEEP_F32 = [
    "6x32k256m96",
    "6x32k128m96",
    "6x32k384m96",
    "6x32k512m96",
    "6x32k256m48",
    "6x32k256m192",
    "6x32k256m384",
    "8x32k256m96",
    "4x64k256m96",
    "4x48k256m96",
    "14x16k256m98",
    "8x48k256m96",
]
SWEEP_F64 = ["6x16k256m96", "6x16k128m96", "8x16k256m96", "4x32k256m96", "14x8k256m98", "4x24k256m96"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--a-trans", action="store_true")
    p.add_argument("--b-trans", action="store_true")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--tiles", nargs="*", default=None)
    p.add_argument("--route", action="store_true")
    p.add_argument("--peak", action="store_true")
    p.add_argument("--shapes", nargs="*", help="m,n,k shapes for --route")
    p.add_argument("--quiet", type=float, default=0.0, help="wait up to this many seconds for a quiet machine per row")
    args = p.parse_args(argv)
    global QUIET_WAIT_S
    QUIET_WAIT_S = args.quiet
    dtype = np.dtype(args.dtype).type
    if args.peak:
        peak()
    elif args.sweep:
        tiles = args.tiles or (SWEEP_F32 if dtype == np.float32 else SWEEP_F64)
        sweep(args.sizes, dtype, tiles)
    elif args.route:
        route(dtype, [tuple(int(x) for x in s.split(",")) for s in args.shapes] if args.shapes else None)
    else:
        table(args.sizes, dtype, args.a_trans, args.b_trans)


if __name__ == "__main__":
    main()
