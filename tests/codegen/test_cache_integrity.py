"""The disk cache under damage and denial (issue 12, items 4 and 5): machine code that its manifest
does not vouch for is never loaded, an unusable cache directory means compiling in memory with one
warning naming it, and several processes may fill one cache at once. Each case runs a fresh
interpreter; as root it drops to `nobody` (65534) first, so that permissions bind as for a user."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from jitnet.codegen import cache

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534

PROBE = """
import json, os, sys, tempfile, warnings
import numpy as np
import jitnet as jn
from jitnet.codegen import cache

if os.geteuid() == 0 and sys.argv[2] == "drop":
    os.environ["JITNET_CACHE_DIR"] = tempfile.mkdtemp()
    jn.compile(lambda x: jn.exp(x) + jn.sum(x))(np.ones((4, 3), np.float32))  # numba's lazy imports
    os.setgid(65534)
    os.setuid(65534)
os.environ["JITNET_CACHE_DIR"] = sys.argv[1]
cache.stats.reset()
x = np.linspace(-3, 3, 6 * 40, dtype=np.float32).reshape(6, 40)
fns = {"two": jn.compile(lambda x: jn.exp(x * 0.001) * 2), "three": jn.compile(lambda x: jn.exp(x * 0.001) * 3)}
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    out = {name: np.asarray(f(x)).tolist() for name, f in fns.items()}
print(json.dumps({
    "out": out,
    "keys": {name: [cache.key_of(s.split(chr(10), 1)[1]) for s in f.lower(x).sources] for name, f in fns.items()},
    "warnings": [str(w.message) for w in caught],
    "compiles": cache.stats.compiles,
    "disk_loads": cache.stats.disk_loads,
}))
"""


def expected() -> dict:
    x = np.linspace(-3, 3, 6 * 40, dtype=np.float32).reshape(6, 40)
    e = np.exp(x * np.float32(0.001))
    return {"two": e * 2, "three": e * 3}


def probe(cache_dir: Path, drop: bool = True) -> dict:
    """Run PROBE against `cache_dir` (as nobody when root and `drop`); its report."""
    proc = start(cache_dir, drop)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    for name, want in expected().items():
        np.testing.assert_allclose(np.array(report["out"][name], np.float32), want, rtol=1e-6)
    return report


def start(cache_dir: Path, drop: bool = True) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITNET_", "NUMBA_"))}
    env.update(PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, str(cache_dir), "drop" if drop else "stay"],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def world(tmp_path_factory):
    """A directory that `nobody` can reach and write in (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="jitnet-cache-test-"))
    path.chmod(0o777)
    yield path
    for p in [path, *path.rglob("*")]:  # make everything removable again
        if not p.is_symlink():
            p.chmod(0o700 if p.is_dir() else 0o600)
    shutil.rmtree(path)


def machine_code(cache_dir: Path, key: str) -> list[Path]:
    return sorted(cache_dir.glob(f"*/__pycache__/k_{key}.*.nbc"))


def manifest_warnings(report: dict) -> list[str]:
    return [w for w in report["warnings"] if "does not match its manifest" in w]


# ---- item 4: integrity --------------------------------------------------------------------------


def test_cold_and_warm_runs_write_and_trust_manifests(world):
    cold = probe(world / "c")
    assert cold["compiles"] > 0 and cold["warnings"] == []
    for key in cold["keys"]["two"] + cold["keys"]["three"]:
        (manifest,) = world.glob(f"c/*/k_{key}.sum")
        record = json.loads(manifest.read_text())
        assert record["key"] == key and record["files"], record
    warm = probe(world / "c")
    assert warm["compiles"] == 0 and warm["disk_loads"] == cold["compiles"]
    assert warm["warnings"] == []


def test_swapped_machine_code_is_not_loaded(world):
    cold = probe(world / "c")
    swapped = set()
    for a, b in zip(cold["keys"]["two"], cold["keys"]["three"]):
        for fa in machine_code(world / "c", a):
            fb = fa.with_name(fa.name.replace(a, b))
            data_a, data_b = fa.read_bytes(), fb.read_bytes()
            assert data_a != data_b
            fa.write_bytes(data_b)
            fb.write_bytes(data_a)
            swapped |= {a, b}
    assert swapped
    report = probe(world / "c")  # checks "three" returns 3 * exp(x / 1000), not "two"'s values
    assert len(manifest_warnings(report)) == len(swapped), report["warnings"]
    assert report["compiles"] == cold["compiles"]
    warm = probe(world / "c")
    assert warm["compiles"] == 0 and warm["warnings"] == []


@pytest.mark.parametrize("damage", ["random", "flip"])
def test_corrupted_machine_code_is_not_loaded(world, damage):
    cold = probe(world / "c")
    rng = np.random.default_rng(7)
    files = sorted((world / "c").glob("*/__pycache__/*.nbc"))
    for f in files:
        data = bytearray(f.read_bytes())
        if damage == "random":  # the probe: aborted the process inside LLVM
            data = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
        else:  # one byte of the compiled object: loaded undetected
            data[len(data) * 3 // 4] ^= 0x5A
        f.write_bytes(bytes(data))
    report = probe(world / "c")
    assert len(manifest_warnings(report)) == len({f.name.split(".")[0] for f in files}), report["warnings"]
    assert report["compiles"] == cold["compiles"] and report["disk_loads"] == 0


def test_machine_code_without_manifest_is_not_loaded(world):
    cold = probe(world / "c")
    for manifest in (world / "c").glob("*/k_*.sum"):
        manifest.unlink()
    report = probe(world / "c")
    assert report["compiles"] == cold["compiles"] and report["disk_loads"] == 0
    assert len(manifest_warnings(report)) == cold["compiles"]


def test_processes_share_an_empty_cache(world):
    procs = [start(world / "c") for _ in range(3)]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["warnings"] == []
    warm = probe(world / "c")
    assert warm["compiles"] == 0 and warm["warnings"] == []


def test_a_module_locked_by_another_process_is_waited_for(world):
    cold = probe(world / "c", drop=False)
    (fingerprint,) = (world / "c").iterdir()
    with cache._locked(fingerprint / f"k_{cold['keys']['two'][0]}.py"):  # as if compiling it now
        proc = start(world / "c", drop=False)
        with pytest.raises(subprocess.TimeoutExpired):  # a warm run takes ~3 s
            proc.wait(timeout=10)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["compiles"] == 0


# ---- item 5: unusable caches --------------------------------------------------------------------


def read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def snapshot(path: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*")}


def dir_warnings(report: dict, path: Path) -> list[str]:
    return [w for w in report["warnings"] if "compiled in memory" in w and str(path) in w]


@pytest.mark.parametrize("filled", [False, True], ids=["empty", "complete"])
def test_read_only_cache_compiles_in_memory_with_one_warning(world, filled):
    cache_dir = world / "c"
    if filled:
        probe(cache_dir, drop=False)
    else:
        cache_dir.mkdir()
    read_only(cache_dir)
    before = snapshot(cache_dir)
    report = probe(cache_dir)
    assert len(dir_warnings(report, cache_dir)) == 1 and len(report["warnings"]) == 1, report["warnings"]
    assert report["compiles"] > 0
    assert snapshot(cache_dir) == before


def test_cache_dir_that_is_a_file_compiles_in_memory_with_one_warning(world):
    not_a_dir = world / "file"
    not_a_dir.write_text("not a directory")
    not_a_dir.chmod(0o666)
    report = probe(not_a_dir)
    assert len(dir_warnings(report, not_a_dir)) == 1 and len(report["warnings"]) == 1, report["warnings"]
    assert report["compiles"] > 0


def test_unreadable_cache_files_are_rebuilt(world):
    cold = probe(world / "c")
    files = [*(world / "c").glob("*/k_*.py"), *(world / "c").glob("*/__pycache__/*.nb?")]
    for f in files:
        f.chmod(0)
    report = probe(world / "c")
    assert report["compiles"] == cold["compiles"]
    assert not [w for w in report["warnings"] if "compiled in memory" in w], report["warnings"]
    warm = probe(world / "c")
    assert warm["compiles"] == 0 and warm["warnings"] == []
