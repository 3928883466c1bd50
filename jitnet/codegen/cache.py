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
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numba
import numpy as np
from numba.core.ccallback import CFunc


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_loads: int = 0  # machine code loaded from numba's cache
    compiles: int = 0  # machine code compiled by numba

    def reset(self) -> None:
        self.memory_hits = self.disk_loads = self.compiles = 0


stats = CacheStats()
_modules: dict[str, ModuleType] = {}  # key -> the imported kernel module


class _Collecting(threading.local):
    """Per thread: inside collect(), the sources load() was asked for (another thread building a
    program at the same time must still get real kernels)."""

    sources: list[str] | None = None


_collecting = _Collecting()


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
    collected = _collecting.sources
    if collected is not None:
        collected.append(source)
        return _not_compiled
    return getattr(module(source), name)


def module(source: str) -> ModuleType:
    """The kernel module of `source`, imported once per process: numba loads its machine code from
    disk or compiles it."""
    key = key_of(source)
    mod = _modules.get(key)
    if mod is not None:
        stats.memory_hits += 1
        return mod
    path = write(source)
    try:
        mod = _import(path, key)
    except Exception as e:  # corrupt machine code in numba's cache: rebuild from the source
        warnings.warn(
            f"jitnet: kernel cache for {path.name} is unusable ({type(e).__name__}: {e}); rebuilt", stacklevel=3
        )
        _discard(path)
        _write_atomic(path, source)
        mod = _import(path, key)
    _modules[key] = mod
    return mod


def write(source: str) -> Path:
    """The module file of `source` in the cache directory, written if missing (or replaced if its
    text does not match its key)."""
    path = _path(key_of(source))
    if path.exists() and path.read_bytes() != source.encode():
        warnings.warn(f"jitnet: kernel cache file {path} does not match its key; discarded and rebuilt", stacklevel=3)
        _discard(path)
    if not path.exists():
        _write_atomic(path, source)
    return path


def on_disk(source: str) -> bool:
    """Whether numba's machine code for `source` is (probably) in the disk cache already."""
    key = key_of(source)
    if key in _modules:
        return True
    path = _path(key)
    return path.exists() and bool(glob.glob(str(path.parent / "__pycache__" / f"{path.stem}.*.nbi")))


@contextlib.contextmanager
def collect():
    """Within: load() compiles nothing and returns a placeholder; yields the list of the sources
    it was asked for (a dry run of code generation, to compile them all at once)."""
    outer = _collecting.sources
    _collecting.sources = []
    try:
        yield _collecting.sources
    finally:
        _collecting.sources = outer


def _path(key: str) -> Path:
    return cache_dir() / f"k_{key}.py"


def _not_compiled(*args, **kwargs):
    raise RuntimeError("jitnet: a kernel generated inside cache.collect() was called")


def _import(path: Path, key: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"jitnet_kernel_{key}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache imports the module back by name
    spec.loader.exec_module(module)
    if any(_cache_hits(v) for v in vars(module).values()):
        stats.disk_loads += 1
    else:
        stats.compiles += 1
    return module


def _cache_hits(obj) -> int:
    """Machine code numba loaded from its disk cache for a dispatcher (njit) or a cfunc."""
    if hasattr(obj, "stats") and hasattr(obj.stats, "cache_hits"):
        return sum(obj.stats.cache_hits.values())
    return obj.cache_hits if isinstance(obj, CFunc) else 0


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
