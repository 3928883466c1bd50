"""Compiling kernel modules in worker processes, so that a cold program's compiles use every core.

numba compiles on one thread. `start(sources)` writes the modules into the kernel disk cache and
starts `python -m jitnet.codegen.workers <module files>`, which imports them through `cache.module`:
numba compiles each and writes its machine code to the cache, with the manifests the cache checks
(cache.py), so that loading them here afterwards is a disk-cache hit. Nothing depends on a worker:
if it cannot start, fails, or is stopped (`stop`), what it did not compile compiles in this process
when loaded. The backends decide how to share out a program's modules (backends/*/precompile.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from jitnet.codegen import cache


def start(sources: list[str]) -> subprocess.Popen | None:
    """A process compiling these modules into the disk cache; None where none could start."""
    paths = [cache.write(s) for s in sources]
    if not paths or None in paths:  # nothing to do, or the cache directory just became unusable
        return None
    package_root = str(Path(__file__).resolve().parents[2])  # jitnet importable even if not installed
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "jitnet.codegen.workers", *map(str, paths)],
            env=dict(os.environ, PYTHONPATH=path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


def stop(worker: subprocess.Popen | None, timeout_s: float) -> None:
    """Wait for a worker; one still running after `timeout_s` is killed (this process compiles the rest)."""
    if worker is None:
        return
    try:
        worker.wait(timeout=timeout_s)
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
