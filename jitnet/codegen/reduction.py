"""The semantics of the reductions (sum, max, min, argmax, logsumexp), written once for every backend.

An `Accumulator` is one reduce node's running state: its variables, their dtypes and initial values
(the reduction's identity), and the source lines that update it with an element, combine two partial
states, and finish it into the node's value. The backends own only the loops around those lines: the
CPU's serial or chunked loops (and its float32 block partial sums), CUDA's block-strided loops,
shared-memory trees and split into partial and finishing kernels. Every method returns lines spelled
through the backend's `Dialect`, a nested line indented by four spaces.

The rules, as the numpy references in ir/opdefs.py:
- sum: from 0, in `acc_dtype` (float64 for floats, so float32 terms round once; int64 for ints, bool).
- max, min: from the dtype's lowest or highest value; a NaN wins (Dialect.extremum).
- argmax: the first index of the largest value, the first NaN before any number. A partial state is
  (value, index): of two, the larger value wins, on a tie (or two NaN) the smaller index.
- logsumexp: two passes. The first finds the maximum m; m becomes the shift, or 0 where it is not
  finite (`m - m == 0` fails for +-inf and NaN: a row holding +inf, a row of only -inf). The second
  sums exp(x - m) in acc_dtype, and the result is m + log(sum) in the input's dtype. Partial sums
  are combined under one shift, which the first pass makes common to all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jitnet.codegen.expr import Dialect
from jitnet.ir import dtypes
from jitnet.ir.node import Node
from jitnet.ir.opdefs import OPS


def acc_dtype(node: Node) -> np.dtype:
    """Sums accumulate floats in float64 (and ints in int64); extrema in the input's dtype."""
    if OPS[node.op].reduce in ("sum", "logsumexp"):
        return dtypes.float64 if dtypes.is_float(node.dtype) else dtypes.int64
    return node.inputs[0].dtype


@dataclass(frozen=True)
class Slot:
    """One variable of an accumulator's state."""

    name: str
    dtype: np.dtype
    init: str  # its initial value: the reduction's identity
    tag: str = ""  # tells it from the other slots of its state (argmax: "v" the value, "i" the index)


def combine_values(op: str, a: str, b: str, dtype: np.dtype, dialect: Dialect) -> str:
    """Two partial results of a sum, max or min, merged into one."""
    if op == "sum":
        return f"{a} + {b}"
    return dialect.extremum("maximum" if op == "max" else "minimum", a, b, dtype)


Lines = list[str]


class Accumulator:
    """The accumulation of one reduce node: `state` and the lines that start, update, combine and
    finish it. Its names come from the kernel's counter in a fixed order (acc, arg, m), as they did
    before this module, since the generated source is the kernel cache's key."""

    def __init__(self, node: Node, dialect: Dialect, names: Callable[[str], str]):
        self.node = node
        self.op = OPS[node.op].reduce
        self.in_dtype = node.inputs[0].dtype
        self.acc_dtype = acc_dtype(node)
        self.dialect = dialect
        self.acc, self.arg, self.max = names("acc"), names("arg"), names("m")
        self.shifted = self.op == "logsumexp"  # a first pass finds the shift (`update_max`, `shift`)
        self.additive = self.op in ("sum", "logsumexp")  # its state is a sum of terms, in acc_dtype
        if self.additive:
            self.state = (Slot(self.acc, self.acc_dtype, dialect.literal(0, self.acc_dtype)),)
        elif self.op == "argmax":
            first = dialect.extreme(self.in_dtype, -1)
            self.state = (Slot(self.acc, self.in_dtype, first, "v"), Slot(self.arg, dtypes.int64, "0", "i"))
        else:
            self.state = (Slot(self.acc, self.in_dtype, dialect.extreme(self.in_dtype, 1 if self.op == "min" else -1)),)
        self.result = 1 if self.op == "argmax" else 0  # the slot `finalize` reads
        self.max_slot = Slot(self.max, self.in_dtype, dialect.extreme(self.in_dtype, -1))  # logsumexp's first pass

    def init(self) -> Lines:
        """Every variable at its initial value."""
        lines = [f"{self.max} = {self.max_slot.init}"] if self.shifted else []
        lines += [f"{slot.name} = {slot.init}" for slot in self.state]
        if self.op in ("max", "min"):  # unused; kept because the kernel cache is keyed by the source
            lines.append(f"{self.arg} = 0")
        return lines

    def update_max(self, v: str) -> Lines:
        """logsumexp's first pass: the maximum, NaN winning."""
        return self.combine_max(self.max, v)

    def combine_max(self, a: str, b: str) -> Lines:
        """Two partial maxima of the first pass, merged into a."""
        return [f"{a} = {combine_values('max', a, b, self.in_dtype, self.dialect)}"]

    def shift(self, maximum: str | None = None) -> Lines:
        """The maximum (this variable's, or `maximum`, a block's) becomes the shift of the second
        pass: 0 where it is infinite or NaN, so that exp(x - m) of a row holding +inf or of a row of
        only -inf is not NaN."""
        m = maximum or self.max
        return [f"{self.max} = {m} if {m} - {m} == 0 else {self.dialect.literal(0, self.in_dtype)}"]

    def update(self, v: str, position: str, into: tuple[str, np.dtype] | None = None) -> Lines:
        """Take element `v`, at `position` along the reduced elements. `into`: a partial sum (name,
        dtype) that an additive reduction adds its term to instead (the CPU's float32 blocks)."""
        d = self.dialect
        target, dt = into or (self.acc, self.acc_dtype)
        if self.op == "sum":
            return [f"{target} += {d.cast(v, dt)}"]
        if self.op == "logsumexp":
            return [f"{target} += {d.cast(d.math('exp', f'{v} - {self.max}', self.in_dtype), dt)}"]
        if self.op in ("max", "min"):
            return [f"{self.acc} = {combine_values(self.op, self.acc, v, self.in_dtype, d)}"]
        nan = f" or ({v} != {v} and {self.acc} == {self.acc})" if dtypes.is_float(self.in_dtype) else ""
        return [f"if {v} > {self.acc}{nan}:", f"    {self.acc} = {v}", f"    {self.arg} = {position}"]

    def combine(self, a: Sequence[str], b: Sequence[str]) -> Lines:
        """Partial state b merged into partial state a (each an expression per slot of `state`)."""
        if self.op == "argmax":
            (va, ia), (vb, ib) = a, b
            nan = f"({vb} != {vb} and ({va} == {va} or {ib} < {ia}))" if dtypes.is_float(self.in_dtype) else "False"
            return [
                f"if {vb} > {va} or ({vb} == {va} and {ib} < {ia}) or {nan}:",
                f"    {va} = {vb}",
                f"    {ia} = {ib}",
            ]
        (x,), (y,) = a, b
        op = "sum" if self.additive else self.op
        return [f"{x} = {combine_values(op, x, y, self.state[0].dtype, self.dialect)}"]

    def finalize(self, result: str) -> tuple[Lines, str]:
        """(lines, expression): the node's value from `result`, the value of slot `self.result`."""
        d = self.dialect
        if self.op == "argmax":
            return [], result
        lines = []
        if self.op == "logsumexp":
            total = f"{self.max} + {d.math('log', d.cast(result, self.in_dtype), self.in_dtype)}"
            lines.append(f"{result} = {d.cast(total, self.in_dtype)}")
        return lines, d.cast(result, self.node.dtype)
