"""Data parallelism on this machine: `python -m bench.distributed [--quick] [--json PATH] [--only allreduce|train]
[--sizes 4K,1M,...]`.

Method
------
The parent process (this command) measures the memcpy floor itself, then starts every run as a child
(each bounded in time) and collects the JSON that rank 0 writes: allreduce under `mpiexec -n 2`, the
train steps under `mpiexec -n 2`, `mpiexec -n 1`, or no launcher at all. It prints one table and writes
bench/results/distributed-cpu.json (or --json PATH): machine, command, MPI library and mpi4py versions,
every figure and sample statistic.

Allreduce (2 ranks x 1 thread, float32, 4 KB to 64 MB; `--quick`: four sizes and fewer samples):
- Rows: `jn.distributed.allreduce_sum(numpy array)` (jitnet's bucketed reduce-scatter + all-gather,
  a fresh result array per call), and two peers on the same buffer: `comm.Allreduce(x, out)` (plain
  mpi4py, preallocated output) and `comm.Ireduce_scatter_block` + `comm.Iallgather` then `Waitall`
  (jitnet's algorithm in plain mpi4py, preallocated buffers): the gap between jitnet and that row is
  jitnet's own cost (packing, result copies, its polling wait).
- Time: each sample is MPI_Barrier, `calls` back-to-back collectives, MPI_Barrier, and rank 0's wall
  time over that span / calls (so a sample lasts until the slower rank is done; the barrier's few us
  are included, amortised over the calls); the median of the samples, taken in interleaved rounds with
  gc off after a warm-up (bench.timing.time_interleaved). Every result is checked against x0 + x1.
- Bandwidths: algorithm bandwidth algbw = bytes / time; bus bandwidth busbw = algbw * 2 (n - 1) / n,
  as NCCL-tests define it for allreduce (n = 2 ranks: busbw = algbw). memcpy = bytes / median time of
  `np.copyto` of the same number of bytes (counted once, not read + write; one Python call, so its ~1 us
  dominates at 4 KB), one thread, measured by the parent on the otherwise idle machine, its source and
  destination placed 2 KB apart modulo 4 KB (copy_pair: no 4K aliasing). "vs memcpy" = allreduce algbw / memcpy bandwidth.
- Target: at every size >= 1 MB, jitnet's algbw >= 50% of the same-size memcpy bandwidth.

Train step (bench/train_steps.py's MLP 784-512-512-10, SGD with momentum 0.9 and lr = 0 so that every
step computes the same finite loss, float32 random data, global batch 256):
- A: one process, no MPI, NUMBA_NUM_THREADS=2, the one-program `TrainStep` on 256 samples: what a user
  runs without MPI on this 2-core machine.
- B: `mpiexec -n 2`, NUMBA_NUM_THREADS=1 per rank, `TrainStep(distributed=True)`, 128 samples per rank
  (gradient program, allreduce of the gradients, compiled update).
- C (reference): `mpiexec -n 1`, NUMBA_NUM_THREADS=2, `TrainStep(distributed=True)` on 256 samples: the
  data-parallel step's two programs in a world of one (its allreduce is a copy).
- D (reference): one process, NUMBA_NUM_THREADS=1, the one-program step on 128 samples: one rank's share
  alone (B's ideal: D's step time).
- Time: the first step (trace + compile, or the disk cache) and 2 warm-up steps untimed; then 30 steps
  (`--quick`: 5), each bracketed by MPI_Barrier under MPI; samples/s = global batch / median step time
  (rank 0's). Then as many steps again with the parts timed (rank 0): gradient program, allreduce
  (including any wait for the other rank's gradients), update, the rest.
- Target: B's samples/s within 15% of A's (B >= 0.85 A).

A missed target is reported ("target missed"), never an error; a child that fails is (exit status 1).
Without mpi4py or mpiexec it says how to install them (pip install -e '.[mpi]') and exits 0.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import timing
from bench.cpu import ROOT, machine_info

KB, MB = 1 << 10, 1 << 20
SIZES = [4 * KB, 16 * KB, 64 * KB, 256 * KB, 1 * MB, 4 * MB, 16 * MB, 64 * MB]
QUICK_SIZES = [4 * KB, 64 * KB, 1 * MB, 4 * MB]
RANKS = 2  # the machine's cores
GLOBAL_BATCH = 256
ALLREDUCE_TARGET = {"min_bytes": 1 * MB, "min_fraction_of_memcpy": 0.5}
TRAIN_TARGET = {"min_ratio": 0.85}  # B's samples/s >= 0.85 A's: "within 15%"
IMPLS = ("jitnet", "mpi4py Allreduce", "mpi4py RS+AG")
JSON_PATH = os.path.join(ROOT, "bench", "results", "distributed-cpu.json")
INSTALL = "pip install -e '.[mpi]'"
CHILD_TIMEOUT_S = {"allreduce": 600.0, "train": 420.0}
TRAIN_CONFIGS = {  # name: (launcher ranks (0: no launcher), NUMBA_NUM_THREADS, distributed step, batch per rank, what)
    "A": (0, 2, False, 256, "plain TrainStep, no MPI"),
    "B": (2, 1, True, 128, "TrainStep(distributed=True), mpiexec -n 2"),
    "C": (1, 2, True, 256, "reference: TrainStep(distributed=True), mpiexec -n 1"),
    "D": (0, 1, False, 128, "reference: plain TrainStep, one rank's share alone"),
}
DEFINITIONS = {
    "allreduce time": "median over samples of (rank 0's wall time from MPI_Barrier through `calls` collectives and "
    "MPI_Barrier) / calls",
    "algbw": "algorithm bandwidth: bytes / time",
    "busbw": "bus bandwidth (NCCL-tests, allreduce): algbw * 2 * (ranks - 1) / ranks",
    "memcpy": "bytes / median time of np.copyto of the same bytes (bytes counted once), one thread, in the parent, "
    "source and destination 2 KB apart modulo 4 KB",
    "fraction_of_memcpy": "allreduce algbw / memcpy bandwidth (the allreduce target compares these)",
    "samples_per_s": "global batch / median step time (rank 0's; each step bracketed by MPI_Barrier under MPI)",
    "ratio_vs_A": "a configuration's samples/s / A's",
}


# ---- pure helpers ----


def alg_bandwidth(nbytes: float, seconds: float) -> float:
    """Bytes per second of a collective on `nbytes` that took `seconds`."""
    return nbytes / seconds


def bus_bandwidth(nbytes: float, seconds: float, ranks: int) -> float:
    """NCCL-tests' bus bandwidth of an allreduce: algbw * 2 (n - 1) / n, comparable with the links' speed."""
    return alg_bandwidth(nbytes, seconds) * 2 * (ranks - 1) / ranks


def calls_per_sample(nbytes: int, target_bytes: int = 2 * MB, cap: int = 50) -> int:
    """Back-to-back collectives per sample: about `target_bytes` a sample, 1 to `cap`; a pure function of
    the size, so that every rank makes the same calls."""
    return max(1, min(cap, math.ceil(target_bytes / nbytes)))


def parse_size(text: str) -> int:
    """'4K', '1M', '64MB', '4096' -> bytes (powers of 1024); a whole number of float32."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": KB, "M": MB, "G": 1 << 30}.get(t[-1:], 1)
    nbytes = int(float(t[:-1] if scale > 1 else t) * scale)
    if nbytes <= 0 or nbytes % 4:
        raise ValueError(f"size {text!r}: must be a positive multiple of 4 bytes (float32)")
    return nbytes


def format_size(nbytes: int) -> str:
    for unit, scale in (("MB", MB), ("KB", KB)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def fraction_met(fraction: float, minimum: float) -> bool:
    return fraction >= minimum


def mpiexec() -> str | None:
    """The launcher beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_missing() -> str | None:
    """Why the MPI runs cannot start here (None: they can)."""
    try:
        import mpi4py  # noqa: F401  (the package only: importing mpi4py.MPI would initialise MPI here)
    except ImportError:
        return f"mpi4py is not installed: {INSTALL} (mpi4py and MPICH from wheels)"
    if mpiexec() is None:
        return f"no mpiexec beside {sys.executable} or on PATH: {INSTALL} (the mpich wheel brings one)"
    return None


def _summary(samples: list[float]) -> dict:
    s = timing.summary(samples)
    return {
        "median_s": s["median"],
        "min_s": s["min"],
        "max_s": s["max"],
        "spread": s["spread"],
        "samples": len(samples),
    }


# ---- children (one per run; rank 0 writes the JSON) ----


def _write(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def _mpi_info(MPI) -> dict:
    import mpi4py

    return {
        "library_version": MPI.Get_library_version().strip(),
        "standard": ".".join(map(str, MPI.Get_version())),
        "mpi4py": mpi4py.__version__,
    }


def child_allreduce(sizes: list[int], quick: bool, out: str) -> None:
    """Every rank: time the three allreduce rows at each size; rank 0 writes the rows to `out`."""
    from mpi4py import MPI

    from jitnet import distributed as dist

    dist.init()
    comm, rank, ranks = MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    samples_n = 5 if quick else 15
    rows = []
    for nbytes in sizes:
        n = nbytes // 4
        xs = [np.random.default_rng([7, r, n]).standard_normal(n, dtype=np.float32) for r in range(ranks)]
        x, expected = xs[rank], np.sum(xs, axis=0, dtype=np.float32) if ranks == 2 else None
        del xs
        out_ar = np.empty_like(x)
        block = -(-n // ranks)
        send = np.zeros(block * ranks, np.float32)
        send[:n] = x
        part, full = np.empty(block, np.float32), np.empty(block * ranks, np.float32)

        def rs_ag(send=send, part=part, full=full):
            MPI.Request.Waitall([comm.Ireduce_scatter_block(send, part, op=MPI.SUM)])
            MPI.Request.Waitall([comm.Iallgather(part, full)])
            return full

        fns = {
            "jitnet": lambda x=x: dist.allreduce_sum(x),
            "mpi4py Allreduce": lambda x=x, o=out_ar: comm.Allreduce(x, o, op=MPI.SUM) or o,
            "mpi4py RS+AG": rs_ag,
        }
        calls = calls_per_sample(nbytes)
        plan = {"warmup": 2, "max_samples": samples_n, "budget_s": None, "min_samples": samples_n, "rounds": 3}
        samples, _, last = timing.time_interleaved(fns, inner=calls, syncs=dict.fromkeys(fns, comm.Barrier), **plan)
        for name in fns:
            result = np.asarray(last[name])[:n]
            exact = bool(expected is None or np.array_equal(result, expected))
            row = {"bytes": nbytes, "elements": n, "impl": name, "calls": calls, **_summary(samples[name])}
            row.update(exact=exact, rank_medians_s=comm.allgather(float(np.median(samples[name]))))
            rows.append(row)
        del x, expected, out_ar, send, part, full, last, fns
    if rank == 0:
        _write(out, {"ranks": ranks, "mpi": _mpi_info(MPI), "rows": rows})


class _Timed:
    """A callable that adds its calls' seconds to `acc[key]` (other attributes: the wrapped one's)."""

    def __init__(self, fn, acc: dict, key: str):
        self._fn, self._acc, self._key = fn, acc, key

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self._acc[self._key] += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self._fn, name)


def child_train(distributed: bool, batch: int, quick: bool, out: str) -> None:
    """One configuration of the MLP train step (every rank); rank 0 writes its figures to `out`."""
    import numba

    import jitnet as jn
    from bench.train_steps import _params, mlp_model
    from jitnet import distributed as dist
    from jitnet.nn.train import TrainStep

    comm = None
    if dist.launched_size():  # under mpiexec (also a world of one): MPI initialised, its barrier used
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    dist.init()
    rank, ranks = dist.rank(), dist.world_size()
    model = mlp_model(jn.nn)
    model.load_state_dict(_params(mlp_model))
    opt = jn.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    step = TrainStep(model, jn.nn.cross_entropy, opt, distributed=distributed)
    g = np.random.default_rng([11, rank])
    x, y = g.random((batch, 784), dtype=np.float32), g.integers(0, 10, batch)
    barrier = comm.Barrier if comm is not None else None
    if barrier:
        barrier()
    t0 = time.perf_counter()
    first = float(step(x, y))  # trace, compile (or load from the disk cache), one step
    compile_s = time.perf_counter() - t0
    steps = 5 if quick else 30
    plan = {"warmup": 2, "max_samples": steps, "budget_s": None, "min_samples": steps, "rounds": 1, "inner": 1}
    samples, _, last = timing.time_interleaved(
        {"step": lambda: step(x, y)}, syncs={"step": barrier} if barrier else None, **plan
    )
    loss = float(last["step"])
    split = split_by_rank = None
    if distributed:  # the parts of as many steps again, timed on each rank
        parts = dict.fromkeys(("gradient program", "allreduce", "update"), 0.0)
        per_step: dict[str, list[float]] = {k: [] for k in [*parts, "other", "step"]}
        step._grads = _Timed(step._grads, parts, "gradient program")
        step.optimizer.step = _Timed(step.optimizer.step, parts, "update")
        real_allreduce = dist.allreduce_sum
        dist.allreduce_sum = _Timed(real_allreduce, parts, "allreduce")
        try:
            for _ in range(steps):
                for k in parts:
                    parts[k] = 0.0
                if barrier:
                    barrier()
                t0 = time.perf_counter()
                step(x, y)
                total = time.perf_counter() - t0
                for k, v in parts.items():
                    per_step[k].append(v)
                per_step["other"].append(total - sum(parts.values()))
                per_step["step"].append(total)
        finally:
            dist.allreduce_sum = real_allreduce
        split = {k: float(np.median(v)) for k, v in per_step.items()}
        split_by_rank = comm.allgather(split) if comm is not None else [split]
    params = sum(int(np.asarray(p).size) for p in model.parameters().values())
    medians = comm.allgather(float(np.median(samples["step"]))) if comm is not None else None
    if rank == 0:
        doc = {"ranks": ranks, "threads": numba.config.NUMBA_NUM_THREADS, "distributed": distributed}
        doc.update(batch_per_rank=batch, global_batch=batch * ranks, compile_s=compile_s, first_loss=first, loss=loss)
        doc.update(finite=bool(np.isfinite(loss) and np.isfinite(first)), step=_summary(samples["step"]))
        doc.update(
            samples_per_s=batch * ranks / doc["step"]["median_s"], split_median_s=split, split_by_rank=split_by_rank
        )
        doc.update(gradient_bytes=4 * params, parameters=params, rank_medians_s=medians)
        if comm is not None:
            from mpi4py import MPI

            doc["mpi"] = _mpi_info(MPI)
        _write(out, doc)


# ---- the parent ----


def _env(threads: int) -> dict:
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    t = str(threads)
    env.update(PYTHONPATH=path, NUMBA_NUM_THREADS=t, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
    return env


def run_child(ranks: int, threads: int, args: list[str], timeout_s: float) -> tuple[dict | None, dict]:
    """`[mpiexec -n ranks] python -m bench.distributed --child ...` (ranks 0: no launcher): (rank 0's JSON or
    None, how it ran: command, threads, seconds, load, and the error if it failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "child.json")
        cmd = [sys.executable, "-m", "bench.distributed", "--child", *args, "--out", out]
        if ranks:
            cmd = [mpiexec(), "-n", str(ranks), *cmd]
        run = {"command": " ".join(cmd[:-2] + ["--out", "TMP.json"]), "NUMBA_NUM_THREADS": threads}
        meter, t0 = timing.LoadMeter(), time.perf_counter()
        try:
            job = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            run.update(wall_s=time.perf_counter() - t0, error=f"did not finish within {timeout_s:.0f} s")
            return None, run
        run.update(wall_s=time.perf_counter() - t0, load=meter.read())
        if job.returncode != 0 or not os.path.exists(out):
            lines = [ln for ln in (job.stderr + job.stdout).strip().splitlines() if ln.strip()]
            run["error"] = f"exit code {job.returncode}: " + " | ".join(lines[-6:])[-1200:]
            return None, run
        with open(out) as f:
            return json.load(f), run


def copy_pair(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, destination) float32 arrays of `nbytes`, in one allocation: the source 4 KB-aligned, the
    destination 2 KB past a 4 KB boundary after it, so the two never sit a multiple of 4 KB apart (such
    copies, "4K aliasing", ran ~10x slower here: 64 KB at 2.4 GB/s instead of 25)."""
    page, n = 4096, nbytes // 4
    span = -(-nbytes // page) * page + page // 2
    raw = np.empty(2 * page + span + nbytes, np.uint8)
    start = -raw.ctypes.data % page
    src = raw[start : start + nbytes].view(np.float32)
    dst = raw[start + span : start + span + nbytes].view(np.float32)
    src[:] = np.random.default_rng(3).standard_normal(n, dtype=np.float32)
    dst[:] = 0
    return src, dst


def memcpy_rows(sizes: list[int], quick: bool) -> dict[int, dict]:
    """np.copyto of each size, one thread, in this process: bytes / median seconds."""
    out = {}
    for nbytes in sizes:
        src, dst = copy_pair(nbytes)
        calls = max(1, min(2000, math.ceil(16 * MB / nbytes)))
        plan = {"warmup": 3, "max_samples": 7 if quick else 15, "budget_s": None, "min_samples": 7, "rounds": 1}
        samples = timing.time_interleaved({"np.copyto": lambda s=src, d=dst: np.copyto(d, s)}, inner=calls, **plan)[0]
        s = _summary(samples["np.copyto"])
        out[nbytes] = {"bytes": nbytes, "calls": calls, **s, "bytes_per_s": nbytes / s["median_s"]}
    return out


def allreduce_section(sizes: list[int], quick: bool, log) -> tuple[dict, list[str]]:
    log(f"memcpy (np.copyto, one thread) at {len(sizes)} sizes...")
    memcpy = memcpy_rows(sizes, quick)
    log(f"allreduce: mpiexec -n {RANKS}, {len(sizes)} sizes x {len(IMPLS)} rows...")
    sizes_arg = ",".join(str(s) for s in sizes)
    found, run = run_child(
        RANKS, 1, ["allreduce", "--sizes", sizes_arg] + (["--quick"] if quick else []), CHILD_TIMEOUT_S["allreduce"]
    )
    section = {"ranks": RANKS, "threads_per_rank": 1, "run": run, "memcpy": list(memcpy.values()), "rows": []}
    if found is None:
        return section, [f"allreduce child failed: {run['error']}"]
    section["mpi"] = found["mpi"]
    failures = []
    for r in found["rows"]:
        mem = memcpy[r["bytes"]]["bytes_per_s"]
        r.update(
            algbw_Bps=alg_bandwidth(r["bytes"], r["median_s"]),
            busbw_Bps=bus_bandwidth(r["bytes"], r["median_s"], RANKS),
        )
        r.update(memcpy_Bps=mem, fraction_of_memcpy=r["algbw_Bps"] / mem)
        if not r["exact"]:
            failures.append(f"allreduce {r['impl']} at {format_size(r['bytes'])}: result differs from x0 + x1")
        section["rows"].append(r)
    checked = [r for r in section["rows"] if r["impl"] == "jitnet" and r["bytes"] >= ALLREDUCE_TARGET["min_bytes"]]
    minimum = ALLREDUCE_TARGET["min_fraction_of_memcpy"]
    section["target"] = {
        **ALLREDUCE_TARGET,
        "compares": "jitnet allreduce algbw (bytes / time) vs np.copyto bytes / time of the same size",
        "by_size": {format_size(r["bytes"]): r["fraction_of_memcpy"] for r in checked},
        "met": all(fraction_met(r["fraction_of_memcpy"], minimum) for r in checked) if checked else None,
    }
    return section, failures


def train_section(quick: bool, log) -> tuple[dict, list[str]]:
    configs, failures = {}, []
    for name, (ranks, threads, distributed, batch, what) in TRAIN_CONFIGS.items():
        shape = f"{max(ranks, 1)} rank(s) x {threads} thread(s), batch {batch} per rank"
        log(f"train step {name}: {what}, {shape}...")
        args = (
            ["train", "--batch", str(batch)]
            + (["--distributed"] if distributed else [])
            + (["--quick"] if quick else [])
        )
        found, run = run_child(ranks, threads, args, CHILD_TIMEOUT_S["train"])
        cfg = {"what": what, "launcher_ranks": ranks, "threads": threads, "distributed": distributed}
        cfg.update(batch_per_rank=batch, run=run)
        if found is None:
            failures.append(f"train step {name} failed: {run['error']}")
        else:
            cfg.update(found)
            if not found["finite"]:
                failures.append(f"train step {name}: loss not finite ({found['loss']})")
        configs[name] = cfg
    base = configs["A"].get("samples_per_s")
    for cfg in configs.values():
        if base and "samples_per_s" in cfg:
            cfg["ratio_vs_A"] = cfg["samples_per_s"] / base
    ratio = configs["B"].get("ratio_vs_A")
    target = {**TRAIN_TARGET, "compares": "B's samples/s / A's samples/s", "ratio": ratio}
    target["met"] = ratio is not None and ratio >= TRAIN_TARGET["min_ratio"]
    return {
        "model": "MLP 784-512-512-10, SGD momentum 0.9, lr 0",
        "global_batch": GLOBAL_BATCH,
        "configs": configs,
        "target": target,
    }, failures


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}"


def print_allreduce(section: dict) -> None:
    rows = section["rows"]
    if not rows:
        return
    print(
        f"\nallreduce, float32, {section['ranks']} ranks x 1 thread (mpiexec -n {section['ranks']}); time = median "
        "over samples of rank 0's wall time from MPI_Barrier through `calls` collectives and MPI_Barrier / calls"
    )
    print(
        "algbw = bytes / time; busbw = algbw * 2(n-1)/n (NCCL-tests); memcpy = bytes / time of np.copyto "
        "(bytes once, 1 thread); vs memcpy = algbw / memcpy"
    )
    head = f"{'size':>7}  {'impl':<17} {'calls':>5} {'time ms':>9} {'spread':>6} {'algbw GB/s':>10} "
    head += f"{'busbw GB/s':>10} {'memcpy GB/s':>11} {'vs memcpy':>9}  exact"
    print(head)
    print("-" * len(head))
    for r in rows:
        size = format_size(r["bytes"]) if r["impl"] == IMPLS[0] else ""
        line = f"{size:>7}  {r['impl']:<17} {r['calls']:>5} {_ms(r['median_s'])} {r['spread']:6.1%} "
        line += f"{r['algbw_Bps'] / 1e9:10.3f} {r['busbw_Bps'] / 1e9:10.3f} {r['memcpy_Bps'] / 1e9:11.2f} "
        line += f"{r['fraction_of_memcpy']:9.1%}  {'yes' if r['exact'] else 'NO'}"
        print(line)


def print_train(section: dict) -> None:
    configs = section["configs"]
    print(
        f"\ntrain step: {section['model']}, float32, global batch {section['global_batch']}; samples/s = "
        "global batch / median step time (rank 0's)"
    )
    head = f"{'':2}{'configuration':<54} {'ranks x thr':>11} {'batch/rank':>10} {'step ms':>9} {'spread':>6} "
    head += f"{'samples/s':>10} {'vs A':>6} {'compile s':>9}"
    print(head)
    print("-" * len(head))
    for name, c in configs.items():
        line = (
            f"{name:2}{c['what']:<54} {max(c['launcher_ranks'], 1):>5} x {c['threads']:<3} {c['batch_per_rank']:>10} "
        )
        if "samples_per_s" not in c:
            print(line + f"FAILED: {c['run'].get('error', '?')[:300]}")
            continue
        line += f"{_ms(c['step']['median_s'])} {c['step']['spread']:6.1%} {c['samples_per_s']:10.0f} "
        line += f"{c.get('ratio_vs_A', float('nan')):6.2f} {c['compile_s']:9.1f}"
        print(line)
    for name, c in configs.items():
        split = c.get("split_median_s")
        if split:
            ranks = c.get("split_by_rank") or [split]
            parts = ", ".join(f"{k} {'/'.join(f'{r[k] * 1e3:.2f}' for r in ranks)} ms" for k in split if k != "step")
            print(
                f"  {name} per step (medians of separate timed steps, rank 0/1/...): {parts}; step {split['step'] * 1e3:.2f} ms"
                f" ({c['gradient_bytes'] / MB:.2f} MB of float32 gradients allreduced a step)"
            )


def print_targets(doc: dict) -> None:
    print("\ntargets")
    ar = doc.get("allreduce", {}).get("target")
    if ar:
        fr = ", ".join(f"{k} {v:.1%}" for k, v in ar["by_size"].items())
        verdict = {True: "target met", False: "target missed", None: "not checked (no size that large)"}[ar["met"]]
        print(
            f"  allreduce >= {format_size(ar['min_bytes'])} at >= {ar['min_fraction_of_memcpy']:.0%} of same-size "
            f"memcpy bandwidth (algbw = bytes/time vs np.copyto bytes/time): {fr + ': ' if fr else ''}{verdict}"
        )
    tr = doc.get("train", {}).get("target")
    if tr:
        verdict = "target met" if tr["met"] else "target missed"
        got = "n/a" if tr["ratio"] is None else f"{tr['ratio']:.2f}"
        print(
            f"  2 ranks x 1 thread within 15% of 1 rank x 2 threads' samples/s (B / A >= {tr['min_ratio']:.2f}): "
            f"B / A = {got}: {verdict}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.distributed", description="jitnet data-parallel benchmark (MPI)")
    p.add_argument("--quick", action="store_true", help="four allreduce sizes, 5 samples / steps: a smoke run")
    p.add_argument("--json", metavar="PATH", help=f"write the JSON here (default {os.path.relpath(JSON_PATH, ROOT)})")
    p.add_argument("--only", choices=("allreduce", "train"), help="run one section")
    p.add_argument("--sizes", help="allreduce sizes, comma-separated (4K,1M,...; default 4 KB to 64 MB)")
    p.add_argument("--child", choices=("allreduce", "train"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=GLOBAL_BATCH, help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else None
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "allreduce":
        child_allreduce(args.size_list or SIZES, args.quick, args.out)
        return 0
    if args.child == "train":
        child_train(args.distributed, args.batch, args.quick, args.out)
        return 0
    why = mpi_missing()
    if why is not None:
        print(f"jitnet bench.distributed: {why}. Nothing to run; install the mpi extra and run again.")
        return 0
    start, log = time.perf_counter(), lambda msg: print(msg, file=sys.stderr, flush=True)
    sizes = args.size_list or (QUICK_SIZES if args.quick else SIZES)
    doc = {"schema": 1, "benchmark": "distributed", "device": "cpu", "quick": args.quick}
    doc.update(timestamp=_dt.datetime.now().isoformat(timespec="seconds"), machine=machine_info())
    doc["command"] = " ".join(["python -m bench.distributed", *(argv if argv is not None else sys.argv[1:])])
    doc["mpiexec"], doc["definitions"], failures = mpiexec(), DEFINITIONS, []
    m = doc["machine"]
    print(f"{m['cpu_model']}, {m['cores']} cores; numpy {m['numpy']}, numba {m['numba']}; {mpiexec()}")
    if args.only in (None, "allreduce"):
        doc["allreduce"], more = allreduce_section(sizes, args.quick, log)
        failures += more
        mpi = doc["allreduce"].get("mpi")
        if mpi:
            doc["mpi"] = mpi
            print(f"MPI: {mpi['library_version'].splitlines()[0]} (MPI {mpi['standard']}), mpi4py {mpi['mpi4py']}")
        print_allreduce(doc["allreduce"])
    if args.only in (None, "train"):
        doc["train"], more = train_section(args.quick, log)
        failures += more
        doc.setdefault("mpi", next((c["mpi"] for c in doc["train"]["configs"].values() if "mpi" in c), None))
        print_train(doc["train"])
    print_targets(doc)
    doc.update(failures=failures, wall_s=time.perf_counter() - start)
    for f in failures:
        print(f"FAILED: {f}")
    path = args.json or (JSON_PATH if not args.quick else JSON_PATH.replace(".json", "-quick.json"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"\nwrote {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path} ({doc['wall_s']:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
