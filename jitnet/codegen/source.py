"""What the CPU and CUDA kernel templates share: the lines of a kernel under construction, numba
type names, and the index of a reduction's output (the reductions' semantics are in reduction.py)."""

from __future__ import annotations

import numpy as np

from jitnet.codegen.expr import Dialect, Emitter, NameCounter
from jitnet.codegen.index import Idx, unflatten_index
from jitnet.ir import dtypes
from jitnet.ir.fusion import Kernel
from jitnet.ir.node import Node, type_str


def numba_type(dtype: np.dtype) -> str:
    return "boolean" if dtypes.is_bool(dtype) else np.dtype(dtype).name


def prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def reduction_index(full: list, axes: tuple, node: Node) -> list:
    """The index of a reduction's output (or its epilogue's) from the index of its input with the
    reduced axes at 0: those axes kept as 0 (keepdims) or dropped, as node's rank says."""
    if len(node.shape) == len(full):
        return full
    return [i for d, i in enumerate(full) if d not in axes]


def row_geometry(node: Node, kept_var: str = "o", row_var: str = "r") -> tuple[int, int, list]:
    """(number of rows, row length, the multi-index at kept_var's row and row_var's element) of a
    row-wise node (softmax, log_softmax): rows are the kept axes flattened, in order."""
    axis, shape = node.attrs["axis"], node.shape
    kept = tuple(n for d, n in enumerate(shape) if d != axis)
    kept_size, row = prod(kept), shape[axis]
    kept_idx = unflatten_index(Idx.var(kept_var, kept_size), kept)
    return kept_size, row, kept_idx[:axis] + [Idx.var(row_var, row)] + kept_idx[axis:]


class KernelSource:
    """The lines of a kernel function under construction; inputs are parameters in0, in1, ..."""

    def __init__(self, kernel: Kernel, dialect: Dialect):
        self.kernel = kernel
        self.dialect = dialect
        self.outputs = {n: "out" if k == 0 else f"out{k}" for k, n in enumerate(kernel.outputs)}
        self.params = {n: f"in{i}" for i, n in enumerate(kernel.inputs)}
        self.names = NameCounter()
        self.lines: list[str] = []

    def header(self, title: str) -> list[str]:
        """Comment lines naming the kernel, its buffers and its ops, for `inspect()` and the cache files."""
        return [
            f"# {title}",
            *(f"# {name}: {type_str(n)}" for n, name in self.outputs.items()),
            *(f"# {name}: {type_str(n)}" for n, name in self.params.items()),
            "# " + " ".join(n.op for n in self.kernel.nodes if n.op != "const"),
        ]

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def store_siblings(self, body: Emitter, idx: list) -> None:
        """Write the sibling outputs (elementwise over the kernel's domain) at idx."""
        for node in self.kernel.siblings:
            body.emit(f"{self.dialect.element(self.outputs[node], idx, node.shape)} = {body.value(node, idx)}")

    def scope(self, indent: int) -> Emitter:
        return Emitter(self.dialect, self.params, self.names, indent)

    def close(self, scope: Emitter) -> None:
        self.lines.extend(scope.lines)
