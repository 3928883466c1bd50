"""Compiling a program's new CUDA kernels in parallel processes.

NVVM takes about 0.4 s per kernel module and numba compiles one at a time, so a cold LeNet train
step (33 kernels) took 12 to 14 s on an H200's host, whose 16 cores sat idle. `compile_new` shares
a program's modules that are not in the disk cache yet between this process and up to MAX_WORKERS
worker processes (codegen/workers.py; each opens its own CUDA context), round robin, so each
compiles a few; this process then loads the workers' modules from the disk cache (PTX, linked at
load). Programs of fewer than 2 * PER_WORKER new modules, the simulator, and a missing disk cache
compile here.
"""

from __future__ import annotations

import os

from jitnet.backends.cuda.device import simulator
from jitnet.codegen import cache, workers

MAX_WORKERS = 8
PER_WORKER = 3  # new modules per worker at least: a worker's start (imports, a CUDA context) costs ~1 s
WORKER_TIMEOUT_S = 120.0  # after this process's own share


def shares(todo: list[str], cpus: int) -> list[list[str]]:
    """The modules of each process, this one's first: round robin over 1 + workers processes."""
    n = max(0, min(MAX_WORKERS, cpus - 1, len(todo) // PER_WORKER - 1))
    return [todo[i :: n + 1] for i in range(n + 1)]


def compile_new(sources: list[str]) -> None:
    """Bring the modules of `sources` into this process, the new ones compiled in parallel."""
    todo = [s for s in dict.fromkeys(sources) if not cache.on_disk(s)]
    if simulator() or cache.cache_dir() is None or len(todo) < 2 * PER_WORKER:
        return
    mine, *theirs = shares(todo, os.cpu_count() or 1)
    started = [workers.start(share) for share in theirs]
    try:
        for source in mine:
            cache.module(source)
    finally:
        for worker in started:
            workers.stop(worker, WORKER_TIMEOUT_S)
