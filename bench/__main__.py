"""jitnet benchmark suite: `python -m bench [--only NAME[,NAME]] [--repeat N] [--quick] [--device cpu|cuda]
[--json PATH] [--validate-only]`.

Method
------
For every workload (bench/registry.py) and every implementation of it (jitnet and each peer that
imports: numpy, numexpr, torch eager, torch.compile; on the GPU torch, cupy and hand-written
numba.cuda kernels), one row:

- FLOPs: one per elementwise op, comparison or transcendental per element, n per n-element
  reduction. Bytes: the minimum a perfectly fused kernel moves (each input read once, each output
  written once).
- CGMA (compute to global memory access) = FLOPs / (bytes / 4): FLOPs per float32-sized access.
  About 1 for an elementwise chain: such workloads are bound by memory, not arithmetic.
- Time: median over the samples (headline), min, and spread = interquartile range / median. The
  first call (jitnet's trace + compile, torch.compile's) and a warm-up call are never timed;
  implementations of a workload are timed in interleaved rounds with gc off (bench/timing.py).
  Each implementation runs up to 40 samples or ~5 s, at least 5 (`--quick`: 10 / ~1 s / 3;
  `--repeat N`: exactly N). call_overhead takes 200 samples of 50 back-to-back calls (10k calls).
- Memory floor: copy bandwidth = 2 * 4 * 2**24 bytes / median time of `np.copyto` of 2**24
  float32 (read + write), measured in this same run, before and after the workloads (samples
  pooled). floor time = bytes / copy bandwidth; "floor%" = floor time / median time (100% = runs
  at copy speed; np.copyto is one thread, so a 2-thread kernel can exceed 100%). Only the memory
  floor is used: none of these workloads has a CGMA high enough to be compute-bound.
- speedup (on peer rows) = peer median / jitnet median: > 1 means jitnet is faster.
- Correctness: every implementation's output (the result of its last timed call) is compared with
  a float64 numpy reference: max |y - ref| ("abs"), max |y - ref| / max |ref| ("rel") or
  ||y - ref|| / ||ref|| ("fro"), against the workload's stated tolerance. A row over tolerance, or
  one that raised, is FAIL/ERROR in the table and JSON, and the exit status is 1.
- Peers: numpy written at its fastest honest form (preallocated outputs, in-place ufuncs with
  out=, x*x*x not x**3, np.dot for a sum of squares); numexpr with out= and float32 constants;
  torch with torch.set_num_threads(2) on torch.from_numpy views; torch.compile only when a child
  process compiles it within 60 s (skipped in --quick; the reason is printed otherwise).

`--device cuda` first validates the CUDA backend against the numpy reference interpreter
(bench/validate_cuda.py), then runs the GPU workloads (gelu_chain, sum_squares, softmax_rows,
launch_overhead, matmul, matmul_bias_relu, conv_lenet, conv_lenet_bwd, matmul_kernel_1024/2048,
matmul_tiles) on device-resident inputs against the device-to-device copy bandwidth (2**26
float32, the faster of a copy kernel and cuMemcpyDtoD; timing in bench/gpu.py). Without a usable
GPU it says so and exits 0; under NUMBA_ENABLE_CUDASIM=1 it only validates, at tiny sizes, and
only with --validate-only (the simulator's timings mean nothing). Groups of tuning workloads run
by name: `--only matmul_sizes|matmul_tiles|matmul_route|fma_peak` (bench/matmul_kernels.py).

Output: a table on stdout, and JSON (rows, skipped peers, targets, copy bandwidth, machine and
library versions) in bench/results/<device>-<timestamp>.json and bench/results/latest-<device>.json
(a --quick run, or one with --json PATH, writes only its own file).
"""

from __future__ import annotations

import argparse
import sys

from bench import registry, runner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="jitnet benchmark suite")
    p.add_argument("--only", help="comma-separated workloads or groups (an unknown name lists the known ones)")
    p.add_argument("--repeat", type=int, help="exactly N timing samples per implementation")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer samples: a smoke run")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", metavar="PATH", help="write the JSON here (instead of bench/results/)")
    p.add_argument("--validate-only", action="store_true", help="--device cuda: validate the backend, time nothing")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


NO_GPU = (
    "no usable CUDA GPU here (numba.cuda.is_available() is False: no GPU, no driver, or the 'cuda' extra is "
    "not installed); nothing to run on --device cuda. Use --device cpu."
)
SIMULATOR = (
    "NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator runs kernels as Python threads, so GPU timings would be "
    "meaningless. Unset it and run on a machine with a CUDA GPU (the simulator is for tests: NUMBA_ENABLE_CUDASIM=1 "
    "python -m pytest -m cuda; a dry run of the validation: add --validate-only)."
)


def run_cuda(args: argparse.Namespace, argv: list[str] | None) -> int:
    from jitnet.backends.cuda.device import cuda_available, simulator

    if not cuda_available() or (simulator() and not args.validate_only):
        print("jitnet bench --device cuda: " + (NO_GPU if not cuda_available() else SIMULATOR))
        return 0
    from bench import gpu, validate_cuda

    workloads = [] if args.validate_only else registry.select("cuda", args.only)
    passed, total = validate_cuda.validate(big=not simulator(), log=lambda msg: print(msg, flush=True))
    print(f"validation: {passed}/{total} ok\n")
    if args.validate_only:
        return 0 if passed == total else 1
    rc = runner.run(gpu.GpuSuite(), workloads, args, argv, {"validation": {"passed": passed, "total": total}})
    return 1 if rc or passed != total else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        return run_cuda(args, argv)
    from bench.cpu import CpuSuite

    return runner.run(CpuSuite(), registry.select("cpu", args.only), args, argv)


if __name__ == "__main__":
    sys.exit(main())
