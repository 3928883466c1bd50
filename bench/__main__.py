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
import sys

from bench import harness, peers, runner
from bench.workloads import REGISTRY


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


class CpuSuite(runner.Suite):
    """The CPU workloads of bench/workloads.py against numpy, numexpr and torch on this machine."""

    device = "cpu"
    registry = REGISTRY
    load_meter = harness.LoadMeter
    definitions = {
        "flops": "1 per elementwise op, comparison or transcendental per element; n per n-element reduction",
        "bytes": "minimum moved: each input read once, each output written once",
        "cgma": "flops / (bytes / 4): FLOPs per float32-sized global memory access",
        "floor_ms": "bytes / copy bandwidth (np.copyto of 2**24 float32, read+write, this run)",
        "floor_frac": "floor_ms / median_ms",
        "speedup": "peer median / jitnet median (> 1: jitnet faster)",
        "spread": "interquartile range / median of the samples",
        "max_error": "vs a float64 numpy reference; abs = max|y-ref|, rel = max|y-ref|/max|ref|",
    }

    def unavailable(self, requires):
        return None if peers.available(requires) else f"{requires} does not import"

    def probe(self, workload, impl, quick, timeout_s):
        return peers.probe(workload, impl, quick, timeout_s)

    def describe(self, machine):
        return (
            f"{machine['cpu_model']}, {machine['cores']} cores; numpy {machine['numpy']}, numba {machine['numba']}, "
            f"numexpr {machine['numexpr']}, torch {machine['torch']}"
        )

    def floor(self, quick, log):
        samples = 10 if quick else 15
        per_copy = 2 * 4 * harness.COPY_N
        _, copy_a = harness.copy_bandwidth(samples)
        log(f"copy bandwidth: {per_copy / copy_a.median / 1e9:.2f} GB/s (np.copyto, 2**24 float32)")

        def after():
            _, copy_b = harness.copy_bandwidth(samples)
            copy = harness.Stats(copy_a.samples + copy_b.samples)
            bandwidth = per_copy / copy.median
            line = (
                f"copy bandwidth (np.copyto 2**24 float32, read+write): {bandwidth / 1e9:.2f} GB/s median "
                f"(start {per_copy / copy_a.median / 1e9:.2f}, end {per_copy / copy_b.median / 1e9:.2f}; "
                f"copy time {copy.median * 1e3:.2f} ms)"
            )
            return (
                bandwidth,
                [line],
                {
                    "bytes_per_s": bandwidth,
                    "GBps": bandwidth / 1e9,
                    "elements": harness.COPY_N,
                    "bytes_per_copy": per_copy,
                    "median_ms": copy.median * 1e3,
                    "min_ms": copy.min * 1e3,
                    "spread": copy.spread,
                    "start_GBps": per_copy / copy_a.median / 1e9,
                    "end_GBps": per_copy / copy_b.median / 1e9,
                    "samples": copy.n,
                },
            )

        return after


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":  # GPU workloads, timing and floor: bench/gpu.py
        from bench import gpu

        return gpu.main(args, argv)
    return runner.run(CpuSuite(), args, argv)


if __name__ == "__main__":
    sys.exit(main())
