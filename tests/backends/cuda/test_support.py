"""`check_cuda_packages`: a numpy that numba-cuda's CUDA target cannot load with (numpy 2.5 removed
`np.row_stack`, which numba-cuda 0.30.4 registers) is reported by name, version and fix, not as an
AttributeError from deep inside numba at the first kernel compile.

Runs in the plain CPU test process (no GPU, no NVVM needed). The tests of the real target need
`numba.cuda`; the broken pair is faked by deleting `numpy.row_stack` in a subprocess, which only
numba-cuda trips over (numba's built-in target checks for it), so those skip without numba-cuda.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from jitnet.backends.cuda import support as cuda_support
from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.support import check_cuda_packages

ROW_STACK = "module 'numpy' has no attribute 'row_stack'"

# In a fresh interpreter: numpy as numpy 2.5 has it (no row_stack), then the device; prints what it raised.
BROKEN = textwrap.dedent(
    """
    import json, numpy
    if hasattr(numpy, "row_stack"):
        del numpy.row_stack
    import jitnet as jn
    from jitnet.backends.cuda import device
    device.cuda_available = lambda: True  # the check needs no GPU; this machine may have none
    try:
        jn.device("cuda")
    except RuntimeError as e:
        print(json.dumps({"message": str(e), "cause": repr(e.__cause__)}))
    else:
        print(json.dumps(None))
    """
)


@pytest.fixture
def fresh_check():
    """The check with its cached success forgotten before and after (it is cached per process)."""
    check_cuda_packages.cache_clear()
    yield
    check_cuda_packages.cache_clear()


def run_broken(simulator: bool) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_names_packages_and_fix(message: str) -> None:
    for name in ("numpy", "numba", "numba-cuda"):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        assert f"{name} {version}" in message, (name, message)
    assert "pip install 'numpy<2.5'" in message
    assert "pip install 'jitnet[cuda]'" in message
    assert "pip install -e '.[cuda]'" in message


def test_check_passes_here(fresh_check):
    """The installed packages load numba's CUDA target (numba-cuda's, or numba's built-in one)."""
    pytest.importorskip("numba.cuda")
    if simulator():
        pytest.skip("under the simulator numba.cuda is the simulator, which has no target to load")
    check_cuda_packages()
    check_cuda_packages()  # cached


def test_broken_pair_named_with_versions_and_fix():
    """numba-cuda with numpy 2.5's namespace: `jn.device("cuda")` raises a RuntimeError naming
    packages, versions and fix, chained from numba's AttributeError (the subprocess fakes a usable
    GPU: the check needs none)."""
    pytest.importorskip("numba_cuda")
    got = run_broken(simulator=False)
    assert got is not None, "check_cuda_packages() passed with numpy.row_stack removed"
    assert_names_packages_and_fix(got["message"])
    assert ROW_STACK in got["message"]
    assert got["cause"].startswith("AttributeError") and "row_stack" in got["cause"]


def test_simulator_unaffected_by_broken_pair():
    """The simulator never loads the CUDA target, so its device works even on a broken pair."""
    pytest.importorskip("numba_cuda")
    assert run_broken(simulator=True) is None


def test_failure_reported_and_not_cached(monkeypatch, fresh_check):
    """In-process: the target's AttributeError becomes the RuntimeError, each call checks again
    until one succeeds, and a success is checked once."""
    calls = []

    def broken() -> None:
        calls.append(1)
        raise AttributeError(ROW_STACK)

    monkeypatch.setattr(cuda_support, "_load_cuda_target", broken)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="numba's CUDA target does not load") as info:
            check_cuda_packages()
        assert isinstance(info.value.__cause__, AttributeError)
        assert_names_packages_and_fix(str(info.value))
    assert len(calls) == 2

    monkeypatch.setattr(cuda_support, "_load_cuda_target", lambda: calls.append(1))
    check_cuda_packages()
    check_cuda_packages()
    assert len(calls) == 3


def test_other_errors_pass_through(monkeypatch, fresh_check):
    """Only import-time failures are blamed on the packages; anything else propagates as it is."""

    def fails() -> None:
        raise OSError("libnvvm.so not found")

    monkeypatch.setattr(cuda_support, "_load_cuda_target", fails)
    with pytest.raises(OSError, match="libnvvm"):
        check_cuda_packages()


def test_device_cuda_runs_the_check(monkeypatch, fresh_check):
    """`jn.device("cuda")` on a usable GPU (faked) with a broken set raises the named error and
    creates no device."""
    from jitnet import backends
    from jitnet.backends.cuda import device as cuda_device_module

    monkeypatch.setattr(cuda_device_module, "cuda_available", lambda: True)
    monkeypatch.setattr(cuda_device_module, "simulator", lambda: False)
    monkeypatch.setattr(cuda_device_module, "_device", [])
    monkeypatch.setattr(backends, "_devices", {"cpu": backends.device("cpu")})
    monkeypatch.setattr(cuda_support, "_load_cuda_target", lambda: (_ for _ in ()).throw(AttributeError(ROW_STACK)))
    with pytest.raises(RuntimeError, match="row_stack"):
        backends.device("cuda")
    assert "cuda" not in backends._devices
