"""The CUDA backend: `numba.cuda.jit` kernels, launched with configurations fixed at build time."""

from __future__ import annotations

from collections.abc import Callable

from jitnet.codegen import cache
from jitnet.codegen.cuda.conv import conv2d_input_grad_source, conv2d_source, conv2d_weight_grad_source
from jitnet.codegen.cuda.kernels import generate
from jitnet.codegen.cuda.matmul import matmul_source
from jitnet.codegen.cuda.pool import OPS as POOL_OPS
from jitnet.codegen.cuda.pool import pool2d_source
from jitnet.ir.fusion import Kernel


def compile_kernel(kernel: Kernel) -> tuple[Callable, str]:
    """(launch, source) where launch(out, *inputs) runs the kernel on flat device buffers."""
    source = extern_source(kernel) if kernel.kind == "extern" else generate(kernel)
    return cache.load(source, "launch"), source


def extern_source(kernel: Kernel) -> str:
    """The generated kernel of an extern op (matmul, conv2d and its two gradients, pools and their
    VJPs) over its materialised, contiguous inputs."""
    root = kernel.root
    shapes = [n.shape for n in kernel.inputs]
    attrs = root.attrs
    if root.op == "matmul":
        (a, b), out = shapes, root.shape
        return matmul_source(a[-2], b[-1], a[-1], out[:-2], root.dtype, a_batch=a[:-2], b_batch=b[:-2])
    if root.op == "conv2d":
        return conv2d_source(shapes[0], shapes[1], attrs["stride"], attrs["padding"], root.dtype)
    if root.op == "conv2d_input_grad":  # (g, w) -> gx
        g, w = shapes
        return conv2d_input_grad_source(g, w, attrs["stride"], attrs["padding"], attrs["in_shape"], root.dtype)
    if root.op == "conv2d_weight_grad":  # (x, g) -> gw
        x, g = shapes
        return conv2d_weight_grad_source(x, g, attrs["stride"], attrs["padding"], attrs["w_shape"], root.dtype)
    if root.op in POOL_OPS:
        in_shape = attrs.get("in_shape", shapes[0])
        return pool2d_source(root.op, in_shape, attrs["kernel"], attrs["stride"], attrs["padding"], root.dtype)
    raise NotImplementedError(f"no CUDA kernel for the extern op {root.op!r} ({kernel.describe()})")
