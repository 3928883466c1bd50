"""How the CPU kernels spell scalar code: numba on the host, with vmath's vectorisable math."""

from __future__ import annotations

import numpy as np

from jitnet.codegen.expr import Dialect
from jitnet.codegen.index import Idx, flat_index
from jitnet.ir import dtypes


class CpuDialect(Dialect):
    """vmath's vectorisable functions per dtype (vm.exp_f32, ...), unsigned loads, and LLVM's
    fmaximum/fminimum for float maximum/minimum; everything else as the base Dialect spells it."""

    funcs = {
        name: f"vm.{name}_{{t}}"
        for name in ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos", "acos", "erf")
    } | {"sqrt": "np.sqrt", "abs": "abs"}

    def element(self, buffer: str, idx: list[Idx], shape: tuple) -> str:
        # Unsigned: numba wraps negative signed indices around with a select that LLVM can only
        # remove when it proves the index non-negative; where it cannot, the loop stays scalar.
        return f"{buffer}[np.uint64({flat_index(idx, shape).render()})]"

    def extremum(self, name: str, a: str, b: str, dtype: np.dtype) -> str:
        if dtypes.is_float(dtype):  # one vectorisable LLVM intrinsic with numpy's NaN semantics
            return f"f{name}({a}, {b})"
        return f"{'max' if name == 'maximum' else 'min'}({a}, {b})"


DIALECT = CpuDialect()
