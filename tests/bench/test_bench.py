"""A smoke run of the CPU benchmark suite: two small workloads, their rows timed, checked and written."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives beside `jitnet`, not in the installed package
    sys.path.insert(0, str(ROOT))

ROW_KEYS = {"workload", "impl", "note", "shapes", "flops", "bytes", "cgma", "unit", "status", "max_error"}
ROW_KEYS |= {"error_kind", "tolerance", "median_ms", "min_ms", "max_ms", "median_us", "spread", "samples", "calls"}
ROW_KEYS |= {"build_s", "load", "gflops", "gbps", "floor_ms", "floor_frac"}
JITNET_KEYS = {"compile_s", "kernels", "kernel_kinds", "traces", "speedup_vs"}
DOC_KEYS = {"schema", "device", "timestamp", "quick", "argv", "machine", "copy_bandwidth", "definitions", "load"}
DOC_KEYS |= {"rows", "skipped", "targets", "failures", "wall_s"}


def test_quick_cpu_run_writes_checked_rows(tmp_path):
    from bench.__main__ import main

    out = tmp_path / "out.json"
    status = main(["--quick", "--repeat", "3", "--only", "call_overhead,sum_squares", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert status == 0 and doc["failures"] == 0
    assert set(doc) >= DOC_KEYS and doc["device"] == "cpu" and doc["copy_bandwidth"]["GBps"] > 0
    assert {r["workload"] for r in doc["rows"]} == {"call_overhead", "sum_squares"}
    for row in doc["rows"]:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["status"] == "ok" and row["max_error"] <= row["tolerance"] and row["samples"] == 3
        if row["impl"] == "jitnet":
            assert set(row) >= JITNET_KEYS and row["traces"] == 1
            assert all(isinstance(k, str) for k in row["kernel_kinds"])
        else:
            assert row["speedup"] > 0
