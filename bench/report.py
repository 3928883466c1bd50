"""The report of a run: the table, the notes, skipped implementations and targets on stdout, and the
JSON in bench/results/."""

from __future__ import annotations

import json
import os

import numpy as np

from bench.workload import Workload

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


def _t(ms: float, unit: str) -> str:
    return f"{ms * 1e3:.2f}us" if unit == "us" else f"{ms:.2f}ms" if ms < 100 else f"{ms:.1f}ms"


def _g(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


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
    """args.json; else bench/results/<device>-<timestamp>[-quick].json, and latest-<device>.json
    for a full run."""
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
