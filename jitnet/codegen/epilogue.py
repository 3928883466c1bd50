"""The elementwise consumers fused into an extern kernel (matmul, conv2d), rendered at its store.

The fuser gives an extern op's kernel a root that may be an elementwise function of the op's output
(bias add, activation, scale, residual add). The matmul and conv generators of both backends take an
`epilogue` hook with `params` (extra buffers appended to their arguments), `dtypes`, and
`render(v, idx)`: the statements computing the root from the finished output element `v` at the
output multi-index `idx` (source expressions), and the expression to store. This module builds that
hook from the kernel, with the backend's dialect, so the epilogue is the same scalar code any fused
kernel would run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from jitnet.codegen.expr import Dialect, Emitter, NameCounter
from jitnet.codegen.index import Idx, unflatten_index
from jitnet.codegen.source import prod
from jitnet.ir.fusion import Kernel, extern_operands
from jitnet.ir.node import Node
from jitnet.ir.opdefs import OPS, Kind


class Epilogue(Protocol):
    """What the matmul and conv generators of both backends need of a fused elementwise epilogue
    (FusedEpilogue below is the one the fuser's kernels give them; tests pass their own).

    `params`: names of extra flat buffers, appended to the kernel's (and a CUDA launch's) arguments
    after out and the operands; `dtypes` (optional attribute): their dtypes, else the output's.
    `render(v, idx)`: given the name of the variable holding a finished output element and the source
    expressions of its multi-index (matmul: [z, i, j] = flat batch, row, column; conv: [n, o, y, x]),
    the statements to run before the store (valid Python, no indent) and the expression to store.
    Names they bind must not shadow the generators' own short names: prefix them with `ep_`."""

    params: list[str]

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]: ...


def extern_op(kernel: Kernel) -> Node:
    (op,) = [n for n in kernel.nodes if OPS[n.op].kind == Kind.EXTERN]
    return op


def _epilogue_buffers(kernel: Kernel, op: Node) -> list[Node]:
    """The buffers the epilogue reads (reached from the root without passing through the op)."""
    found, seen, stack = [], set(), [kernel.root]
    while stack:
        node = stack.pop()
        if node in seen or node is op:
            continue
        seen.add(node)
        if node in kernel.inputs:
            found.append(node)
            continue
        stack.extend(node.inputs)
    return sorted(found, key=kernel.inputs.index)


def _prefixed_names() -> Callable[..., str]:
    """Fresh names that cannot shadow the generators' own short names."""
    counter = NameCounter()
    return lambda prefix="v": "ep_" + counter(prefix)


class FusedEpilogue:
    def __init__(self, kernel: Kernel, dialect: Dialect):
        self.kernel, self.dialect = kernel, dialect
        self.op = extern_op(kernel)
        self.buffers = _epilogue_buffers(kernel, self.op)
        self.params = [f"ep_in{i}" for i in range(len(self.buffers))]
        self.dtypes = [n.dtype for n in self.buffers]

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]:
        """idx: one expression per output axis, or fewer, the first then being the linear index over
        the leading axes (matmul's flattened batch)."""
        shape = self.op.shape
        lead = len(shape) - len(idx) + 1
        names = _prefixed_names()
        variables = [names("i") for _ in idx]
        lines = [f"{name} = {expr}" for name, expr in zip(variables, idx)]
        first = Idx.var(variables[0], prod(shape[:lead]))
        full = unflatten_index(first, shape[:lead]) + [Idx.var(name, n) for name, n in zip(variables[1:], shape[lead:])]
        emitter = Emitter(self.dialect, dict(zip(self.buffers, self.params)), names, 0)
        emitter.bind(self.op, full, v)
        value = emitter.value(self.kernel.root, full)
        return lines + emitter.lines, value


def epilogue_of(kernel: Kernel, dialect: Dialect) -> FusedEpilogue | None:
    """The hook for an extern kernel whose root is more than its op, else None."""
    return FusedEpilogue(kernel, dialect) if kernel.root is not extern_op(kernel) else None


def operand_layout(kernel: Kernel) -> tuple[list[Node], list[bool]]:
    """The op's operand buffers and whether each is read transposed (last two axes swapped)."""
    pairs = extern_operands(kernel)
    return [b for b, _ in pairs], [t for _, t in pairs]


def argument_order(kernel: Kernel, epilogue: FusedEpilogue | None) -> list[int]:
    """The executor passes (out, *kernel.inputs); a generated extern kernel takes (out, *operand
    buffers, *epilogue buffers), in which a buffer may appear twice (x @ w + x): its buffer j + 1
    is the executor's kernel.inputs[order[j]]."""
    operands, _ = operand_layout(kernel)
    return [kernel.inputs.index(b) for b in operands + (epilogue.buffers if epilogue else [])]


def reorder_arguments(launch: Callable, kernel: Kernel, epilogue: FusedEpilogue | None) -> Callable:
    """`launch` taking its buffers in the executor's order (see `argument_order`)."""
    order = argument_order(kernel, epilogue)
    if order == list(range(len(kernel.inputs))):
        return launch

    def run(out, *inputs):
        launch(out, *[inputs[i] for i in order])

    return run
