"""jitnet benchmark suite: `python -m bench [--only NAME[,NAME]] [--repeat N] [--quick] [--device cpu|cuda]
[--json PATH]`.

Method
------
For every workload (bench/workloads.py) and every implementation of it (jitnet and each peer that
imports: numpy, numexpr, torch eager, torch.compile), one row:

- FLOPs: one per elementwise op, comparison or transcendental per element, n per n-element
  reduction. Bytes: the minimum a perfectly fused kernel moves (each input read once, each output
  written once).
- CGMA (compute to global memory access) = FLOPs / (bytes / 4): FLOPs per float32-sized access.
  About 1 for an elementwise chain: such workloads are bound by memory, not arithmetic.
- Time: median over the samples (headline), min, and spread = interquartile range / median. The
  first call (jitnet's trace + compile, torch.compile's) and a warm-up call are never timed;
  implementations of a workload are timed in interleaved rounds with gc off (bench/harness.py).
  Each implementation runs up to 40 samples or ~5 s, at least 5 (`--quick`: 10 / ~1 s / 3;
  `--repeat N`: exactly N). call_overhead takes 200 samples of 50 back-to-back calls (10k calls).
- Memory floor: copy bandwidth = 2 * 4 * 2**24 bytes / median time of `np.copyto` of 2**24
  float32 (read + write), measured in this same run, before and after the workloads (samples
  pooled). floor time = bytes / copy bandwidth; "floor%" = floor time / median time (100% = runs
  at copy speed; np.copyto is one thread, so a 2-thread kernel can exceed 100%). Only the memory
  floor is used: none of these workloads has a CGMA high enough to be compute-bound.
- speedup (on peer rows) = peer median / jitnet median: > 1 means jitnet is faster.
- Correctness: every implementation's output (the result of its last timed call) is compared with
  a float64 numpy reference: max |y - ref| ("abs") or max |y - ref| / max |ref| ("rel"), against
  the workload's stated tolerance. A row over tolerance, or one that raised, is FAIL/ERROR in the
  table and JSON, and the exit status is 1.
- Peers: numpy written at its fastest honest form (preallocated outputs, in-place ufuncs with
  out=, x*x*x not x**3, np.dot for a sum of squares); numexpr with out= and float32 constants;
  torch with torch.set_num_threads(2) on torch.from_numpy views; torch.compile only when a child
  process compiles it within 60 s (skipped in --quick; the reason is printed otherwise).

`--device cuda` runs the GPU workloads of bench/gpu.py (gelu_chain, sum_squares, softmax_rows,
launch_overhead) on device-resident inputs against the device-to-device copy bandwidth; it needs a
real GPU and says so (exit status 0) where there is none or under NUMBA_ENABLE_CUDASIM=1. Its method
is in bench/gpu.py's docstring. `python -m bench.gpu_check` validates the CUDA backend and then runs it.

Output: a table on stdout, and JSON (rows, skipped peers, targets, copy bandwidth, machine and
library versions) in bench/results/<device>-<timestamp>.json and bench/results/latest-<device>.json
(a --quick run, or one with --json PATH, writes only its own file).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import sys
import time

import numpy as np

from bench import harness, peers
from bench.workloads import REGISTRY, Workload

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="jitnet benchmark suite")
    p.add_argument(
        "--only", help="comma-separated workload names: " + ", ".join(REGISTRY) + " (--device cuda: see bench/gpu.py)"
    )
    p.add_argument("--repeat", type=int, help="exactly N timing samples per implementation")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer samples: a smoke run")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", metavar="PATH", help="write the JSON here (instead of bench/results/)")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def select(only: str | None) -> list[Workload]:
    if not only:
        return list(REGISTRY.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in names]


# ---- running ------------------------------------------------------------------------------------


def run_workload(w: Workload, args, log) -> tuple[list[dict], list[dict]]:
    """Build, time and check every implementation of w: (rows, skipped)."""
    inputs = w.make_inputs(args.quick)
    ref = w.reference(inputs)
    flops, nbytes = float(w.flops(inputs)), float(w.bytes(inputs))
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    rows, skipped, fns, built = [], [], {}, {}

    def row(impl, **extra):
        r = {
            "workload": w.name,
            "impl": impl.name,
            "note": impl.note,
            "shapes": shapes,
            "flops": flops,
            "bytes": nbytes,
            "cgma": flops / (nbytes / 4),
            "unit": w.unit,
        }
        r.update(extra)
        rows.append(r)
        return r

    for impl in w.impls:
        is_peer = impl.name != "jitnet"
        if not peers.available(impl.requires):
            skipped.append({"workload": w.name, "impl": impl.name, "reason": f"{impl.requires} does not import"})
            continue
        if args.quick and not impl.in_quick:
            skipped.append({"workload": w.name, "impl": impl.name, "reason": "not run in --quick (cold compile)"})
            continue
        if impl.probe_s is not None:
            log(f"  {w.name}/{impl.name}: probing in a child process (limit {impl.probe_s:.0f} s)...")
            ok, why = peers.probe(w.name, impl.name, args.quick, impl.probe_s)
            if not ok:
                skipped.append({"workload": w.name, "impl": impl.name, "reason": why})
                continue
            impl_note = f"{impl.note}; {why}"
        else:
            impl_note = impl.note
        try:
            t0 = time.perf_counter()
            fn = impl.make(inputs)
            fn()  # a first, untimed call (compiles if it has not yet)
            build_s = time.perf_counter() - t0
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if is_peer:
                skipped.append({"workload": w.name, "impl": impl.name, "reason": f"raised {msg}"})
            else:
                row(impl, status="ERROR", error_msg=msg)
            continue
        fns[impl.name] = fn
        built[impl.name] = (impl, impl_note, build_s)

    if fns:
        if args.repeat is not None:
            plan = {"max_samples": args.repeat, "budget_s": None, "min_samples": args.repeat}
        elif args.quick:
            plan = {"max_samples": w.quick_samples, "budget_s": 1.0, "min_samples": 3}
        else:
            plan = {"max_samples": w.max_samples, "budget_s": 5.0, "min_samples": 5}
        warmup = max(1, 200 // w.inner) if w.inner > 1 else 2
        try:
            stats, last = harness.time_interleaved(fns, inner=w.inner, warmup=warmup, **plan)
        except Exception:
            # one implementation broke while timing: time them one by one to isolate it
            stats, last = {}, {}
            for name, fn in fns.items():
                try:
                    s, l_ = harness.time_interleaved({name: fn}, inner=w.inner, warmup=warmup, **plan)
                    stats.update(s)
                    last.update(l_)
                except Exception as e2:
                    stats[name] = None
                    last[name] = f"{type(e2).__name__}: {e2}"
        for name, fn in fns.items():
            impl, note, build_s = built[name]
            s = stats.get(name)
            if s is None:
                row(impl, status="ERROR", error_msg=str(last.get(name))[:200], note=note)
                continue
            err = harness.error(last[name], ref, w.error_kind)
            status = "ok" if err <= w.tol else "FAIL"
            extra = dict(getattr(fn, "info", {}))
            if hasattr(fn, "after"):
                extra.update(fn.after())
                if extra.get("traces", 1) != 1:
                    status = "FAIL"
                    extra["error_msg"] = f"re-traced during timing ({extra['traces']} traces)"
            row(
                impl,
                note=note,
                status=status,
                max_error=err,
                error_kind=w.error_kind,
                tolerance=w.tol,
                median_ms=s.median * 1e3,
                min_ms=s.min * 1e3,
                max_ms=s.max * 1e3,
                median_us=s.median * 1e6,
                spread=s.spread,
                samples=s.n,
                calls=s.n * w.inner,
                build_s=build_s,
                **extra,
            )
    del fns, built
    gc.collect()
    return rows, skipped


def derive(rows: list[dict], bandwidth: float) -> None:
    """Fill in the rates, the floor fraction and the speedups (needs the run's copy bandwidth)."""
    jit = {r["workload"]: r for r in rows if r["impl"] == "jitnet" and "median_ms" in r}
    for r in rows:
        if "median_ms" not in r:
            continue
        t = r["median_ms"] / 1e3
        r["gflops"] = r["flops"] / t / 1e9
        r["gbps"] = r["bytes"] / t / 1e9
        r["floor_ms"] = r["bytes"] / bandwidth * 1e3
        r["floor_frac"] = r["floor_ms"] / r["median_ms"]
        j = jit.get(r["workload"])
        if r["impl"] != "jitnet" and j is not None:
            r["speedup"] = r["median_ms"] / j["median_ms"]  # > 1: jitnet faster
    for r in rows:
        if r["impl"] == "jitnet" and "median_ms" in r:
            r["speedup_vs"] = {
                p["impl"]: p["speedup"] for p in rows if p["workload"] == r["workload"] and "speedup" in p
            }


def check_targets(workloads: list[Workload], rows: list[dict]) -> list[dict]:
    out = []
    for w in workloads:
        j = next((r for r in rows if r["workload"] == w.name and r["impl"] == "jitnet"), None)
        for kind, goal in w.targets.items():
            res = {"workload": w.name, "target": kind, "goal": goal}
            if j is None or "median_ms" not in j:
                res.update(met=False, detail="no jitnet timing")
            elif j["status"] != "ok":
                res.update(met=False, detail=f"jitnet row is {j['status']}")
            elif kind == "floor_frac":
                res.update(
                    met=j["floor_frac"] >= goal,
                    value=j["floor_frac"],
                    detail=f"floor {100 * j['floor_frac']:.0f}% (goal >= {100 * goal:.0f}%)",
                )
            elif kind == "max_us":
                res.update(
                    met=j["median_us"] <= goal,
                    value=j["median_us"],
                    detail=f"{j['median_us']:.1f} us per call (goal <= {goal:g} us)",
                )
            elif kind == "beats":
                ps = [
                    r
                    for r in rows
                    if r["workload"] == w.name and "speedup" in r and (goal == "all" or r["impl"] in goal)
                ]
                losses = [f"{r['impl']} {1 / r['speedup']:.2f}x faster" for r in ps if r["speedup"] < 1]
                missing = [] if goal == "all" else [g for g in goal if g not in {r["impl"] for r in ps}]
                res.update(
                    met=bool(ps) and not losses,
                    detail=("faster than " + ", ".join(r["impl"] for r in ps))
                    if not losses
                    else "slower: " + "; ".join(losses),
                )
                if missing:
                    res["detail"] += f" (not run: {', '.join(missing)})"
            else:
                res.update(met=False, detail=f"unknown target {kind!r}")
            out.append(res)
    return out


# ---- reporting ----------------------------------------------------------------------------------


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


def _t(ms: float, unit: str) -> str:
    if unit == "us":
        return f"{ms * 1e3:.2f}us"
    return f"{ms:.2f}ms" if ms < 100 else f"{ms:.1f}ms"


def table(rows: list[dict]) -> str:
    head = [
        "workload",
        "impl",
        "kern",
        "FLOPs",
        "bytes",
        "CGMA",
        "median",
        "min",
        "spread",
        "GFLOP/s",
        "GB/s",
        "floor%",
        "speedup",
        "max err",
        "status",
    ]
    lines = []
    for r in rows:
        if "median_ms" not in r:
            lines.append(
                [
                    r["workload"],
                    r["impl"],
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"{r.get('status', 'ERROR')}: {r.get('error_msg', '')}",
                ]
            )
            continue
        u = r["unit"]
        lines.append(
            [
                r["workload"],
                r["impl"],
                str(r["kernels"]) if "kernels" in r else "",
                _si(r["flops"]),
                _si(r["bytes"], "B"),
                f"{r['cgma']:.2f}",
                _t(r["median_ms"], u),
                _t(r["min_ms"], u),
                f"{100 * r['spread']:.0f}%",
                f"{r['gflops']:.2f}" if r["gflops"] < 100 else f"{r['gflops']:.0f}",
                f"{r['gbps']:.2f}" if r["gbps"] < 100 else f"{r['gbps']:.0f}",
                f"{100 * r['floor_frac']:.1f}%" if r["floor_frac"] < 10 else f"{100 * r['floor_frac']:.0f}%",
                f"{r['speedup']:.2f}x" if "speedup" in r else "-",
                f"{r['max_error']:.1e}",
                r["status"] + (f" ({r['error_msg']})" if r.get("error_msg") else ""),
            ]
        )
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}

    def fmt(cells):
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    out = [fmt(head), fmt(["-" * n for n in widths])]
    prev = None
    for r, cells in zip(rows, lines):
        if prev is not None and r["workload"] != prev:
            out.append("")
        prev = r["workload"]
        out.append(fmt(cells))
    return "\n".join(out)


def write_json(doc: dict, args) -> list[str]:
    if args.json:
        paths = [args.json]
    else:
        stamp = doc["timestamp"].replace(":", "").replace("-", "")[:15]
        suffix = "-quick" if args.quick else ""
        paths = [os.path.join(RESULTS_DIR, f"{args.device}-{stamp}{suffix}.json")]
        if not args.quick:
            paths.append(os.path.join(RESULTS_DIR, f"latest-{args.device}.json"))
    text = json.dumps(doc, indent=1, default=_json_default, allow_nan=True)
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":  # GPU workloads, timing and floor: bench/gpu.py
        from bench import gpu

        return gpu.main(args, argv)
    workloads = select(args.only)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    timestamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    run_meter = harness.LoadMeter()
    machine = harness.machine_info()
    copy_samples = 10 if args.quick else 15
    _, copy_a = harness.copy_bandwidth(copy_samples)
    log(f"copy bandwidth: {2 * 4 * harness.COPY_N / copy_a.median / 1e9:.2f} GB/s (np.copyto, 2**24 float32)")

    rows, skipped = [], []
    for w in workloads:
        log(f"{w.name}: {w.description}")
        t0 = time.perf_counter()
        meter = harness.LoadMeter()
        r, s = run_workload(w, args, log)
        load = meter.read()
        for row in r:
            row["load"] = load
        rows += r
        skipped += s
        busy = f", other processes kept {load['other_cores']:.2f} cores busy" if load else ""
        log(f"  done in {time.perf_counter() - t0:.1f} s{busy}")

    _, copy_b = harness.copy_bandwidth(copy_samples)
    copy = harness.Stats(copy_a.samples + copy_b.samples)
    bandwidth = 2 * 4 * harness.COPY_N / copy.median
    load = run_meter.read()
    derive(rows, bandwidth)
    targets = check_targets(workloads, rows)
    failures = [r for r in rows if r.get("status") != "ok"]

    print(
        f"jitnet bench ({'quick' if args.quick else 'full'}), device {args.device}: {machine['cpu_model']}, "
        f"{machine['cores']} cores; numpy {machine['numpy']}, numba {machine['numba']}, "
        f"numexpr {machine['numexpr']}, torch {machine['torch']}"
    )
    print(
        f"copy bandwidth (np.copyto 2**24 float32, read+write): {bandwidth / 1e9:.2f} GB/s median "
        f"(start {2 * 4 * harness.COPY_N / copy_a.median / 1e9:.2f}, end {2 * 4 * harness.COPY_N / copy_b.median / 1e9:.2f}; "
        f"copy time {copy.median * 1e3:.2f} ms)"
    )
    if load:
        print(
            f"machine load during the run: other processes {load['other_cores']:.2f} of {machine['cores']} cores, "
            f"hypervisor steal {load['steal_cores']:.2f}"
            + (" -- BUSY: multi-threaded rows are penalised, compare with care" if load["other_cores"] > 0.3 else "")
        )
    print("CGMA = FLOPs / (bytes/4); floor% = (bytes / copy bandwidth) / median; speedup = peer median / jitnet median")
    print()
    print(table(rows))
    print()
    notes = sorted({(r["workload"], r["impl"], r["note"]) for r in rows if r.get("note")}, key=lambda x: x[:2])
    for w in workloads:
        ns = [f"{i}: {n}" for wn, i, n in notes if wn == w.name]
        if ns:
            print(f"{w.name} ({w.error_kind} error, tolerance {w.tol:g}) -- " + "; ".join(ns))
    for s in skipped:
        print(f"skipped {s['workload']}/{s['impl']}: {s['reason']}")
    if targets:
        print()
        print("targets:")
        for t in targets:
            print(f"  {t['workload']}: {t['target']}: {'met ' if t['met'] else 'MISS'} {t['detail']}")
    if failures:
        print()
        print(f"FAILED rows: {', '.join(r['workload'] + '/' + r['impl'] for r in failures)}")

    doc = {
        "schema": 1,
        "device": args.device,
        "timestamp": timestamp,
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine,
        "copy_bandwidth": {
            "bytes_per_s": bandwidth,
            "GBps": bandwidth / 1e9,
            "elements": harness.COPY_N,
            "bytes_per_copy": 2 * 4 * harness.COPY_N,
            "median_ms": copy.median * 1e3,
            "min_ms": copy.min * 1e3,
            "spread": copy.spread,
            "start_GBps": 2 * 4 * harness.COPY_N / copy_a.median / 1e9,
            "end_GBps": 2 * 4 * harness.COPY_N / copy_b.median / 1e9,
            "samples": copy.n,
        },
        "definitions": {
            "flops": "1 per elementwise op, comparison or transcendental per element; n per n-element reduction",
            "bytes": "minimum moved: each input read once, each output written once",
            "cgma": "flops / (bytes / 4): FLOPs per float32-sized global memory access",
            "floor_ms": "bytes / copy bandwidth (np.copyto of 2**24 float32, read+write, this run)",
            "floor_frac": "floor_ms / median_ms",
            "speedup": "peer median / jitnet median (> 1: jitnet faster)",
            "spread": "interquartile range / median of the samples",
            "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|",
        },
        "load": load,
        "rows": rows,
        "skipped": skipped,
        "targets": targets,
        "failures": len(failures),
        "wall_s": time.perf_counter() - t_start,
    }
    for p in write_json(doc, args):
        log(f"wrote {os.path.relpath(p)}")
    log(f"total {doc['wall_s']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
