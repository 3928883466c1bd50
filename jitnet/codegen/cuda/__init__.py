"""The CUDA backend: `numba.cuda.jit` kernels, launched with configurations fixed at build time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jitnet.codegen import cache
from jitnet.codegen.cuda.kernels import generate
from jitnet.ir.fusion import Kernel
from jitnet.ir.ops import OPS


def compile_kernel(kernel: Kernel) -> tuple[Callable, str]:
    """(launch, source) where launch(out, *inputs) runs the kernel on flat device buffers."""
    if kernel.kind == "extern":
        return _extern(kernel), f"# extern {kernel.describe()} (numpy reference, through the host)\n"
    source = generate(kernel)
    return cache.load(source, "launch"), source


def _extern(kernel: Kernel) -> Callable:
    """matmul, conv and pools go through the host until their CUDA kernels exist."""
    root = kernel.root
    shapes = [n.shape for n in kernel.inputs]
    ref, attrs = OPS[root.op].ref, root.attrs

    def run(out, *ins):
        result = ref(*(x.copy_to_host().reshape(s) for x, s in zip(ins, shapes)), **attrs)
        out.copy_to_device(np.ascontiguousarray(result, dtype=root.dtype).reshape(-1))

    return run
