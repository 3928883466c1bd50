"""CUDA source for scatter_add, the gradient of take (gather): out[..., ind[j], ...] += g[..., j, ...].

The output is (outer, n, inner) around the scattered axis and g is (outer, J, inner). One thread
per (outer, inner) column of the output (a grid-stride loop; consecutive threads take consecutive
inner positions, so loads and stores coalesce) zeroes its column and adds g's rows into it in the
order of j: no atomics, so the sums are deterministic and equal the reference's bit for bit (the
program runner's check of its graph replays needs that), and no two threads write one element.
"""

from __future__ import annotations

import math

import numpy as np

from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from jitnet.backends.cuda.launch import plan_source, single_source
from jitnet.backends.cuda.matmul import SOURCE_IMPORTS, _cdiv


def scatter_add_source(out_shape: tuple, axis: int, n_indices: int, dtype) -> str:
    """Module source defining `launch(out, g, ind)` on flat buffers, ind int64 (see the module doc)."""
    ty = np.dtype(dtype).name
    outer, n, inner = math.prod(out_shape[:axis]), out_shape[axis], math.prod(out_shape[axis + 1 :])
    columns = outer * inner
    header = [f"# jitnet cuda kernel: scatter_add out {tuple(out_shape)} axis {axis}, {n_indices} indices, {ty}"]
    if columns == 0:
        return "\n".join(header + SOURCE_IMPORTS + [plan_source(3), ""])
    lines = [
        f"@cuda.jit(void({ty}[::1], {ty}[::1], int64[::1]), cache=True)",
        "def kernel(out, g, ind):",
        f"    for c in range(cuda.grid(1), {columns}, cuda.gridsize(1)):",
        f"        base = (c // {inner}) * {n * inner} + c % {inner}",
        f"        for v in range({n}):",
        f"            out[u64(base + v * {inner})] = np.{ty}(0.0)",
        f"        gbase = (c // {inner}) * {n_indices * inner} + c % {inner}",
        f"        for j in range({n_indices}):",
        "            i = ind[u64(j)]",
        f"            i = min(max(i + {n} if i < 0 else i, 0), {max(n - 1, 0)})",
        f"            at = u64(base + i * {inner})",
        f"            out[at] = out[at] + g[u64(gbase + j * {inner})]",
        "",
        "",
        single_source("kernel", max(1, min(MAX_BLOCKS, _cdiv(columns, BLOCK))), BLOCK, 3),
        "",
    ]
    return "\n".join(header + SOURCE_IMPORTS + lines)
