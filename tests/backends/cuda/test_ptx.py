"""Generated extern kernels compiled for a real GPU (sm_90 PTX through NVVM), without one: the
simulator runs kernels as Python, so only the CUDA target's own typing and lowering catch a source
that does not compile there (a float where an int must be, an unsupported call).

Runs in the plain CPU test process when numba finds NVVM (`numba.cuda.compile_ptx` needs no GPU);
skipped under the simulator and without the CUDA toolkit:

    python -m pytest -q tests/backends/cuda/test_ptx.py
"""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest
from simhelpers import BiasRelu, ScaleResidual

from jitnet.backends.cuda import conv, pooling
from jitnet.backends.cuda import matmul as mm
from jitnet.backends.cuda.device import simulator


def _nvvm() -> bool:
    if simulator():
        return False
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM().get_version()
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _nvvm(), reason="needs numba's CUDA target with NVVM (not the simulator)")


class _MinMax(ast.NodeTransformer):
    """Two-argument min/max as conditional expressions: numba's compile_ptx looks for a driver when
    it lowers the builtins (on a GPU they compile as they are)."""

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in ("min", "max") and len(node.args) == 2:
            a, b = node.args
            op = ast.GtE() if node.func.id == "max" else ast.LtE()
            return ast.IfExp(ast.Compare(a, [op], [b]), a, b)
        return node


def ptx(source: str) -> dict[str, str]:
    """PTX of every `@cuda.jit(signature)` function of a generated module (its launch lines dropped)."""
    from numba import cuda
    from numba.core import types

    sigs, keep, pending = {}, [], None
    for line in source.splitlines():
        if m := re.match(r"@cuda\.jit\((.*), cache=True\)", line):
            pending = m.group(1)
            continue
        if pending is not None and line.startswith("def "):
            sigs[line.split()[1].split("(")[0]], pending = pending, None
        if not re.match(r"^(launch|_gemm|_finish) = ", line):
            keep.append(line)
    namespace: dict = {}
    tree = ast.fix_missing_locations(_MinMax().visit(ast.parse("\n".join(keep))))
    exec(compile(tree, "<generated>", "exec"), namespace)
    out = {}
    for name, sig in sigs.items():
        signature = eval(sig, {**vars(types), "void": types.void})
        out[name], _ = cuda.compile_ptx(namespace[name], signature.args, cc=(9, 0))
    return out


LENET2 = ((64, 20, 12, 12), (50, 20, 5, 5), (64, 50, 8, 8))
SOURCES = {
    "matmul 4096 (128x128 tile, grouped order)": lambda: mm.matmul_source(4096, 4096, 4096, (), np.float32),
    "matmul ragged, transposed, broadcast batches, float64": lambda: mm.matmul_source(
        100,
        70,
        33,
        (3, 4),
        np.float64,
        True,
        True,
        a_batch=(3, 1),
        b_batch=(1, 4),
        epilogue=ScaleResidual((12, 100, 70), "f4"),
    ),
    "matmul int32 with epilogue": lambda: mm.matmul_source(10, 12, 7, 2, np.int32, epilogue=BiasRelu(2)),
    "conv2d with epilogue": lambda: conv.conv2d_source(*LENET2[:2], (1, 1), (0, 0), np.float32, epilogue=BiasRelu(1)),
    "conv2d_input_grad, stride and padding": lambda: conv.conv2d_input_grad_source(
        (8, 16, 17, 16), (16, 3, 3, 3), (2, 2), (1, 1), (8, 3, 33, 31), np.float32
    ),
    "conv2d_weight_grad, split K, epilogue": lambda: conv.conv2d_weight_grad_source(
        LENET2[0], LENET2[2], (1, 1), (0, 0), LENET2[1], np.float32, epilogue=BiasRelu(0)
    ),
    **{
        f"{op} padded": (lambda op=op: pooling.pool2d_source(op, (4, 3, 27, 26), (3, 3), (2, 2), (1, 1), np.float32))
        for op in pooling.POOL_OPS
    },
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_compiles_for_sm90(name):
    source = SOURCES[name]()
    kernels = ptx(source)
    assert kernels and all(".visible .entry" in p for p in kernels.values())
    assert ("K split" in source) == ("finish" in kernels)
    for p in kernels.values():
        assert ".local" not in p  # registers only: nothing spilled to local memory at the PTX level
