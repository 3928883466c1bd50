"""The runner of the CPU suite (`python -m bench`, bench/__main__.py) and the GPU suite
(`python -m bench --device cuda`, bench/gpu.py): build, time and check every implementation of every
workload, derive rates, floor fractions and speedups, check the targets, print the table and write
the JSON. A Suite says what differs between the two (the method is in bench/__main__.py's
docstring, and bench/gpu.py's for the GPU)."""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import harness
from bench.workloads import Impl, Workload

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Suite:
    """What differs between the CPU suite and the GPU suite; `run` does the rest."""

    device: str  # "cpu" or "cuda": the JSON's "device" and the results file names
    registry: dict[str, Workload]
    label = "workload"  # as `--only` names an unknown one
    budget_s = 5.0  # seconds of samples per implementation in a full run
    batch_s: float | None = None  # None: w.inner calls a sample; else batches sized to last this long (rows' "inner")
    load_meter: Callable[[], harness.LoadMeter] | None = None  # other processes' load, in the rows and the JSON
    method = ""  # opens the line that defines the table's columns
    definitions: dict[str, str]  # the JSON's definitions
    note_order: Callable | None = None  # sort key of the (impl, note) pairs printed under the table

    def unavailable(self, requires: str | None) -> str | None:
        """Why an implementation that needs `requires` cannot run here, or None."""
        raise NotImplementedError

    def probe(self, workload: str, impl: str, quick: bool, timeout_s: float) -> tuple[bool, str]:
        """Build and call one implementation in a child process: (ok, why not or a timing note)."""
        raise NotImplementedError

    def build(self, impl: Impl, inputs: dict) -> tuple[Callable[[], Any], Callable[[], None] | None]:
        """The timed call, and the call that waits for its device (None: it is synchronous)."""
        return impl.make(inputs), None

    def machine(self) -> dict:
        return harness.machine_info()

    def describe(self, machine: dict) -> str:
        """The machine, as the first line says it."""
        raise NotImplementedError

    def floor(self, quick: bool, log) -> Callable[[], tuple[float, list[str], dict]]:
        """Measure the copy bandwidth before the workloads; returns the call that measures it again
        after them and gives (bytes per second, the lines that say it, the JSON's copy_bandwidth)."""
        raise NotImplementedError

    def summary(self, rows: list[dict]) -> list[str]:
        """Lines printed after the skipped implementations."""
        return []


def select(only: str | None, suite: Suite) -> list[Workload]:
    if not only:
        return list(suite.registry.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in suite.registry]
    if unknown:
        raise SystemExit(f"unknown {suite.label}(s) {', '.join(unknown)}; known: {', '.join(suite.registry)}")
    return [suite.registry[n] for n in names]


# ---- running ------------------------------------------------------------------------------------


def run_workload(w: Workload, args, suite: Suite, log) -> tuple[list[dict], list[dict]]:
    """Build, time and check every implementation of w: (rows, skipped)."""
    inputs = w.make_inputs(args.quick)
    ref = w.reference(inputs)
    flops, nbytes = float(w.flops(inputs)), float(w.bytes(inputs))
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    rows, skipped, fns, syncs, built = [], [], {}, {}, {}

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
        why = suite.unavailable(impl.requires)
        if why is not None:
            skipped.append({"workload": w.name, "impl": impl.name, "reason": why})
            continue
        if args.quick and not impl.in_quick:
            skipped.append({"workload": w.name, "impl": impl.name, "reason": "not run in --quick (cold compile)"})
            continue
        if impl.probe_s is not None:
            log(f"  {w.name}/{impl.name}: probing in a child process (limit {impl.probe_s:.0f} s)...")
            ok, why = suite.probe(w.name, impl.name, args.quick, impl.probe_s)
            if not ok:
                skipped.append({"workload": w.name, "impl": impl.name, "reason": why})
                continue
            impl_note = f"{impl.note}; {why}"
        else:
            impl_note = impl.note
        try:
            t0 = time.perf_counter()
            fn, sync = suite.build(impl, inputs)
            fn()  # a first, untimed call (compiles if it has not yet)
            if sync is not None:
                sync()
            build_s = time.perf_counter() - t0
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if impl.name != "jitnet":
                skipped.append({"workload": w.name, "impl": impl.name, "reason": f"raised {msg}"})
            else:
                row(impl, status="ERROR", error_msg=msg)
            continue
        fns[impl.name], syncs[impl.name] = fn, sync
        built[impl.name] = (impl, impl_note, build_s)

    if fns:
        if args.repeat is not None:
            plan = {"max_samples": args.repeat, "budget_s": None, "min_samples": args.repeat}
        elif args.quick:
            plan = {"max_samples": w.quick_samples, "budget_s": 1.0, "min_samples": 3}
        else:
            plan = {"max_samples": w.max_samples, "budget_s": suite.budget_s, "min_samples": 5}
        # warm-up batches: ~200 calls of a cheap call, 2 of a big one, 3 of one call to size a batch
        warmup = 3 if w.inner is None else max(1, 200 // w.inner) if w.inner > 1 else 2
        plan.update(inner=w.inner, warmup=warmup, syncs=syncs, batch_s=suite.batch_s)
        try:
            stats, last = harness.time_interleaved(fns, **plan)
        except Exception:
            # one implementation broke while timing: time them one by one to isolate it
            stats, last = {}, {}
            for name, fn in fns.items():
                try:
                    s, l_ = harness.time_interleaved({name: fn}, **plan)
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
            try:
                err = harness.error(last[name], ref, w.error_kind)
            except Exception as e:
                err = math.inf
                note = f"{note}; result check raised {type(e).__name__}: {e}"
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
                **({} if suite.batch_s is None else {"inner": s.inner}),  # batches sized per implementation
                calls=s.n * s.inner,
                build_s=build_s,
                **extra,
            )
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
            status = f"{r.get('status', 'ERROR')}: {r.get('error_msg', '')}"
            lines.append([r["workload"], r["impl"], *[""] * (len(head) - 3), status])
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
        paths = [os.path.join(RESULTS_DIR, f"{doc['device']}-{stamp}{suffix}.json")]
        if not args.quick:
            paths.append(os.path.join(RESULTS_DIR, f"latest-{doc['device']}.json"))
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


# ---- the suite ----------------------------------------------------------------------------------


def run(suite: Suite, args, argv=None) -> int:
    """Run the selected workloads of `suite`, print the table and write the JSON: the exit status."""
    workloads = select(args.only, suite)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    timestamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meter = suite.load_meter
    run_meter = meter() if meter else None
    machine = suite.machine()
    floor = suite.floor(args.quick, log)

    rows, skipped = [], []
    for w in workloads:
        log(f"{w.name}: {w.description}")
        t0 = time.perf_counter()
        w_meter = meter() if meter else None
        r, s = run_workload(w, args, suite, log)
        load = w_meter.read() if w_meter else {}
        if w_meter:
            for row in r:
                row["load"] = load
        rows += r
        skipped += s
        busy = f", other processes kept {load['other_cores']:.2f} cores busy" if load else ""
        log(f"  done in {time.perf_counter() - t0:.1f} s{busy}")

    bandwidth, floor_lines, copy_doc = floor()
    load = run_meter.read() if run_meter else None
    derive(rows, bandwidth)
    targets = check_targets(workloads, rows)
    failures = [r for r in rows if r.get("status") != "ok"]

    print(f"jitnet bench ({'quick' if args.quick else 'full'}), device {suite.device}: {suite.describe(machine)}")
    for line in floor_lines:
        print(line)
    if load:
        print(
            f"machine load during the run: other processes {load['other_cores']:.2f} of {machine['cores']} cores, "
            f"hypervisor steal {load['steal_cores']:.2f}"
            + (" -- BUSY: multi-threaded rows are penalised, compare with care" if load["other_cores"] > 0.3 else "")
        )
    print(
        suite.method + "CGMA = FLOPs / (bytes/4); floor% = (bytes / copy bandwidth) / median; "
        "speedup = peer median / jitnet median"
    )
    print()
    print(table(rows))
    print()
    for w in workloads:
        notes = sorted(
            {(r["impl"], r["note"]) for r in rows if r["workload"] == w.name and r.get("note")}, key=suite.note_order
        )
        if notes:
            print(
                f"{w.name} ({w.error_kind} error, tolerance {w.tol:g}) -- " + "; ".join(f"{i}: {n}" for i, n in notes)
            )
    for s in skipped:
        print(f"skipped {s['workload']}/{s['impl']}: {s['reason']}")
    for line in suite.summary(rows):
        print(line)
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
        "device": suite.device,
        "timestamp": timestamp,
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine,
        "copy_bandwidth": copy_doc,
        "definitions": suite.definitions,
        **({} if run_meter is None else {"load": load}),
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
