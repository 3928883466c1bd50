"""Shared by the extern-kernel tests (matmul through the engine, conv, pools): the simulator fixture
and runners for generated modules."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import numba
import numba.np.numpy_support
import numpy as np

from jitnet.codegen import cache
from jitnet.runtime.device import simulator


def fast_simulator_barriers() -> Iterator[None]:
    """The simulator runs a Python thread per CUDA thread and its block manager busy-polls them at
    every syncthreads(); with the default 5 ms GIL switch interval a barrier costs ~10 ms. A 0.1 ms
    interval makes kernels with barriers about 5x faster, but it also exposes a race in the
    simulator's `cuda.shared.array` (check-then-insert on a dict from every thread of the block:
    two threads can each create the block's array, and the writes to the losing one vanish). So the
    interval is shortened and the shared-array lookup made atomic; both restored after. Use as a
    module-scoped autouse fixture:
    `_sim = pytest.fixture(autouse=True, scope="module")(fast_simulator_barriers)`."""
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


def run_source(source: str, out_shape, dtype, *inputs: np.ndarray) -> np.ndarray:
    """Launch a generated module on flat device copies of `inputs`, into an output poisoned with
    NaN (or a sentinel for integers), so every element the kernel fails to write shows."""
    from numba import cuda

    dtype = np.dtype(dtype)
    poison = np.nan if dtype.kind == "f" else np.iinfo(dtype).min
    out = cuda.to_device(np.full(int(np.prod(out_shape)), poison, dtype))
    cache.load(source, "launch")(out, *(cuda.to_device(np.ascontiguousarray(x).reshape(-1)) for x in inputs))
    return out.copy_to_host().reshape(out_shape)


class BiasRelu:
    """A hand-written epilogue: relu(v + bias[idx[axis]]) (the lead's fuser will build these)."""

    params = ["ep_bias"]

    def __init__(self, axis: int):
        self.axis = axis

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]:
        return [f"ep_v = {v} + ep_bias[u64({idx[self.axis]})]"], "max(ep_v, 0.0)"


class ScaleResidual:
    """Another: v * 0.5 + res[flat index], with the residual's dtype given (checks `dtypes` and
    every index expression of the output's multi-index)."""

    params = ["ep_res"]

    def __init__(self, shape: tuple[int, ...], dtype):
        self.shape, self.dtypes = shape, [np.dtype(dtype)]

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]:
        flat = idx[0]
        for i, size in zip(idx[1:], self.shape[1:]):
            flat = f"({flat}) * {size} + {i}"
        return [f"ep_flat = {flat}"], f"{v} * 0.5 + ep_res[u64(ep_flat)]"
