"""Run a list of workloads on one device: build, time and check every implementation, derive rates,
floor fractions and speedups, check the targets, print the table and write the JSON. A Suite says
how a device runs them (bench/cpu.py, bench/gpu.py); the method is in bench/__main__.py."""

import datetime as _dt
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from bench import timing
from bench.cpu import ROOT, Suite
from bench.workload import Workload, error


def child(args: list[str], timeout_s: float, **env: str) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a child process, this checkout first on its path."""
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    cmd, env = [sys.executable, "-m", "bench", *args], dict(os.environ, PYTHONPATH=path, **env)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


def probe(device: str, workload: str, impl: str, quick: bool, timeout_s: float) -> tuple[bool, str]:
    """Build and call one implementation in a child process (`--probe`): (ok, why not or a note)."""
    t0 = time.perf_counter()
    try:
        out = child(["--device", device, "--probe", f"{workload}/{impl}"] + (["--quick"] if quick else []), timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"did not compile within {timeout_s:.0f} s (probe in a child process)"
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr or out.stdout).strip().splitlines() if ln.strip()]
        return False, "failed in probe: " + (lines[-1][:200] if lines else f"exit code {out.returncode}")
    return True, f"probe compiled and ran in {time.perf_counter() - t0:.1f} s"


def measure_floor(suite: Suite, quick: bool, log) -> Callable[[], tuple[float, dict, str]]:
    """Measure the copy bandwidth (read + write bytes / median seconds per copy, fastest method) before the
    workloads: the call that measures it after them, pools the samples, and gives (bytes per second, the
    JSON's copy_bandwidth, the line that says it)."""
    n, before = suite.copy_times(quick)
    per_copy, what = 8 * n, f"{suite.copy_what} 2**{int(math.log2(n))} float32, read+write"

    def rate(times: dict) -> float:
        return per_copy / min(timing.summary(t)["median"] for t in times.values())

    log(f"copy bandwidth: {rate(before) / 1e9:.2f} GB/s ({what})")

    def after() -> tuple[float, dict, str]:
        end = suite.copy_times(quick)[1]
        pooled = {k: timing.summary(before[k] + end[k]) for k in before}
        best = min(pooled, key=lambda k: pooled[k]["median"])
        bandwidth, copy = per_copy / pooled[best]["median"], pooled[best]
        doc = {"bytes_per_s": bandwidth, "GBps": bandwidth / 1e9, "method": best, "elements": n}
        doc.update(bytes_per_copy=per_copy, median_ms=copy["median"] * 1e3, min_ms=copy["min"] * 1e3)
        doc.update(spread=copy["spread"], by_method_GBps={k: per_copy / s["median"] / 1e9 for k, s in pooled.items()})
        doc.update(start_GBps=rate(before) / 1e9, end_GBps=rate(end) / 1e9, samples=len(before[best] + end[best]))
        methods = ", ".join(f"{k} {v:.2f}" for k, v in doc["by_method_GBps"].items())
        line = f"copy bandwidth ({what}): {bandwidth / 1e9:.2f} GB/s median from {best} ({methods} GB/s; start "
        line += f"{doc['start_GBps']:.2f}, end {doc['end_GBps']:.2f}; copy time {copy['median'] * 1e3:.2f} ms)"
        return bandwidth, doc, line

    return after


_msg = lambda e: f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"  # an exception's line


def run_workload(w: Workload, args, suite: Suite, log) -> tuple[list[dict], list[dict]]:
    """Build, time and check every implementation of w: (rows, skipped)."""
    inputs = w.make_inputs(args.quick)
    ref = w.reference(inputs)
    flops, nbytes = float(w.flops(inputs)), w.count_bytes(inputs, ref)
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    rows, skipped, fns, syncs, built = [], [], {}, {}, {}

    def row(impl, **extra):
        r = {"workload": w.name, "impl": impl.name, "note": impl.note, "shapes": shapes, "flops": flops}
        r.update(bytes=nbytes, cgma=flops / (nbytes / 4), unit=w.unit, **extra)
        rows.append(r)

    def skip(impl, reason):
        skipped.append({"workload": w.name, "impl": impl.name, "reason": reason})

    for impl in w.impls:
        why, note = suite.unavailable(impl.requires), impl.note
        if why is None and impl.cold and args.quick:
            why = "not run in --quick (cold compile)"
        elif why is None and impl.cold:
            log(f"  {w.name}/{impl.name}: probing in a child process (limit {suite.probe_s:.0f} s)...")
            ok, probed = probe(suite.device, w.name, impl.name, args.quick, suite.probe_s)
            why, note = (None, f"{note}; {probed}") if ok else (probed, note)
        if why is not None:
            skip(impl, why)
            continue
        try:
            t0 = time.perf_counter()
            fn, sync = impl.make(suite.convert(inputs, impl.requires)), suite.sync(impl.requires)
            fn()  # a first, untimed call (compiles if it has not yet)
            if sync is not None:
                sync()
            build_s = time.perf_counter() - t0
        except Exception as e:
            if impl.name == "jitnet":
                row(impl, status="ERROR", error_msg=_msg(e))
            else:
                skip(impl, f"raised {_msg(e)}")
            continue
        fns[impl.name], syncs[impl.name], built[impl.name] = fn, sync, (impl, note, build_s)

    if fns:
        if args.repeat is not None:
            plan = {"max_samples": args.repeat, "budget_s": None, "min_samples": args.repeat}
        elif args.quick:
            plan = {"max_samples": w.quick_samples, "budget_s": 1.0, "min_samples": 3}
        else:
            plan = {"max_samples": w.max_samples, "budget_s": suite.budget_s, "min_samples": 5}
        # warm-up batches: ~200 calls of a cheap call, 2 of a big one, 3 of one call to size a batch
        warmup = 3 if w.inner is None else max(1, 200 // w.inner) if w.inner > 1 else 2
        plan.update(inner=w.inner, warmup=warmup, syncs=syncs, batch_s=suite.batch_s, settle_s=w.settle_s)
        try:
            samples, calls, last = timing.time_interleaved(fns, **plan)
        except Exception:  # one implementation broke while timing: time them one by one to find it
            samples, calls, last = {}, {}, {}
            for name, fn in fns.items():
                try:
                    for got, one in zip((samples, calls, last), timing.time_interleaved({name: fn}, **plan)):
                        got.update(one)
                except Exception as e:
                    last[name] = _msg(e)
        for name, fn in fns.items():
            impl, note, build_s = built[name]
            if name not in samples:
                row(impl, status="ERROR", error_msg=str(last.get(name))[:200], note=note)
                continue
            s, n, inner = timing.summary(samples[name]), len(samples[name]), calls[name]
            try:
                err = error(last[name], ref, w.error_kind)
            except Exception as e:
                err, note = math.inf, f"{note}; result check raised {_msg(e)}"
            status = "ok" if err <= w.tol else "FAIL"
            extra = dict(getattr(fn, "info", {}))
            if hasattr(fn, "after"):
                extra.update(fn.after())
                if extra.get("traces", 1) != 1:
                    status, extra["error_msg"] = "FAIL", f"re-traced during timing ({extra['traces']} traces)"
            timed = {"median_ms": s["median"] * 1e3, "min_ms": s["min"] * 1e3, "max_ms": s["max"] * 1e3}
            timed.update(median_us=s["median"] * 1e6, spread=s["spread"], samples=n)
            timed.update({} if suite.batch_s is None else {"inner": inner}, calls=n * inner, build_s=build_s)
            checked = {"status": status, "max_error": err, "error_kind": w.error_kind, "tolerance": w.tol}
            row(impl, note=note, **checked, **timed, **extra)
    del fns, syncs, built
    gc.collect()
    return rows, skipped


def derive(rows: list[dict], bandwidth: float) -> None:
    """Fill in the rates, the floor fraction and the speedups (needs the run's copy bandwidth)."""
    jit = {r["workload"]: r for r in rows if r["impl"] == "jitnet" and "median_ms" in r}
    for r in rows:
        if "median_ms" not in r:
            continue
        t = r["median_ms"] / 1e3
        r.update(gflops=r["flops"] / t / 1e9, gbps=r["bytes"] / t / 1e9, floor_ms=r["bytes"] / bandwidth * 1e3)
        r["floor_frac"] = r["floor_ms"] / r["median_ms"]
        j = jit.get(r["workload"])
        if r["impl"] != "jitnet" and j is not None:
            r["speedup"] = r["median_ms"] / j["median_ms"]  # > 1: jitnet faster
    for r in jit.values():
        r["speedup_vs"] = {p["impl"]: p["speedup"] for p in rows if p["workload"] == r["workload"] and "speedup" in p}


def check_target(w: Workload, kind: str, goal, rows: list[dict]) -> dict:
    res = {"workload": w.name, "target": kind, "goal": goal}
    j = next((r for r in rows if r["workload"] == w.name and r["impl"] == "jitnet"), None)
    if j is None or "median_ms" not in j:
        res.update(met=False, detail="no jitnet timing")
    elif j["status"] != "ok":
        res.update(met=False, detail=f"jitnet row is {j['status']}")
    elif kind == "floor_frac":
        detail = f"floor {100 * j['floor_frac']:.0f}% (goal >= {100 * goal:.0f}%)"
        res.update(met=j["floor_frac"] >= goal, value=j["floor_frac"], detail=detail)
    elif kind == "max_us":
        detail = f"{j['median_us']:.1f} us per call (goal <= {goal:g} us)"
        res.update(met=j["median_us"] <= goal, value=j["median_us"], detail=detail)
    elif kind == "beats":
        ps = [r for r in rows if r["workload"] == w.name and "speedup" in r and (goal == "all" or r["impl"] in goal)]
        losses = [f"{r['impl']} {1 / r['speedup']:.2f}x faster" for r in ps if r["speedup"] < 1]
        detail = "slower: " + "; ".join(losses) if losses else "faster than " + ", ".join(r["impl"] for r in ps)
        missing = [] if goal == "all" else [g for g in goal if g not in {r["impl"] for r in ps}]
        detail += f" (not run: {', '.join(missing)})" if missing else ""
        res.update(met=bool(ps) and not losses, detail=detail)
    else:
        res.update(met=False, detail=f"unknown target {kind!r}")
    return res


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


_t = lambda ms, unit: f"{ms * 1e3:.2f}us" if unit == "us" else f"{ms:.2f}ms" if ms < 100 else f"{ms:.1f}ms"
_g = lambda x: f"{x:.2f}" if x < 100 else f"{x:.0f}"
HEAD = ["workload", "impl", "kern", "FLOPs", "bytes", "CGMA", "median", "min", "spread", "GFLOP/s", "GB/s"]
HEAD += ["floor%", "speedup", "max err", "status"]


def _cells(r: dict) -> list[str]:
    if "median_ms" not in r:
        status = f"{r.get('status', 'ERROR')}: {r.get('error_msg', '')}"
        return [r["workload"], r["impl"], *[""] * (len(HEAD) - 3), status]
    u, f = r["unit"], r["floor_frac"]
    return [
        *(r["workload"], r["impl"], str(r.get("kernels", "")), _si(r["flops"]), _si(r["bytes"], "B")),
        *(f"{r['cgma']:.2f}", _t(r["median_ms"], u), _t(r["min_ms"], u), f"{100 * r['spread']:.0f}%"),
        *(_g(r["gflops"]), _g(r["gbps"]), f"{100 * f:.1f}%" if f < 10 else f"{100 * f:.0f}%"),
        f"{r['speedup']:.2f}x" if "speedup" in r else "-",
        f"{r['max_error']:.1e}",
        r["status"] + (f" ({r['error_msg']})" if r.get("error_msg") else ""),
    ]


def table(rows: list[dict]) -> str:
    lines = [_cells(r) for r in rows]
    widths = [max([len(h)] + [len(x[i]) for x in lines]) for i, h in enumerate(HEAD)]

    def fmt(cells):
        return "  ".join(c.ljust(n) if i in (0, 1, 14) else c.rjust(n) for i, (c, n) in enumerate(zip(cells, widths)))

    out = [fmt(HEAD).rstrip(), fmt(["-" * n for n in widths]).rstrip()]
    for i, (r, cells) in enumerate(zip(rows, lines)):
        if i and r["workload"] != rows[i - 1]["workload"]:
            out.append("")
        out.append(fmt(cells).rstrip())
    return "\n".join(out)


def write_json(doc: dict, args) -> list[str]:
    """args.json; else bench/results/<device>-<timestamp>[-quick].json, and a full run's latest-<device>.json."""
    if args.json:
        paths = [args.json]
    else:
        stamp = doc["timestamp"].replace(":", "").replace("-", "")[:15]
        paths = [os.path.join(RESULTS_DIR, f"{doc['device']}-{stamp}{'-quick' if args.quick else ''}.json")]
        if not args.quick:
            paths.append(os.path.join(RESULTS_DIR, f"latest-{doc['device']}.json"))
    text = json.dumps(doc, indent=1, default=_json_default, allow_nan=True)
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(path + ".tmp", path)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return list(o) if isinstance(o, (set, tuple)) else str(o)


def print_report(doc: dict, suite, workloads: list[Workload], floor_line: str) -> None:
    """The run's JSON document as text: the machine, the floor, the load, the table, the notes under it."""
    machine, rows, load, failures = doc["machine"], doc["rows"], doc.get("load"), doc["failures"]
    print(f"jitnet bench ({'quick' if doc['quick'] else 'full'}), device {suite.device}: {suite.describe(machine)}")
    print(floor_line)
    if load:
        busy = " -- BUSY: multi-threaded rows are penalised, compare with care" if load["other_cores"] > 0.3 else ""
        others = f"other processes {load['other_cores']:.2f} of {machine['cores']} cores"
        print(f"machine load during the run: {others}, hypervisor steal {load['steal_cores']:.2f}{busy}")
    columns = "CGMA = FLOPs / (bytes/4); floor% = (bytes / copy bandwidth) / median; speedup = peer median / "
    print(f"{suite.method}{columns}jitnet median\n")
    print(table(rows) + "\n")
    for w in workloads:
        notes = sorted({(r["impl"], r["note"]) for r in rows if r["workload"] == w.name and r.get("note")})
        if notes:
            says = "; ".join(f"{i}: {n}" for i, n in notes)
            print(f"{w.name} ({w.error_kind} error, tolerance {w.tol:g}) -- {says}")
    for s in doc["skipped"]:
        print(f"skipped {s['workload']}/{s['impl']}: {s['reason']}")
    for line in suite.summary(rows):
        print(line)
    if doc["targets"]:
        print("\ntargets:")
        for t in doc["targets"]:
            print(f"  {t['workload']}: {t['target']}: {'met ' if t['met'] else 'MISS'} {t['detail']}")
    if failures:
        failed = [r["workload"] + "/" + r["impl"] for r in rows if r.get("status") != "ok"]
        print(f"\nFAILED rows: {', '.join(failed)}")


def run(suite: Suite, workloads: list[Workload], args, argv=None, extra: dict[str, Any] | None = None) -> int:
    """Run `workloads`, print the table and write the JSON (`extra` joins it): the exit status."""
    t_start, log = time.perf_counter(), partial(print, file=sys.stderr, flush=True)
    timestamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    run_meter = timing.LoadMeter() if suite.load_meter else None
    machine = suite.machine()
    floor = measure_floor(suite, args.quick, log)
    rows, skipped = [], []
    for w in workloads:
        log(f"{w.name}: {w.description}")
        t0 = time.perf_counter()
        meter = timing.LoadMeter() if suite.load_meter else None
        r, s = run_workload(w, args, suite, log)
        load = meter.read() if meter else {}
        for row in r if meter else ():
            row["load"] = load
        rows, skipped = rows + r, skipped + s
        busy = f", other processes kept {load['other_cores']:.2f} cores busy" if load else ""
        log(f"  done in {time.perf_counter() - t0:.1f} s{busy}")

    bandwidth, copy_doc, floor_line = floor()
    load = run_meter.read() if run_meter else None
    derive(rows, bandwidth)
    targets = [check_target(w, kind, goal, rows) for w in workloads for kind, goal in w.targets.items()]
    failures = sum(r.get("status") != "ok" for r in rows)

    doc = {"schema": 1, "device": suite.device, "timestamp": timestamp, "quick": args.quick}
    doc.update(argv=sys.argv[1:] if argv is None else list(argv), machine=machine, copy_bandwidth=copy_doc)
    doc.update({"definitions": suite.definitions, **({} if run_meter is None else {"load": load}), **(extra or {})})
    doc.update(rows=rows, skipped=skipped, targets=targets, failures=failures)
    doc["wall_s"] = time.perf_counter() - t_start
    print_report(doc, suite, workloads, floor_line)
    for p in write_json(doc, args):
        log(f"wrote {os.path.relpath(p)}")
    log(f"total {doc['wall_s']:.0f} s")
    return 1 if failures else 0
