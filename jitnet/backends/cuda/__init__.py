"""The CUDA backend: `numba.cuda.jit` kernels with launch configurations fixed at build time (their
plans, launch.py), run by a program runner that launches through the driver (runner.py)."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

from jitnet.backends import Backend
from jitnet.backends.cuda.conv import conv2d_input_grad_source, conv2d_source, conv2d_weight_grad_source
from jitnet.backends.cuda.device import cuda_device, preferred, simulator
from jitnet.backends.cuda.dialect import DIALECT
from jitnet.backends.cuda.driver import CoreDriver
from jitnet.backends.cuda.kernels import generate
from jitnet.backends.cuda.launch import Plan
from jitnet.backends.cuda.matmul import matmul_source
from jitnet.backends.cuda.pooling import POOL_OPS, pool2d_source
from jitnet.backends.cuda.precompile import compile_new
from jitnet.backends.cuda.rules import RULES
from jitnet.backends.cuda.runner import ProgramRunner, launch_mode
from jitnet.backends.cuda.scatter import scatter_add_source
from jitnet.codegen import cache
from jitnet.codegen.epilogue import Epilogue, argument_order, epilogue_of, extern_op, operand_layout
from jitnet.ir.fusion import Kernel
from jitnet.ir.node import Node
from jitnet.ir.opdefs import Kind
from jitnet.runtime.executor import Program


def _prepare(kernels: list[Kernel]) -> None:
    """Compile a program's new kernel modules in parallel processes (precompile.py)."""
    with cache.collect() as sources:  # a dry run: the sources the lowerings would load
        for kernel in kernels:
            LOWERINGS[kernel.kind](kernel)
    compile_new(sources)


def lower_fused(kernel: Kernel) -> tuple[Callable, str]:
    """(plan, source): the plan (launch.py) runs the kernel as plan(*outputs, *inputs) on flat
    device buffers."""
    source = generate(kernel)
    return cache.load(source, "launch"), source


def lower_extern(kernel: Kernel) -> tuple[Callable, str]:
    op, (operands, transposed) = extern_op(kernel), operand_layout(kernel)
    epilogue = epilogue_of(kernel, DIALECT)
    a_trans, b_trans = (transposed + [False])[:2]
    source = extern_source(op, [n.shape for n in operands], a_trans, b_trans, epilogue)
    plan = cache.load(source, "launch")
    if isinstance(plan, Plan):  # else a placeholder: a dry run inside cache.collect
        plan = plan.reorder(argument_order(kernel, epilogue), 1 + len(kernel.inputs))
    return plan, source


def extern_source(
    root: Node, shapes: list[tuple], a_trans: bool = False, b_trans: bool = False, epilogue: Epilogue | None = None
) -> str:
    """The generated kernel of an extern op (matmul, conv2d and its two gradients, pools and their
    VJPs) over its operand buffers of these shapes. matmul operands may be buffers holding the
    transpose of the operand (a_trans: a buffer (..., K, M) read as A; b_trans: (..., N, K)), and
    matmul and the three convolutions take an elementwise epilogue run at each output element's
    store (see `codegen.epilogue.Epilogue`), its params appended to the launch's arguments."""
    attrs = root.attrs
    if epilogue is not None and root.op in POOL_OPS:
        raise ValueError(f"{root.op} takes no epilogue")
    if (a_trans or b_trans) and root.op != "matmul":
        raise ValueError(f"{root.op} takes no transposed operands")
    if root.op == "matmul":
        (a, b), out = shapes, root.shape
        k = a[-2] if a_trans else a[-1]
        return matmul_source(
            out[-2],
            out[-1],
            k,
            out[:-2],
            root.dtype,
            a_trans,
            b_trans,
            a_batch=a[:-2],
            b_batch=b[:-2],
            epilogue=epilogue,
        )
    stride, padding = attrs.get("stride"), attrs.get("padding")
    if root.op == "conv2d":
        return conv2d_source(shapes[0], shapes[1], stride, padding, root.dtype, epilogue=epilogue)
    if root.op == "conv2d_input_grad":  # (g, w) -> gx
        g, w = shapes
        return conv2d_input_grad_source(g, w, stride, padding, attrs["in_shape"], root.dtype, epilogue=epilogue)
    if root.op == "conv2d_weight_grad":  # (x, g) -> gw
        x, g = shapes
        return conv2d_weight_grad_source(x, g, stride, padding, attrs["w_shape"], root.dtype, epilogue=epilogue)
    if root.op in POOL_OPS:
        in_shape = attrs.get("in_shape", shapes[0])
        return pool2d_source(root.op, in_shape, attrs["kernel"], stride, padding, root.dtype)
    if root.op == "scatter_add":  # (values, int64 indices) -> out
        return scatter_add_source(root.shape, attrs["axis"], math.prod(shapes[1]), root.dtype)
    raise NotImplementedError(f"no CUDA kernel for the extern op {root.op!r}")


def runner(program: Program) -> Callable[[list, list], list]:
    """How a program's calls run: plainly in the simulator, else through the driver (runner.py)."""
    mode = launch_mode()
    if simulator() or mode == "plain":
        return program.run
    driver = core_driver()
    return program.run if driver is None else ProgramRunner(program, driver, mode)


@functools.cache
def core_driver() -> CoreDriver | None:
    try:
        return CoreDriver()
    except Exception as e:  # no usable cuda.core: numba's dispatcher still works
        warnings.warn(
            f"jitnet: CUDA launches go through numba's dispatcher (cuda.core: {e})", RuntimeWarning, stacklevel=2
        )
        return None


LOWERINGS = {
    Kind.ELEMENTWISE: lower_fused,
    Kind.REDUCE: lower_fused,
    Kind.ROWWISE: lower_fused,
    Kind.EXTERN: lower_extern,
}
BACKEND = Backend("cuda", "cuda", cuda_device, RULES, LOWERINGS, _prepare, preferred, runner)
