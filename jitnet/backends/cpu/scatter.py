"""CPU source for scatter_add, the gradient of take (gather): out[..., ind[j], ...] += g[..., j, ...].

The output is (outer, n, inner) around the scattered axis and g is (outer, J, inner). Each chunk of
the parallel kernel (cpu/parallel.py) owns whole (outer, inner) columns of the output: it zeroes its
columns, then adds g's rows into them in the order of j. No two chunks write one element (no races,
no atomics) and every element sums its contributions in the same order as the reference.
"""

from __future__ import annotations

import math

import numpy as np

from jitnet.backends.cpu.matmul import IMPORTS, _Lines
from jitnet.backends.cpu.parallel import chunked_kernel, jit_flags


def scatter_add_source(out_shape: tuple, axis: int, n_indices: int, dtype) -> str:
    """Module source of `kernel(out, g, ind)` on flat buffers, ind int64 (see the module doc)."""
    dt, it = np.dtype(dtype), np.dtype(np.int64)
    outer, n, inner = math.prod(out_shape[:axis]), out_shape[axis], math.prod(out_shape[axis + 1 :])
    columns = outer * inner
    e = _Lines()
    e(1, f"for c in range(t * {columns} // nt, (t + 1) * {columns} // nt):")
    e(2, f"o = c // {inner}")
    e(2, f"base = o * {n * inner} + c % {inner}")
    e(2, f"for v in range({n}):")
    e(3, f"st(out, base + v * {inner}, np.{dt.name}(0.0))")
    e(2, f"gbase = o * {n_indices * inner} + c % {inner}")
    e(2, f"for j in range({n_indices}):")
    e(3, "i = ind[j]")
    e(3, f"i = min(max(i + {n} if i < 0 else i, 0), {max(n - 1, 0)})")
    e(3, f"at = base + i * {inner}")
    e(3, f"st(out, at, ld(out, at) + ld(g, gbase + j * {inner}))")
    header = [
        f"# jitnet cpu scatter_add: out {tuple(out_shape)} axis {axis}, {n_indices} indices, {dt.name}",
        *IMPORTS,
        "",
    ]
    if columns == 0:
        return "\n".join([*header, "", "def kernel(out, g, ind):", "    pass", ""]) + "\n"
    sig = f"void({dt.name}[::1], readonly({dt.name}), readonly({it.name}))"
    buffers = [("out", dt), ("g", dt), ("ind", it)]
    threads = "num_threads()" if columns > 1 else "1"
    return "\n".join(header + chunked_kernel(buffers, sig, e.lines, jit_flags(), threads=threads)) + "\n"
