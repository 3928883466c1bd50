"""The kernel cache: in memory by source, and on disk as real `.py` modules.

A kernel's generated source is its structural key (ops, shapes, dtypes and layout are all in it).
Each kernel is written to `<cache dir>/<fingerprint>/k_<hash>.py` and imported, so numba's own
`cache=True` can keep the machine code beside it and a second process starts warm. The fingerprint
covers the versions of Python, numpy, numba and jitnet's code generator, so a change to any of them
starts a fresh directory rather than reusing stale machine code. A file whose text does not match
its key, or machine code numba cannot load, is discarded with a warning and rebuilt.

Integrity: after a module is imported, a manifest `k_<hash>.sum` records its key, the sha256 of its
source and of each file numba keeps for it (`__pycache__/k_<hash>.*.nbi`/`.nbc`). Before numba
reads any of those files they are checked against the manifest and deleted unless all match (a
corrupted or swapped `.nbc` would otherwise be loaded as machine code, or abort the process inside
LLVM). A per-module lock file (`k_<hash>.lock`, flock) makes check, import and manifest one step
across processes, so several processes may fill one cache: the second waits, then loads.

A cache directory that cannot be created, read or written is not fatal: kernels are compiled in
memory (numba's caching off) and one warning per directory names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib.util
import json
import linecache
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
# key -> the imported kernel module. Not bounded on purpose: numba never frees a module's machine
# code (its MCJIT engine keeps it) and keeps each dispatcher alive through its own finalizer
# (overloads -> environment -> module globals), so evicting would free nothing and re-importing
# would add a second copy. The bound is per compiled function's programs (compiler.py).
_modules: dict[str, ModuleType] = {}


class _Collecting(threading.local):
    """Per thread: inside collect(), the sources load() was asked for (another thread building a
    program at the same time must still get real kernels)."""

    sources: list[str] | None = None


_collecting = _Collecting()


def fingerprinted_files() -> list[Path]:
    """The code generators and the code their modules call (vmath, intrinsics, the GEMM cores): a
    generated module's text names these, so only their contents can tell old machine code from new."""
    package = Path(__file__).parents[1]
    return sorted([*(package / "codegen").rglob("*.py"), *(package / "backends").rglob("*.py")])


def _fingerprint() -> str:
    h = hashlib.sha256()
    h.update(f"{sys.version}|{np.__version__}|{numba.__version__}".encode())
    for path in fingerprinted_files():
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_FINGERPRINT = _fingerprint()


_usable: dict[Path, bool] = {}  # cache directory -> whether it can be read and written (checked once)


def cache_dir() -> Path | None:
    """This version's cache directory, or None when it cannot be used (then kernels compile in
    memory; the first failure is warned about, naming the directory)."""
    base = os.environ.get("JITNET_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "jitnet")
    path = Path(base) / _FINGERPRINT
    if path not in _usable:
        try:
            for d in (path, path / "__pycache__"):  # numba puts its files elsewhere if this is not writable
                d.mkdir(parents=True, exist_ok=True)
                os.listdir(d)
                tempfile.TemporaryFile(dir=d).close()
            _usable[path] = True
        except OSError as e:
            _usable[path] = False
            _warn_unusable(path, e)
    return path if _usable[path] else None


def _warn_unusable(path: Path, error: OSError) -> None:
    _usable[path] = False
    warnings.warn(
        f"jitnet: kernel cache directory {path} is unusable ({type(error).__name__}: {error}); kernels are "
        "compiled in memory in this process (set JITNET_CACHE_DIR to a writable directory to keep them)",
        stacklevel=4,
    )


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
    directory = cache_dir()
    if directory is not None:
        path = directory / f"k_{key}.py"
        try:
            with _locked(path):
                mod = _modules.get(key)  # another thread loaded it while this one waited
                if mod is None:
                    mod = _load_from_disk(path, source, key)
        except OSError as e:  # a file or the directory became unreadable or unwritable
            _warn_unusable(directory, e)
    if mod is None:
        mod = _load_in_memory(source, key)
    _modules[key] = mod
    return mod


def _load_from_disk(path: Path, source: str, key: str) -> ModuleType:
    """Import the module file at `path`, trusting only machine code its manifest vouches for, and
    record the manifest for what numba loaded or wrote. The caller holds the module's lock."""
    _write_source(path, source)
    _verify(path, key, source)
    try:
        mod = _import(path, key)
    except OSError:
        raise
    except Exception as e:  # numba could not use what it found: rebuild from the source once
        warnings.warn(
            f"jitnet: kernel cache for {path.name} is unusable ({type(e).__name__}: {e}); rebuilt", stacklevel=4
        )
        _discard(path)
        _write_atomic(path, source)
        mod = _import(path, key)
    _seal(path, key, source)
    return mod


def write(source: str) -> Path | None:
    """The module file of `source` in the cache directory, written if missing (or replaced if its
    text does not match its key); None when the cache directory is unusable."""
    directory = cache_dir()
    if directory is None:
        return None
    path = directory / f"k_{key_of(source)}.py"
    try:
        with _locked(path):
            _write_source(path, source)
    except OSError as e:
        _warn_unusable(directory, e)
        return None
    return path


def on_disk(source: str) -> bool:
    """Whether `source` is loaded, or sealed in the disk cache (its machine code under a manifest)."""
    key = key_of(source)
    if key in _modules:
        return True
    directory = cache_dir()
    return directory is not None and (directory / f"k_{key}.sum").exists()


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


def _not_compiled(*args, **kwargs):
    raise RuntimeError("jitnet: a kernel generated inside cache.collect() was called")


def _write_source(path: Path, source: str) -> None:
    """Write the module file unless it holds exactly `source` (a mismatch or an unreadable file is
    discarded with numba's files for it, which were built from other text)."""
    try:
        ok = path.read_bytes() == source.encode()
    except FileNotFoundError:
        ok = None
    except OSError:
        ok = False
    if ok is False:
        warnings.warn(f"jitnet: kernel cache file {path} does not match its key; discarded and rebuilt", stacklevel=5)
        _discard(path)
    if not ok:
        _write_atomic(path, source)


def _machine_code(path: Path) -> list[Path]:
    """numba's cache files (index and data) for the module at `path`."""
    return sorted(map(Path, glob.glob(glob.escape(str(path.parent / "__pycache__" / path.stem)) + ".*")))


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # unreadable: vouched for by nothing
        return None


def _manifest(path: Path, key: str, source: str) -> dict:
    """What the manifest beside `path` should say once numba's files for it are on disk."""
    files = {f.name: _digest(f) for f in _machine_code(path)}
    return {"key": key, "source": hashlib.sha256(source.encode()).hexdigest(), "files": files}


def _verify(path: Path, key: str, source: str) -> None:
    """Delete numba's files for `path` unless its manifest vouches for every one of them, so that
    numba never reads machine code that is not the one compiled from this source."""
    if not _machine_code(path):
        return
    want = _manifest(path, key, source)
    try:
        have = json.loads(path.with_suffix(".sum").read_text())
    except (OSError, ValueError):
        have = None
    if have != want or None in want["files"].values():
        warnings.warn(
            f"jitnet: machine code for {path.name} in the kernel cache does not match its manifest "
            f"{path.with_suffix('.sum').name}; discarded and recompiled",
            stacklevel=5,
        )
        for f in [*_machine_code(path), path.with_suffix(".sum")]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)


def _seal(path: Path, key: str, source: str) -> None:
    _write_atomic(path.with_suffix(".sum"), json.dumps(_manifest(path, key, source), indent=1))


@contextlib.contextmanager
def _locked(path: Path):
    """Hold the module's lock file (across processes and threads): check, import and manifest
    happen as one step. Where the file system has no locks, go on without."""
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _import(path: Path, key: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"jitnet_kernel_{key}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache imports the module back by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    if any(_cache_hits(v) for v in vars(module).values()):
        stats.disk_loads += 1
    else:
        stats.compiles += 1
    return module


def _load_in_memory(source: str, key: str) -> ModuleType:
    """The module executed from its text with numba's disk caching off (the generated decorators
    all say `cache=True`); its text is registered with linecache so tracebacks show it."""
    filename = f"<jitnet kernel k_{key}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod = ModuleType(f"jitnet_kernel_{key}")
    exec(compile(source.replace("cache=True", "cache=False"), filename, "exec"), vars(mod))
    stats.compiles += 1
    return mod


def _cache_hits(obj) -> int:
    """Machine code numba loaded from its disk cache for a dispatcher (njit) or a cfunc."""
    if hasattr(obj, "stats") and hasattr(obj.stats, "cache_hits"):
        return sum(obj.stats.cache_hits.values())
    return obj.cache_hits if isinstance(obj, CFunc) else 0


def _discard(path: Path) -> None:
    """Remove a kernel's source, its manifest and numba's cached machine code for it."""
    for f in [path, path.with_suffix(".sum"), *_machine_code(path)]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
