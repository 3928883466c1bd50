"""The CUDA backend: `numba.cuda.jit` kernels, launched with configurations fixed at build time."""

from __future__ import annotations

from collections.abc import Callable

from jitnet.codegen import cache
from jitnet.codegen.cuda.conv import conv2d_input_grad_source, conv2d_source, conv2d_weight_grad_source
from jitnet.codegen.cuda.kernels import DIALECT, generate
from jitnet.codegen.epilogue import epilogue_of, extern_op, operand_layout, reorder_arguments
from jitnet.codegen.cuda.matmul import matmul_source
from jitnet.codegen.cuda.pool import OPS as POOL_OPS
from jitnet.codegen.cuda.pool import pool2d_source
from jitnet.ir.fusion import Kernel


def compile_kernel(kernel: Kernel) -> tuple[Callable, str]:
    """(launch, source) where launch(*outputs, *inputs) runs the kernel on flat device buffers."""
    if kernel.kind != "extern":
        source = generate(kernel)
        return cache.load(source, "launch"), source
    source = extern_source(kernel)
    return reorder_arguments(cache.load(source, "launch"), kernel, epilogue_of(kernel, DIALECT)), source


def extern_source(kernel: Kernel) -> str:
    """The generated kernel of an extern op (matmul, conv2d and its two gradients, pools and their
    VJPs) over its operand buffers (a matmul operand maybe transposed), with its fused epilogue."""
    op = extern_op(kernel)
    a_trans, b_trans = (operand_layout(kernel)[1] + [False])[:2]
    shapes = [n.shape for n in op.inputs]  # as the op sees them (a transposed operand: its view)
    attrs = op.attrs
    epilogue = epilogue_of(kernel, DIALECT)
    if op.op == "matmul":
        (a, b), out = shapes, op.shape
        return matmul_source(
            a[-2], b[-1], a[-1], out[:-2], op.dtype, a_trans, b_trans,
            a_batch=a[:-2], b_batch=b[:-2], epilogue=epilogue,
        )
    if op.op == "conv2d":
        return conv2d_source(shapes[0], shapes[1], attrs["stride"], attrs["padding"], op.dtype, epilogue=epilogue)
    if op.op == "conv2d_input_grad":  # (g, w) -> gx
        g, w = shapes
        return conv2d_input_grad_source(g, w, attrs["stride"], attrs["padding"], attrs["in_shape"], op.dtype)
    if op.op == "conv2d_weight_grad":  # (x, g) -> gw
        x, g = shapes
        return conv2d_weight_grad_source(x, g, attrs["stride"], attrs["padding"], attrs["w_shape"], op.dtype)
    if op.op in POOL_OPS:
        in_shape = attrs.get("in_shape", shapes[0])
        return pool2d_source(op.op, in_shape, attrs["kernel"], attrs["stride"], attrs["padding"], op.dtype)
    raise NotImplementedError(f"no CUDA kernel for the extern op {op.op!r} ({kernel.describe()})")
