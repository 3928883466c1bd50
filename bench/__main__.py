"""jitnet benchmark suite: `python -m bench [--only NAME[,NAME]] [--repeat N] [--quick] [--device cpu|cuda]
[--json PATH] [--validate-only] [--compile]`.

Method
------
For every workload (`select` below) and every implementation of it (jitnet and each peer that
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

`--device cuda` first validates the CUDA backend against the numpy reference interpreter, then runs
the workloads that have a GPU form (call_overhead as launch_overhead; matmul_kernel_1024/2048 and
matmul_tiles too; the train steps also at batch 1024 (MLP) and 512 (LeNet)) on device-resident
inputs against the device-to-device copy bandwidth (2**26 float32, the faster of a copy kernel and
cuMemcpyDtoD; all in bench/gpu.py). Without a usable GPU it
says so and exits 0; under NUMBA_ENABLE_CUDASIM=1 it only validates, at tiny sizes, and only with
--validate-only (the simulator's timings mean nothing). Groups of CPU tuning workloads run by name:
`--only matmul_sizes|matmul_tiles|matmul_route|fma_peak` (bench/kernels_nn.py); on either device the
transformer workloads (gpt_train_step, layer_norm_fwd_bwd, causal_attention_fwd_bwd: bench/transformer.py)
by name, or all three as `--only transformer`. `--compile`: after
the workloads, the LeNet train step's cold compile and first step in a child process with an empty
JITNET_CACHE_DIR, then in a second one (the disk cache warm).

Output: a table on stdout, and JSON (rows, skipped peers, targets, copy bandwidth, machine and
library versions) in bench/results/<device>-<timestamp>.json and bench/results/latest-<device>.json
(a --quick run, or one with --json PATH, writes only its own file).
"""

import argparse
import json
import sys
import tempfile

from bench import elementwise, kernels_nn, runner, train_steps, transformer
from bench.cpu import Suite
from bench.workload import Workload


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="jitnet benchmark suite")
    p.add_argument("--only", help="comma-separated workloads or groups (an unknown name lists the known ones)")
    p.add_argument("--repeat", type=int, help="exactly N timing samples per implementation")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer samples: a smoke run")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", metavar="PATH", help="write the JSON here (instead of bench/results/)")
    p.add_argument("--validate-only", action="store_true", help="--device cuda: validate the backend, time nothing")
    p.add_argument("--compile", action="store_true", help="then time the LeNet train step's cold compile")
    p.add_argument("--probe", metavar="WORKLOAD/IMPL", help=argparse.SUPPRESS)  # runner.probe's child process
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def default(device: str) -> list[Workload]:
    """The workloads a run on `device` takes by default."""
    both = elementwise.WORKLOADS + kernels_nn.WORKLOADS + train_steps.WORKLOADS
    if device == "cuda":
        gpu = [w.on("cuda") for w in both if w.gpu is not None] + kernels_nn.gpu_matmul_kernels()
        return gpu + [w.on("cuda") for w in train_steps.GPU_WORKLOADS]
    return [w.on("cpu") for w in both]


def everything(device: str) -> dict[str, list[Workload]]:
    """Each workload under its name, and each group (run only by name) under its own."""
    groups = (kernels_nn.cpu_groups() if device == "cpu" else {}) | transformer.groups(device)
    return {w.name: [w] for w in default(device) + [w for ws in groups.values() for w in ws]} | groups


def select(device: str, only: str | None) -> list[Workload]:
    """The workloads `--only` names (workloads or groups, comma-separated); the defaults without it."""
    if not only:
        return default(device)
    known, names = everything(device), [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)} on {device}; known: {', '.join(known)}")
    return [w for n in names for w in known[n]]


NO_GPU = "no usable CUDA GPU here (numba.cuda.is_available() is False: no GPU, no driver, or the 'cuda' extra is "
NO_GPU += "not installed); nothing to run on --device cuda. Use --device cpu."
SIMULATOR = "NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator runs kernels as Python threads, so GPU timings would be "
SIMULATOR += "meaningless. Unset it and run on a machine with a CUDA GPU (the simulator is for tests: "
SIMULATOR += "NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda; a dry run of the validation: add --validate-only)."


def make_suite(device: str) -> Suite:
    if device == "cuda":
        from bench.gpu import GpuSuite

        return GpuSuite()
    return Suite()


def probe(args: argparse.Namespace) -> int:
    """The child process of runner.probe: build one implementation, call it twice, print its build info."""
    suite, (workload, impl_name) = make_suite(args.device), args.probe.split("/")
    w = everything(args.device)[workload][0]
    impl = w.impl(impl_name)
    if suite.unavailable(impl.requires):  # also sets the peer's threads
        raise SystemExit(suite.unavailable(impl.requires))
    fn, sync = impl.make(suite.convert(w.make_inputs(args.quick), impl.requires)), suite.sync(impl.requires)
    for _ in range(2):
        fn()
        if sync is not None:
            sync()
    print(json.dumps(getattr(fn, "info", {})))
    return 0


def cold_compile() -> None:
    """--compile: the jitnet row's compile_s of lenet_train_step (build the step, compile it, take one step)
    in a fresh process with an empty JITNET_CACHE_DIR, then in a second process (the disk cache warm)."""
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold (empty cache)", "second process (disk cache)"):
            out = runner.child(["--probe", "lenet_train_step/jitnet"], 600.0, JITNET_CACHE_DIR=cache)
            out.check_returncode()
            compile_s = json.loads(out.stdout.splitlines()[-1])["compile_s"]
            print(f"lenet_train_step compile + first step, {label}: {compile_s:.2f} s")


def run_cuda(args: argparse.Namespace, argv: list[str] | None) -> int:
    from jitnet.backends.cuda.device import cuda_available, simulator

    if not cuda_available() or (simulator() and not args.validate_only):
        print("jitnet bench --device cuda: " + (NO_GPU if not cuda_available() else SIMULATOR))
        return 0
    from bench.gpu import validate

    workloads = [] if args.validate_only else select("cuda", args.only)
    passed, total = validate(big=not simulator(), log=lambda msg: print(msg, flush=True))
    print(f"validation: {passed}/{total} ok\n")
    if args.validate_only:
        return 0 if passed == total else 1
    rc = runner.run(make_suite("cuda"), workloads, args, argv, {"validation": {"passed": passed, "total": total}})
    return 1 if rc or passed != total else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe(args)
    status = (
        run_cuda(args, argv) if args.device == "cuda" else runner.run(Suite(), select("cpu", args.only), args, argv)
    )
    if args.compile:
        cold_compile()
    return status


if __name__ == "__main__":
    sys.exit(main())
