"""The kernel cache: in memory by source, and on disk as real `.py` modules.

A kernel's generated source is its structural key (ops, shapes, dtypes and layout are all in it).
Each kernel is written to `<cache dir>/<fingerprint>/k_<hash>.py` and imported, so numba's own
`cache=True` can keep the machine code beside it and a second process starts warm. The fingerprint
covers the versions of Python, numpy, numba and jitnet's code generator, so a change to any of them
starts a fresh directory rather than reusing stale machine code. A file whose text does not match
its key, or machine code numba cannot load, is discarded with a warning and rebuilt.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_loads: int = 0  # machine code loaded from numba's cache
    compiles: int = 0  # machine code compiled by numba

    def reset(self) -> None:
        self.memory_hits = self.disk_loads = self.compiles = 0


stats = CacheStats()
_memory: dict[str, Callable] = {}


def _fingerprint() -> str:
    h = hashlib.sha256()
    h.update(f"{sys.version}|{np.__version__}|{numba.__version__}".encode())
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_FINGERPRINT = _fingerprint()


def cache_dir() -> Path:
    base = os.environ.get("JITNET_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "jitnet")
    path = Path(base) / _FINGERPRINT
    path.mkdir(parents=True, exist_ok=True)
    return path


def key_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def load(source: str, name: str = "kernel") -> Callable:
    """The compiled function `name` defined by `source`, from memory, disk, or a fresh compile."""
    key = key_of(source)
    fn = _memory.get(key)
    if fn is not None:
        stats.memory_hits += 1
        return fn
    path = cache_dir() / f"k_{key}.py"
    if path.exists() and path.read_bytes() != source.encode():
        warnings.warn(f"jitnet: kernel cache file {path} does not match its key; discarded and rebuilt", stacklevel=2)
        _discard(path)
    if not path.exists():
        _write_atomic(path, source)
    try:
        fn = _import(path, key, name)
    except Exception as e:  # corrupt machine code in numba's cache: rebuild from the source
        warnings.warn(
            f"jitnet: kernel cache for {path.name} is unusable ({type(e).__name__}: {e}); rebuilt", stacklevel=2
        )
        _discard(path)
        _write_atomic(path, source)
        fn = _import(path, key, name)
    _memory[key] = fn
    return fn


def _import(path: Path, key: str, name: str) -> Callable:
    spec = importlib.util.spec_from_file_location(f"jitnet_kernel_{key}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache imports the module back by name
    spec.loader.exec_module(module)
    fn = getattr(module, name)
    dispatchers = [v for v in vars(module).values() if hasattr(v, "stats") and hasattr(v.stats, "cache_hits")]
    if any(sum(d.stats.cache_hits.values()) for d in dispatchers):
        stats.disk_loads += 1
    else:
        stats.compiles += 1
    return fn


def _discard(path: Path) -> None:
    """Remove a kernel's source and numba's cached machine code for it."""
    for f in [path, *glob.glob(str(path.parent / "__pycache__" / f"{path.stem}.*"))]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
