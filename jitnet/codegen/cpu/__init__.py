"""The CPU backend: numba `njit` kernels (parallel loops) and extern ops through numpy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jitnet.codegen import cache
from jitnet.codegen.cpu.kernels import generate
from jitnet.ir.fusion import Kernel
from jitnet.ir.ops import OPS


def compile_kernel(kernel: Kernel) -> tuple[Callable, str]:
    """(fn, source) where fn(out, *inputs) runs the kernel on flat contiguous buffers."""
    if kernel.kind == "extern":
        return _extern(kernel), f"# extern {kernel.describe()} (numpy reference)\n"
    source = generate(kernel)
    return cache.load(source), source


def _extern(kernel: Kernel) -> Callable:
    """matmul, conv and pools run through numpy until their tiled kernels exist."""
    root = kernel.root
    shapes = [n.shape for n in kernel.inputs]
    ref, attrs = OPS[root.op].ref, root.attrs

    if root.op == "matmul":

        def run(out, a, b):
            np.matmul(a.reshape(shapes[0]), b.reshape(shapes[1]), out=out.reshape(root.shape))

    else:

        def run(out, *ins):
            out.reshape(root.shape)[...] = ref(*(x.reshape(s) for x, s in zip(ins, shapes)), **attrs)

    return run
