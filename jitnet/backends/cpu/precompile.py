"""Compiling a program's new kernels in two processes.

numba compiles on one thread, so a cold program (a LeNet train step: 33 kernels and 2 GEMM cores,
9 s in one process) leaves the other core idle. `compile_new(sources)` writes every module that
is not in the disk cache yet, starts one worker process (`python -m jitnet.backends.cpu.precompile
<module files>`) that imports part of them, so that numba compiles them and writes their machine
code to the cache, and compiles the rest itself meanwhile; once the worker is done, loading its
modules is a disk-cache hit. The split balances estimated compile costs, the main process takes
the shared GEMM cores and launcher first (the worker's own GEMM modules come last, by when the
cores are on disk). Nothing depends on the worker: if it fails, or hangs past a generous bound, its
modules compile in this process when they are loaded. The worker loads through `cache.module`, so
it records the same manifests (see cache.py) and its machine code is trusted like ours; without a
usable disk cache there is nothing to share and everything compiles here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from jitnet.backends.cpu import gemm, parallel
from jitnet.codegen import cache

WORKER_START_S = 0.8  # a worker's start-up (python, numba, jitnet imports) and its first compile's warm-up
MIN_WORK_S = 2.5  # estimated compile seconds below which one process does it all
WORKER_TIMEOUT_S, WORKER_TIMEOUT_FACTOR = 60.0, 10.0  # the worker's time after ours: 60 s + 10x its estimate


def _cost(source: str) -> float:
    """Estimated compile seconds of a module (measured on the 2-core dev machine, numba 0.68)."""
    if gemm.required(source):
        return 0.4
    if "launch(" in source:
        return 0.2
    return 0.08


def _shared(sources: list[str]) -> list[tuple[str, str]]:
    """(source, function name) of the GEMM cores and the launcher the modules need."""
    cores = set().union(*map(gemm.required, sources))
    shared = [(gemm.core_source(dt, mr, nr), "gemm") for dt, mr, nr in sorted(cores)]
    if any("launch(" in s for s in sources):
        shared.append((parallel.LAUNCHER_SOURCE, parallel.LAUNCHER))
    return shared


def compile_new(sources: list[str]) -> None:
    """Bring the modules of `sources` into this process, compiling the new ones in two processes
    when that pays (see the module docstring)."""
    todo = [s for s in dict.fromkeys(sources) if not cache.on_disk(s)]
    shared = [(s, name) for s, name in _shared(todo) if not cache.on_disk(s)]
    work = sum(map(_cost, todo)) + len(shared)  # a core or the launcher: ~1 s
    if work < MIN_WORK_S or (os.cpu_count() or 1) < 2 or cache.cache_dir() is None:
        return
    mine, theirs = float(len(shared)), WORKER_START_S
    main_part, worker_part = [], []
    for s in sorted(todo, key=_cost, reverse=True):
        if mine <= theirs:
            main_part.append(s)
            mine += _cost(s)
        else:
            worker_part.append(s)
            theirs += _cost(s)
    worker_part.sort(key=_cost)  # modules that call the GEMM cores last: by then they are on disk
    paths = [cache.write(s) for s in worker_part]
    if None in paths:  # the cache directory just became unusable
        return
    package_root = str(Path(__file__).resolve().parents[3])  # jitnet importable even if not installed
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    try:
        worker = subprocess.Popen(
            [sys.executable, "-m", "jitnet.backends.cpu.precompile", *map(str, paths)],
            env=dict(os.environ, PYTHONPATH=path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:  # no worker: everything compiles here, when loaded
        return
    try:
        for s, _ in shared:
            cache.module(s)
        for s in main_part:
            cache.module(s)
    finally:
        try:  # a worker far behind its estimate is stopped: what it has not compiled compiles here
            worker.wait(timeout=WORKER_TIMEOUT_S + WORKER_TIMEOUT_FACTOR * theirs)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _worker(paths: list[str]) -> None:
    for path in map(Path, paths):
        with contextlib.suppress(Exception):  # the main process meets the error again when it loads
            source = path.read_text()
            if cache.key_of(source) == path.stem.removeprefix("k_"):  # else the main process rewrites it
                cache.module(source)


if __name__ == "__main__":
    _worker(sys.argv[1:])
