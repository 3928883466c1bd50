"""Compiling a program's new kernels in two processes.

numba compiles on one thread, so a cold program (a LeNet train step: 33 kernels and 2 GEMM cores,
9 s in one process) leaves the other core idle. `compile_new(sources)` gives part of the modules
that are not in the disk cache yet to one worker process (codegen/workers.py), which compiles them
into the cache, and compiles the rest itself meanwhile; once the worker is done, loading its
modules is a disk-cache hit. The split balances estimated compile costs, the main process takes
the shared GEMM cores and launcher first (the worker's own GEMM modules come last, by when the
cores are on disk). Nothing depends on the worker: if it fails, or hangs past a generous bound, its
modules compile in this process when they are loaded; without a usable disk cache there is nothing
to share and everything compiles here.
"""

from __future__ import annotations

import os

from jitnet.backends.cpu import gemm, parallel
from jitnet.codegen import cache, workers

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
    worker = workers.start(worker_part)
    if worker is None:  # no worker: everything compiles here, when loaded
        return
    try:
        for s, _ in shared:
            cache.module(s)
        for s in main_part:
            cache.module(s)
    finally:  # a worker far behind its estimate is stopped: what it has not compiled compiles here
        workers.stop(worker, WORKER_TIMEOUT_S + WORKER_TIMEOUT_FACTOR * theirs)
