"""The CPU backend: numba `njit` kernels (parallel loops), and the extern ops' own kernels: matmul
(generated register-blocked kernel or BLAS, matmul.py), conv2d and its gradients (im2col + the
matmul micro-kernel, conv.py), pooling and its gradients (pooling.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jitnet.backends import Backend
from jitnet.backends.cpu import conv, pooling, scatter
from jitnet.backends.cpu.device import cpu_device
from jitnet.backends.cpu.dialect import DIALECT
from jitnet.backends.cpu.kernels import generate
from jitnet.backends.cpu.matmul import matmul_kernel
from jitnet.backends.cpu.precompile import compile_new
from jitnet.backends.cpu.rules import RULES
from jitnet.codegen import cache
from jitnet.codegen.epilogue import epilogue_of, extern_op, operand_layout, reorder_arguments
from jitnet.ir.fusion import Kernel
from jitnet.ir.opdefs import Kind


def _prepare(kernels: list[Kernel]) -> None:
    """Compile a program's new kernel modules in two processes (precompile.py)."""
    with cache.collect() as sources:  # a dry run: the sources the lowerings would load
        for kernel in kernels:
            LOWERINGS[kernel.kind](kernel)
    compile_new(sources)


def lower_fused(kernel: Kernel) -> tuple[Callable, str]:
    """(fn, source) where fn(*outputs, *inputs) runs the kernel on flat contiguous buffers."""
    source = generate(kernel)
    return cache.load(source), source


def lower_extern(kernel: Kernel) -> tuple[Callable, str]:
    op, (operands, transposed) = extern_op(kernel), operand_layout(kernel)
    epilogue = epilogue_of(kernel, DIALECT)
    a_trans, b_trans = (transposed + [False])[:2]
    fn, source = extern_kernel(
        op.op, op.shape, op.dtype, [n.shape for n in operands], op.attrs, epilogue, a_trans, b_trans
    )
    return reorder_arguments(fn, kernel, epilogue), source


def extern_kernel(
    op: str, out_shape, dtype, in_shapes, attrs: dict, epilogue=None, a_trans: bool = False, b_trans: bool = False
) -> tuple[Callable, str]:
    """(fn(out, *inputs, *epilogue.params), source) for one extern op on flat contiguous buffers.
    `epilogue` (matmul and the convolutions; see codegen.epilogue.Epilogue) is applied to each output
    element before it is stored; `a_trans`/`b_trans` (matmul): that operand's buffer holds its transpose."""
    if epilogue is not None and op in pooling.POOL_OPS:
        raise ValueError(f"{op} takes no epilogue")
    if (a_trans or b_trans) and op != "matmul":
        raise ValueError(f"{op} takes no transposed operands")
    if op == "matmul":
        return matmul_kernel(out_shape, in_shapes[0], in_shapes[1], dtype, a_trans, b_trans, epilogue)
    if op == "conv2d":
        source = conv.conv2d_source(in_shapes[0], in_shapes[1], attrs["stride"], attrs["padding"], dtype, epilogue)
    elif op == "conv2d_input_grad":
        source = conv.conv2d_input_grad_source(
            in_shapes[0], in_shapes[1], attrs["stride"], attrs["padding"], attrs["in_shape"], dtype, epilogue
        )
    elif op == "conv2d_weight_grad":
        source = conv.conv2d_weight_grad_source(
            in_shapes[0], in_shapes[1], attrs["stride"], attrs["padding"], attrs["w_shape"], dtype, epilogue
        )
    elif op in pooling.POOL_OPS:
        x_shape = attrs["in_shape"] if op.endswith("_vjp") else in_shapes[0]
        source = pooling.pool_source(op, x_shape, attrs["kernel"], attrs["stride"], attrs["padding"], dtype)
    elif op == "scatter_add":
        n_indices = int(np.prod(in_shapes[1], dtype=np.int64))
        source = scatter.scatter_add_source(out_shape, attrs["axis"], n_indices, dtype)
    else:
        raise ValueError(f"the CPU backend has no kernel for extern op {op!r}")
    return cache.load(source), source


LOWERINGS = {
    Kind.ELEMENTWISE: lower_fused,
    Kind.REDUCE: lower_fused,
    Kind.ROWWISE: lower_fused,
    Kind.EXTERN: lower_extern,
}
BACKEND = Backend("cpu", "cpu", cpu_device, RULES, LOWERINGS, prepare=_prepare)
