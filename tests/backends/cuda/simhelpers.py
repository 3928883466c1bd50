"""Shared by the extern-kernel tests (matmul through the engine, conv, pools): runners for generated
modules and hand-written epilogues."""

from __future__ import annotations

import numpy as np

from jitnet.codegen import cache


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
