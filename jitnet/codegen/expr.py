"""Scalar code for the nodes of one kernel, evaluated at a symbolic index.

`Emitter.value(node, idx)` appends the Python statements that compute `node` at multi-index `idx`
and returns the name that holds it. Views map the index (see `index`), elementwise ops call
their scalar emitter (`OpDef.scalar`) with the backend's `Dialect`, and buffers are loaded at a
flat offset.
A value is computed once per index and scope (the memo), so a node read twice costs once.
Both backends generate Python for numba, so only the dialect (function names, literals) differs.
"""

from __future__ import annotations

import math

import numpy as np

from jitnet.codegen.index import Idx, flat_index, unflatten_index
from jitnet.ir import dtypes
from jitnet.ir.node import Node
from jitnet.ir.opdefs import OPS, Kind


class Dialect:
    """How a backend spells scalar code. The op table's scalar emitters (`OpDef.scalar`) build an
    expression from rendered arguments by calling these methods, so a backend that spells something
    differently overrides one method. `funcs` maps the math functions' names to callables' names
    per dtype, e.g. {"exp": "vm.exp_{t}"} with {t} -> f32/f64."""

    funcs: dict[str, str] = {}

    def literal(self, value, dtype: np.dtype) -> str:
        dtype = np.dtype(dtype)
        if dtypes.is_bool(dtype):
            return "True" if value else "False"
        if dtypes.is_float(dtype):
            v = float(value)
            text = "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf") if math.isinf(v) else repr(v)
        else:
            text = str(int(value))
        return f"np.{dtype.name}({text})"

    def element(self, buffer: str, idx: list[Idx], shape: tuple) -> str:
        """The element of a flat buffer at a multi-index into `shape`."""
        return f"{buffer}[{flat_index(idx, shape).render()}]"

    def extreme(self, dtype: np.dtype, sign: int) -> str:
        """The largest (sign > 0) or smallest value of dtype: the identity of min or max."""
        dtype = np.dtype(dtype)
        if dtypes.is_bool(dtype):
            return self.literal(sign > 0, dtype)
        if dtypes.is_float(dtype):
            return self.literal(sign * math.inf, dtype)
        info = np.iinfo(dtype)
        return self.literal(info.max if sign > 0 else info.min, dtype)

    def cast(self, expr: str, dtype: np.dtype) -> str:
        dtype = np.dtype(dtype)
        return f"bool({expr})" if dtypes.is_bool(dtype) else f"np.{dtype.name}({expr})"

    def math(self, name: str, arg: str, dtype: np.dtype) -> str:
        """A math function (exp, log, sqrt, abs, ...) of arg, spelled for dtype as `funcs` says."""
        spelled = self.funcs.get(name)
        if spelled is None:
            raise NotImplementedError(f"{type(self).__name__} has no spelling of the math function {name!r}")
        return f"{spelled.format(t=dtypes.short_name(np.dtype(dtype)))}({arg})"

    def select(self, cond: str, a: str, b: str) -> str:
        """a where cond holds, else b; only the chosen side is evaluated."""
        return f"({a} if {cond} else {b})"

    def sign(self, a: str, dtype: np.dtype) -> str:
        """-1, 0 or 1 in dtype; for floats, NaN passes through as in numpy (and a zero as itself)."""
        one, zero = self.literal(1, dtype), self.literal(0, dtype)
        otherwise = a if dtypes.is_float(np.dtype(dtype)) else zero
        return f"({one} if {a} > {zero} else (-{one} if {a} < {zero} else {otherwise}))"

    def power(self, a: str, b: str, dtype: np.dtype) -> str:
        """a ** b; for integers exact and wrapped to the dtype, a negative exponent giving the
        truncated reciprocal (the reference's rule: numba and numpy differ there)."""
        if not dtypes.is_int(dtype):
            return f"({a} ** {b})"
        one, zero = self.literal(1, dtype), self.literal(0, dtype)
        reciprocal = f"({one} if {a} == {one} else ((-{one} if {b} & {one} else {one}) if {a} == -{one} else {zero}))"
        return f"({self.cast(f'{a} ** {b}', dtype)} if {b} >= {zero} else {reciprocal})"

    def extremum(self, name: str, a: str, b: str, dtype: np.dtype) -> str:
        """maximum or minimum of a and b, NaN winning as in numpy."""
        op = ">=" if name == "maximum" else "<="
        if dtypes.is_float(dtype):
            return f"({a} if ({a} {op} {b} or {a} != {a}) else {b})"
        return f"({a} if {a} {op} {b} else {b})"


class Emitter:
    """Builds the statements of one scope (a loop body) of a kernel."""

    def __init__(
        self,
        dialect: Dialect,
        params: dict[Node, str],
        names,
        indent: int,
        memo: dict | None = None,
        loads: list | None = None,
    ):
        self.dialect = dialect
        self.params = params  # buffer node -> parameter name
        self.names = names  # shared counter for fresh variable names
        self.loads: list[Idx] = [] if loads is None else loads  # the flat index of every load, child scopes' too
        self.indent = indent
        self.lines: list[str] = []
        self.memo: dict = dict(memo or {})

    def fresh(self, prefix: str = "v") -> str:
        return self.names(prefix)

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def bind(self, node: Node, idx: list[Idx], name: str) -> None:
        """Make `name` the value of node at idx (reduction results, row statistics)."""
        self.memo[_key(node, idx)] = name

    def child(self, indent_by: int = 1) -> "Emitter":
        return Emitter(self.dialect, self.params, self.names, self.indent + indent_by, self.memo, self.loads)

    def value(self, node: Node, idx: list[Idx]) -> str:
        key = _key(node, idx)
        name = self.memo.get(key)
        if name is None:
            name = self._compute(node, idx)
            self.memo[key] = name
        return name

    def _compute(self, node: Node, idx: list[Idx]) -> str:
        if node in self.params:
            self.loads.append(flat_index(idx, node.shape))
            return self._assign(node.dtype, self.dialect.element(self.params[node], idx, node.shape), cast=False)
        if node.op == "const":
            return self.dialect.literal(node.attrs["value"].value.reshape(()).item(), node.dtype)
        if node.op == "iota":
            a = node.attrs
            exact = dtypes.is_int(node.dtype) and float(a["start"]).is_integer() and float(a["step"]).is_integer()
            among = node.dtype if exact else np.float64  # integer positions stay integer arithmetic
            start, step = self.dialect.literal(a["start"], among), self.dialect.literal(a["step"], among)
            return self._assign(node.dtype, f"{start} + {step} * {idx[a['axis']].render()}")
        kind = OPS[node.op].kind
        if kind == Kind.ELEMENTWISE:
            args = [self.value(i, idx) for i in node.inputs]
            in_dtype = node.inputs[1].dtype if node.op == "where" else node.inputs[0].dtype
            expr = OPS[node.op].scalar(self.dialect, args, node.attrs, in_dtype, node.dtype)
            return self._assign(node.dtype, expr)
        if kind == Kind.MOVEMENT:
            return getattr(self, "_" + node.op)(node, idx)
        raise NotImplementedError(f"{node.op} cannot be computed inline; it needs its own kernel")

    def _assign(self, dtype: np.dtype, expr: str, cast: bool = True) -> str:
        name = self.fresh()
        self.emit(f"{name} = {self.dialect.cast(expr, dtype) if cast else expr}")
        return name

    # ---- views: map the output index to the input index ----

    def _reshape(self, node, idx):
        src = node.inputs[0]
        return self.value(src, unflatten_index(flat_index(idx, node.shape), src.shape))

    def _permute(self, node, idx):
        axes = node.attrs["axes"]
        src_idx = [None] * len(axes)
        for d, a in enumerate(axes):
            src_idx[a] = idx[d]
        return self.value(node.inputs[0], src_idx)

    def _expand(self, node, idx):
        src = node.inputs[0]
        return self.value(src, [Idx() if n == 1 else i for i, n in zip(idx, src.shape)])

    def _slice(self, node, idx):
        return self.value(node.inputs[0], [i * s + b for i, (b, _, s) in zip(idx, node.attrs["slices"])])

    def _take(self, node, idx):
        """x at the output index with the axis' index read from the indices buffer: negative
        counts from the end, and anything still outside the axis is clamped to it (opdefs)."""
        x, ind = node.inputs
        axis, k, n = node.attrs["axis"], len(ind.shape), x.shape[node.attrs["axis"]]
        i = self.value(ind, idx[axis : axis + k])
        at = self.fresh("at")
        self.emit(f"{at} = min(max({i} + {n} if {i} < 0 else {i}, 0), {max(n - 1, 0)})")
        return self.value(x, idx[:axis] + [Idx.var(at, n)] + idx[axis + k :])

    def _pad(self, node, idx):
        src = node.inputs[0]
        widths = node.attrs["widths"]
        src_idx = [i - lo for i, (lo, _) in zip(idx, widths)]
        conds = [
            f"0 <= {s.render()} < {n}"
            for s, n, (lo, hi) in zip(src_idx, src.shape, widths)
            if (lo or hi) and not (s.bounds()[0] >= 0 and s.bounds()[1] < n)
        ]
        fill = self.dialect.literal(node.attrs["value"], node.dtype)
        return self._branches(node.dtype, [(" and ".join(conds) or "True", src, src_idx)], fill)

    def _concat(self, node, idx):
        """The input whose range holds the index; pieces the index's bounds cannot reach get no
        branch, so a loop over one piece's range (the CPU's elementwise kernels) reads that piece
        directly. (An index in a loop that never runs may reach none: then all keep theirs.)"""
        axis, offset, cases = node.attrs["axis"], 0, []
        lo, hi = idx[axis].bounds()
        for src in node.inputs:
            n = src.shape[axis]
            src_idx = list(idx)
            src_idx[axis] = idx[axis] - offset
            cases.append((f"{idx[axis].render()} < {offset + n}", src, src_idx, lo < offset + n and hi >= offset))
            offset += n
        cases = [c[:3] for c in cases if c[3]] or [c[:3] for c in cases]
        last = cases.pop()
        if not cases:
            return self.value(last[1], last[2])
        return self._branches(node.dtype, cases, None, last)

    def _branches(self, dtype, cases, fill, last=None) -> str:
        """if/elif/else over cases, each computing its input in its own scope (so that nothing is
        loaded out of bounds), the result in one variable."""
        name = self.fresh()
        for n, (cond, src, src_idx) in enumerate(cases):
            self.emit(f"{'if' if n == 0 else 'elif'} {cond}:")
            body = self.child()
            body.emit(f"{name} = {body.value(src, src_idx)}")
            self.lines.extend(body.lines)
        self.emit("else:")
        body = self.child()
        if last is not None:
            _, src, src_idx = last
            body.emit(f"{name} = {body.value(src, src_idx)}")
        else:
            body.emit(f"{name} = {fill}")
        self.lines.extend(body.lines)
        return name


def _key(node: Node, idx: list[Idx]):
    return (node, tuple(i.key() for i in idx))


class NameCounter:
    def __init__(self):
        self.n = 0

    def __call__(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"
