"""CUDA source for scatter_add, the gradient of take (gather): out[..., ind[j], ...] += g[..., j, ...].

The output is (outer, n, inner) around the scattered axis and g is (outer, J, inner). No atomics:
every sum is taken in one fixed order, so the result is the same on every run (the program runner's
check of its graph replays compares bits) and no two threads write one element.

A thread per (outer, inner) output column, adding g's rows into it in the order of j, is only
outer * inner threads: 128 for the gradient of a width-128 embedding, a sliver of a GPU. So the
indices are cut into `segments` runs, enough that segments x columns threads fill the GPU
(SCATTER_THREADS), within SCRATCH_MAX elements of partial sums: the first kernel has a thread per
(segment, column), which zeroes its segment's column of the partial sums and adds its run of
g's rows into it in the order of j (consecutive threads take consecutive inner positions, so loads
and stores coalesce); the second kernel has a thread per output element, which adds the segments'
partial sums in segment order. With one segment the first kernel writes the output directly.
"""

from __future__ import annotations

import math

import numpy as np

from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from jitnet.backends.cuda.launch import plan_source, single_source
from jitnet.backends.cuda.matmul import SOURCE_IMPORTS, _cdiv

SCATTER_THREADS = 1 << 16  # threads the partial-sum kernel aims for (segments x columns)
SCRATCH_MAX = 1 << 24  # elements of partial sums at most (64 MiB of float32)


def segments_for(columns: int, size: int, n_indices: int) -> int:
    """How many runs the indices are cut into (see the module docstring)."""
    return max(1, min(n_indices, SCATTER_THREADS // max(columns, 1), SCRATCH_MAX // max(size, 1)))


def scatter_add_source(out_shape: tuple, axis: int, n_indices: int, dtype, segments: int | None = None) -> str:
    """Module source defining `launch(out, g, ind)` on flat buffers, ind int64 (see the module doc).
    `segments` overrides `segments_for`."""
    ty = np.dtype(dtype).name
    outer, n, inner = math.prod(out_shape[:axis]), out_shape[axis], math.prod(out_shape[axis + 1 :])
    columns, size = outer * inner, math.prod(out_shape)
    header = [f"# jitnet cuda kernel: scatter_add out {tuple(out_shape)} axis {axis}, {n_indices} indices, {ty}"]
    if columns == 0:
        return "\n".join(header + SOURCE_IMPORTS + [plan_source(3), ""])
    segments = segments_for(columns, size, n_indices) if segments is None else max(1, min(segments, n_indices))
    per = _cdiv(max(n_indices, 1), segments)
    header[0] += f"; {segments} segments of {per} indices"
    lines = [
        f"@cuda.jit(void({ty}[::1], {ty}[::1], int64[::1]), cache=True)",
        "def partial(part, g, ind):",
        f"    for t in range(cuda.grid(1), {segments * columns}, cuda.gridsize(1)):",
        f"        s, c = t // {columns}, t % {columns}",
        f"        base = s * {size} + (c // {inner}) * {n * inner} + c % {inner}",
        f"        for v in range({n}):",
        f"            part[u64(base + v * {inner})] = np.{ty}(0.0)",
        f"        gbase = (c // {inner}) * {n_indices * inner} + c % {inner}",
        f"        for j in range(s * {per}, min({n_indices}, (s + 1) * {per})):",
        "            i = ind[u64(j)]",
        f"            i = min(max(i + {n} if i < 0 else i, 0), {max(n - 1, 0)})",
        f"            at = u64(base + i * {inner})",
        f"            part[at] = part[at] + g[u64(gbase + j * {inner})]",
        "",
        "",
    ]
    grid = lambda threads: max(1, min(MAX_BLOCKS, _cdiv(threads, BLOCK)))
    if segments == 1:
        lines.append(single_source("partial", grid(columns), BLOCK, 3))
    else:
        lines += [
            f"@cuda.jit(void({ty}[::1], {ty}[::1]), cache=True)",
            "def combine(out, part):",
            f"    for e in range(cuda.grid(1), {size}, cuda.gridsize(1)):",
            "        acc = part[u64(e)]",
            f"        for s in range(1, {segments}):",
            f"            acc = acc + part[u64(s * {size} + e)]",
            "        out[u64(e)] = acc",
            "",
            "",
            plan_source(
                3,
                [("partial", grid(segments * columns), BLOCK, (3, 1, 2)), ("combine", grid(size), BLOCK, (0, 3))],
                [(segments * size, ty)],
            ),
        ]
    return "\n".join(header + SOURCE_IMPORTS + lines) + "\n"
