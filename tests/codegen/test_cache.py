"""The compile caches: one trace per call signature, kernels shared in memory by source, and on disk
(the generated `.py` modules plus numba's machine code) so that a second process starts warm and a
damaged cache is rebuilt with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jitnet as jn
from jitnet.codegen import cache

REPO = Path(__file__).resolve().parents[2]

# ---- (a) one trace per signature ----


def test_same_signature_never_retraces():
    f = jn.compile(lambda x, s: x * s + 1)
    rng = np.random.default_rng(0)
    for k in range(4):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        s = 0.5 + k  # a new Python float each call: a runtime input, not a constant
        np.testing.assert_allclose(np.asarray(f(x, s)), x * np.float32(s) + 1, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(f(jn.asarray(x), s)), x * np.float32(s) + 1, rtol=1e-6)
    assert f.traces == 1


@pytest.mark.parametrize(
    "first, second",
    [
        ((np.ones((2, 3), np.float32),), (np.ones((3, 2), np.float32),)),
        ((np.ones((2, 3), np.float32),), (np.ones((2, 3), np.float64),)),
        ((np.ones(3, np.int32),), (np.ones(3, np.int64),)),
        ((2.0,), (2,)),
        (((np.ones(3, np.float32), np.ones(3, np.float32)),), ([np.ones(3, np.float32), np.ones(3, np.float32)],)),
        (({"a": np.ones(3, np.float32)},), ({"b": np.ones(3, np.float32)},)),
        (((np.ones(3, np.float32),),), ((np.ones(3, np.float32), np.ones(3, np.float32)),)),
    ],
    ids=["shape", "float_dtype", "int_dtype", "scalar_type", "tuple_vs_list", "dict_keys", "tuple_length"],
)
def test_new_signature_traces_again(first, second):
    f = jn.compile(lambda tree: [2 * leaf for leaf in jn.ir.pytree.flatten(tree)[0]])
    f(*first)
    f(*first)
    assert f.traces == 1
    f(*second)
    assert f.traces == 2
    f(*first)
    assert f.traces == 2  # the first signature's program is still there


def test_static_arg_value_traces_again():
    f = jn.compile(lambda x, n: x * n, static_argnums=(1,))
    x = np.arange(3, dtype=np.float32)
    assert np.asarray(f(x, 2)).tolist() == [0, 2, 4]
    assert np.asarray(f(x + 1, 2)).tolist() == [2, 4, 6]
    assert f.traces == 1
    assert np.asarray(f(x, 3)).tolist() == [0, 3, 6]
    assert f.traces == 2


# ---- (b) kernels shared in memory ----


def _kernel_count(f, *args) -> int:
    return len(f.lower(*args).schedule.kernels)


def test_identical_kernels_shared_across_functions():
    x = np.linspace(-2, 2, 5 * 17, dtype=np.float32).reshape(5, 17)  # a shape no other test uses

    def first(a):
        return jn.tanh(a) * 3 - jn.sum(a, axis=1, keepdims=True)

    def second(b):  # another function, same computation: the same kernel sources
        return jn.tanh(b) * 3 - jn.sum(b, axis=1, keepdims=True)

    want = np.asarray(jn.compile(first)(x))
    before = (cache.stats.memory_hits, cache.stats.compiles, cache.stats.disk_loads)
    got = np.asarray(jn.compile(second)(x))
    hits, compiles, loads = cache.stats.memory_hits, cache.stats.compiles, cache.stats.disk_loads
    n = _kernel_count(jn.compile(second), x)
    assert n >= 1
    assert hits - before[0] >= n
    assert (compiles, loads) == before[1:]
    np.testing.assert_array_equal(got, want)


def test_different_shapes_do_not_share_kernels():
    f = jn.compile(lambda a: jn.exp(a) + 1)
    f(np.zeros((3, 19), np.float32))
    hits = cache.stats.memory_hits
    before = cache.stats.compiles + cache.stats.disk_loads
    f(np.zeros((19, 3), np.float32))
    assert cache.stats.compiles + cache.stats.disk_loads > before
    assert cache.stats.memory_hits == hits


# ---- (e) JITNET_CACHE_DIR, in this process ----


def test_cache_dir_env_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("JITNET_CACHE_DIR", str(tmp_path))
    x = np.ones((7, 23), np.float32)  # a fresh kernel source, not served from memory
    np.testing.assert_allclose(np.asarray(jn.compile(lambda a: jn.sqrt(a) * 7 - 2)(x)), np.full((7, 23), 5.0))
    files = list(tmp_path.glob("*/k_*.py"))
    assert files, f"no kernel modules under {tmp_path}"
    assert "@njit" in files[0].read_text()
    assert list(tmp_path.glob("*/__pycache__/k_*.nbi"))


# ---- (c), (d) across processes ----

SCRIPT = """
import json
import numpy as np
import jitnet as jn
from jitnet.codegen import cache

@jn.compile
def f(x, y):
    return jn.softmax(x * y, axis=-1), jn.sum(jn.tanh(x) - y, axis=0), jn.max(x, axis=1)

x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
y = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
out = f(x, y)
print(json.dumps({
    "compiles": cache.stats.compiles,
    "disk_loads": cache.stats.disk_loads,
    "result": [np.asarray(o).tolist() for o in out],
}))
"""


def run_script(cache_dir: Path) -> tuple[dict, str]:
    """Run SCRIPT in a fresh interpreter over this checkout; its JSON report and its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITNET_", "NUMBA_"))}
    env.update(PYTHONPATH=str(REPO), JITNET_CACHE_DIR=str(cache_dir), PYTHONWARNINGS="default")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=str(cache_dir.parent), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def expected_result() -> list:
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    y = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    z = x * y
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return [e / e.sum(axis=-1, keepdims=True), (np.tanh(x) - y).sum(axis=0), x.max(axis=1)]


def assert_result(report: dict) -> None:
    for got, want in zip(report["result"], expected_result()):
        np.testing.assert_allclose(np.array(got, np.float32), want, rtol=1e-5, atol=1e-6)


def test_warm_start_compiles_nothing(tmp_path):
    cold, _ = run_script(tmp_path / "cache")
    warm, stderr = run_script(tmp_path / "cache")
    assert cold["compiles"] > 0
    assert warm["compiles"] == 0
    assert warm["disk_loads"] == cold["compiles"] + cold["disk_loads"]
    assert warm["result"] == cold["result"]
    assert_result(warm)
    assert "Warning" not in stderr


def test_cache_dir_holds_sources_and_machine_code(tmp_path):
    run_script(tmp_path / "cache")
    (fingerprint,) = (tmp_path / "cache").iterdir()
    sources = sorted(fingerprint.glob("k_*.py"))
    assert sources
    for src in sources:
        assert list(fingerprint.glob(f"__pycache__/{src.stem}.*.nbi")), f"no numba index for {src.name}"
        assert list(fingerprint.glob(f"__pycache__/{src.stem}.*.nbc")), f"no machine code for {src.name}"


def _garble(path: Path) -> None:
    path.write_text("garbage, neither python nor a pickle (\n")


def _binary_junk(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "pattern, damage",
    [
        ("k_*.py", _garble),
        ("k_*.py", _truncate),
        ("k_*.py", _binary_junk),
        ("__pycache__/*.nbi", _garble),
        ("__pycache__/*.nbi", _truncate),
        ("__pycache__/*.nbc", _garble),
        ("__pycache__/*.nbc", _truncate),
    ],
    ids=[
        "py-garbled",
        "py-truncated",
        "py-binary",
        "nbi-garbled",
        "nbi-truncated",
        "nbc-garbled",
        "nbc-truncated",
    ],
)
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, pattern, damage):
    cache_dir = tmp_path / "cache"
    cold, _ = run_script(cache_dir)
    damaged = list(cache_dir.glob(f"*/{pattern}"))
    assert damaged, f"nothing matches {pattern}"
    for path in damaged:
        damage(path)

    rebuilt, stderr = run_script(cache_dir)
    assert rebuilt["result"] == cold["result"]
    assert "Warning" in stderr and "cache" in stderr, stderr
    assert rebuilt["compiles"] > 0

    warm, stderr = run_script(cache_dir)
    assert warm["compiles"] == 0 and warm["disk_loads"] > 0
    assert warm["result"] == cold["result"]
    assert "Warning" not in stderr


def test_the_fingerprint_covers_the_code_generated_modules_call():
    """A generated module imports vmath, intrinsics and the GEMM cores by name: a change to them must
    start a fresh cache directory, or numba would load machine code built from the old code."""
    package = Path(cache.__file__).parents[1]
    names = {p.relative_to(package).as_posix() for p in cache.fingerprinted_files()}
    for module in ("codegen/expr.py", "backends/cpu/vmath.py", "backends/cpu/gemm.py", "backends/cuda/devmath.py"):
        assert module in names
