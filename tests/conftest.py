"""Test-session setup: a kernel cache of its own, `helpers` importable everywhere, device memory that
is reused the moment it is freed (as a GPU driver does), the simulator made fast and race-free, and
the `backend` fixture that runs a test on every backend."""

import os
import sys
import tempfile
import threading
from collections.abc import Iterator

import numba
import numba.np.numpy_support
import numpy as np
import pytest

# Keep the kernel cache of a test run to itself, unless the caller chose one.
os.environ.setdefault("JITNET_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jitnet-test-cache"))
# `from helpers import check` in every test folder (tests are imported with importlib mode).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakedriver import DriverLikeAllocator, simulator_wrap
from helpers import BACKENDS

from jitnet.backends import device
from jitnet.backends.cuda.device import cuda_available, simulator


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The backend a differential test compiles for: "cpu", and "cuda" (marked `cuda`)."""
    return request.param


@pytest.fixture
def on_backend(backend, monkeypatch) -> str:
    """`backend` made the default (JITNET_BACKEND): modules build their parameters on its device, and
    what has no backend option and follows its data (eager layers, Optimizer.step, train_step) runs
    there on any machine, a GPU one included."""
    monkeypatch.setenv("JITNET_BACKEND", backend)
    return backend


@pytest.fixture(autouse=True, scope="session")
def driver_like_memory() -> Iterator[dict]:
    """Every test allocates device memory through `DriverLikeAllocator` (freed by a finalizer on the
    allocation, poisoned and handed to the next allocation at once): on the CPU device, and on the
    CUDA device under the simulator. A real GPU keeps numba's allocator, which does this for real."""
    allocators = {"cpu": DriverLikeAllocator()}
    if cuda_available() and simulator():
        allocators["cuda"] = DriverLikeAllocator(simulator_wrap)
    saved = {}
    for kind, allocator in allocators.items():
        pool = device(kind).pool
        saved[kind] = pool.allocate
        pool.clear()
        pool.allocate = allocator
    yield allocators
    for kind, allocate in saved.items():
        device(kind).pool.allocate = allocate


@pytest.fixture(autouse=True, scope="session")
def fast_simulator_barriers() -> Iterator[None]:
    """The simulator runs a Python thread per CUDA thread and its block manager busy-polls them at
    every syncthreads(); with the default 5 ms GIL switch interval a barrier costs ~10 ms. A 0.1 ms
    interval makes kernels with barriers about 5x faster, but it also exposes a race in the
    simulator's `cuda.shared.array` (check-then-insert on a dict from every thread of the block:
    two threads can each create the block's array, and the writes to the losing one vanish). So the
    interval is shortened and the shared-array lookup made atomic for the whole test session; both
    restored after."""
    if not simulator():
        yield
        return
    from numba.cuda.simulator import kernelapi

    shared, original = kernelapi.FakeCUDAShared, kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype):
        if shape == 0:
            return original(self, shape, dtype)
        if isinstance(dtype, numba.types.Type):
            dtype = numba.np.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    old = sys.getswitchinterval()
    shared.array = array
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(old)
        shared.array = original
