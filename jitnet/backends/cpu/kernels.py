"""CPU kernel source for one fused group: numba `njit` loops over flat, contiguous buffers.

Shapes are baked into the source (a kernel is specialised per shape), so index arithmetic is
constant-folded by LLVM and the innermost loop walks memory contiguously where the views allow.
Kernels with enough work are chunked parallel kernels (cpu/parallel.py): each thread runs a
contiguous run of the outer loop; small ones run serially, since a parallel launch has a fixed cost. Reductions and row-wise kernels compile with `reassoc` only, so
LLVM may vectorise their accumulations; the math helpers (vmath) keep their own strict flags, and
NaN and inf propagate as in numpy.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cpu.dialect import DIALECT
from jitnet.backends.cpu.parallel import chunked_kernel, jit_flags
from jitnet.codegen.expr import Emitter
from jitnet.codegen.index import Idx, unflatten_index
from jitnet.codegen.source import KernelSource, acc_dtype, numba_type, prod, reduction_index
from jitnet.ir import dtypes
from jitnet.ir.fusion import Kernel
from jitnet.ir.node import Node, type_str
from jitnet.ir.opdefs import OPS, Kind

PARALLEL_MIN_WORK = 1 << 15  # elements of work below which a kernel runs serially
INNER_MIN = 512  # the innermost loop covers at least this many elements when the shape allows
INNER_RUN_MIN = 16  # a reduction's contiguous trailing run gets an inner loop from this many elements
CHUNKS_MIN = 8192  # elements per chunk when a whole reduction is split across threads
BLOCK_SUM = 4096  # float32 terms a float32 partial sum takes before it is added to the float64 total


def _loop_nest(shape: tuple, parallel: bool, emit, indent: int) -> tuple[int, list[Idx]]:
    """Open loops over `shape`: an outer (maybe parallel) loop over the leading dims and an inner
    loop over the smallest trailing block of at least INNER_MIN elements. Returns the body's
    indent and the multi-index."""
    split, inner = len(shape), 1
    while split > 0 and inner < INNER_MIN:
        split -= 1
        inner *= shape[split]
    if split == 0:
        emit(indent, f"for i in {_outer_range(inner, parallel)}:")
        return indent + 1, unflatten_index(Idx.var("i", inner), shape)
    outer = prod(shape[:split])
    emit(indent, f"for o in {_outer_range(outer, parallel)}:")
    emit(indent + 1, f"for i in range({inner}):")
    idx = unflatten_index(Idx.var("o", outer), shape[:split]) + unflatten_index(Idx.var("i", inner), shape[split:])
    return indent + 2, idx


def _outer_range(count: int, parallel: bool) -> str:
    """The outer loop's range: this chunk's run of it in a parallel kernel."""
    return f"range(t * {count} // nt, (t + 1) * {count} // nt)" if parallel else f"range({count})"


def generate(kernel: Kernel) -> str:
    """The module source of the kernel `kernel(out, in0, in1, ...)`."""
    src = KernelSource(kernel, DIALECT)
    work = _work(kernel)
    parallel = work >= PARALLEL_MIN_WORK
    emit = {"elementwise": _elementwise, "reduce": _reduce, "rowwise": _rowwise}[kernel.kind]
    scratch, after = emit(src, parallel) or ([], len(src.lines))
    args = list(src.outputs.values()) + list(src.params.values())
    types = [f"{numba_type(n.dtype)}[::1]" for n in kernel.outputs] + [
        f"readonly({numba_type(n.dtype)})" for n in kernel.inputs
    ]
    sig = f"void({', '.join(types)})"
    flags = jit_flags('fastmath={"reassoc"}' if kernel.kind != "elementwise" else "")
    header = [
        f"# jitnet cpu kernel: {kernel.kind}, {work} elements of work, {'parallel' if parallel else 'serial'}",
        *(f"# {name}: {type_str(n)}" for n, name in src.outputs.items()),
        *(f"# {name}: {type_str(n)}" for n, name in src.params.items()),
        "# " + " ".join(n.op for n in kernel.nodes if n.op != "const"),
        "import numpy as np",
        "from numba import njit",
        "from numba.types import void, boolean, int32, int64, float32, float64",
        "",
        "from jitnet.backends.cpu import vmath as vm",
        "from jitnet.backends.cpu.intrinsics import fmaximum, fminimum",
        "from jitnet.backends.cpu.signature import readonly",
    ]
    if not parallel:
        body = [f"@njit({sig}, cache=True, {flags})", f"def kernel({', '.join(args)}):", *(src.lines or ["    pass"])]
        return "\n".join(header + ["", ""] + body) + "\n"
    buffers = [(src.outputs[n], n.dtype) for n in kernel.outputs]
    buffers += [(name, n.dtype) for n, name in src.params.items()]
    body = chunked_kernel(buffers, sig, src.lines[:after], flags, work=scratch, after=src.lines[after:])
    return "\n".join(header + [""] + body) + "\n"


def _work(kernel: Kernel) -> int:
    reducers = [n for n in kernel.nodes if OPS[n.op].kind in (Kind.REDUCE, Kind.ROWWISE)]
    return max([kernel.root.size] + [r.inputs[0].size for r in reducers])


def _elementwise(src: KernelSource, parallel: bool) -> None:
    root = src.kernel.root
    indent, idx = _loop_nest(root.shape, parallel, src.emit, 1)
    body = src.scope(indent)
    value = body.value(root, idx)
    body.emit(f"{DIALECT.element('out', idx, root.shape)} = {value}")
    src.store_siblings(body, idx)
    src.close(body)


# ---- reductions ----


def _first_greater(v: str, best: str, dtype: np.dtype) -> str:
    """argmax's condition for v to replace best: strictly greater, or the first NaN (as numpy)."""
    if dtypes.is_float(dtype):
        return f"{v} > {best} or ({v} != {v} and {best} == {best})"
    return f"{v} > {best}"


class _Reduction:
    """Accumulator variables and update statements for one reduce node."""

    def __init__(self, src: KernelSource, node: Node):
        self.node, self.op = node, node.op
        self.in_dtype = node.inputs[0].dtype
        self.acc_dtype = acc_dtype(node)
        self.acc = src.names("acc")
        self.arg = src.names("arg")  # argmax's index
        self.max = src.names("m")  # logsumexp's running maximum
        self.part = src.names("p")  # a block's float32 partial sum
        # float32 terms summed into a float64 accumulator: in float32 blocks (see accumulate)
        self.narrow = self.op in ("sum", "logsumexp") and self.in_dtype == np.float32 and self.acc_dtype == np.float64

    def init(self, emit) -> None:
        if self.op == "sum":
            emit(f"{self.acc} = {DIALECT.literal(0, self.acc_dtype)}")
        elif self.op in ("max", "min", "argmax"):
            emit(f"{self.acc} = {DIALECT.extreme(self.in_dtype, 1 if self.op == 'min' else -1)}")
            emit(f"{self.arg} = 0")
        else:  # logsumexp
            emit(f"{self.max} = {DIALECT.extreme(self.in_dtype, -1)}")
            emit(f"{self.acc} = {DIALECT.literal(0, self.acc_dtype)}")

    def first_pass(self, emit, v: str) -> None:
        """logsumexp needs the maximum before it can sum."""
        if self.op == "logsumexp":
            emit(f"{self.max} = {DIALECT.extremum('maximum', self.max, v, self.in_dtype)}")

    def shift(self, emit) -> None:
        """logsumexp sums exp(x - max); an infinite max (a row with +inf, or only -inf) shifts by 0."""
        if self.op == "logsumexp":
            emit(f"{self.max} = {self.max} if {self.max} - {self.max} == 0 else {DIALECT.literal(0, self.in_dtype)}")

    def update(self, emit, v: str, position: str, partial: bool = False) -> None:
        target, dt = (self.part, self.in_dtype) if partial and self.narrow else (self.acc, self.acc_dtype)
        if self.op == "sum":
            emit(f"{target} += {DIALECT.cast(v, dt)}")
        elif self.op == "logsumexp":
            t = dtypes.short_name(self.in_dtype)
            emit(f"{target} += {DIALECT.cast(f'vm.exp_{t}({v} - {self.max})', dt)}")
        elif self.op in ("max", "min"):
            emit(f"{self.acc} = {DIALECT.extremum(self.op + 'imum', self.acc, v, self.in_dtype)}")
        else:
            emit(f"if {_first_greater(v, self.acc, self.in_dtype)}:")
            emit(f"    {self.acc} = {v}")
            emit(f"    {self.arg} = {position}")

    def result(self, emit) -> str:
        if self.op == "argmax":
            return self.arg
        if self.op == "logsumexp":
            t, dt = dtypes.short_name(self.in_dtype), self.in_dtype
            emit(f"{self.acc} = {DIALECT.cast(f'{self.max} + vm.log_{t}({DIALECT.cast(self.acc, dt)})', dt)}")
        return DIALECT.cast(self.acc, self.node.dtype)


def _reduce(src: KernelSource, parallel: bool) -> None:
    kernel = src.kernel
    reducers = [n for n in kernel.nodes if OPS[n.op].kind == Kind.REDUCE]
    first = reducers[0]
    shape, axes = first.inputs[0].shape, first.attrs["axes"]
    kept = [d for d in range(len(shape)) if d not in axes]
    kept_size, red_size = prod([shape[d] for d in kept]), prod([shape[d] for d in axes])
    chunked = parallel and kept_size < 16 and all(r.op in ("sum", "max", "min") for r in reducers)

    emit = src.emit
    kept_idx = unflatten_index(Idx.var("o", kept_size), tuple(shape[d] for d in kept))
    accs = [_Reduction(src, r) for r in reducers]

    red_shape = tuple(shape[d] for d in axes)
    # the reduced dims that end the input are contiguous in memory: an inner loop of their own
    # (no division per element, so it vectorises), when that run is long enough and fits a block
    n_inner = 0
    while n_inner < len(axes) and sorted(axes)[len(axes) - 1 - n_inner] == len(shape) - 1 - n_inner:
        n_inner += 1
    inner = prod(red_shape[len(axes) - n_inner :])
    nested = n_inner > 0 and INNER_RUN_MIN <= inner <= BLOCK_SUM and red_size > inner

    def input_index(red_idx: list[Idx]) -> list[Idx]:
        it_kept, it_red = iter(kept_idx), iter(red_idx)
        return [next(it_red) if d in axes else next(it_kept) for d in range(len(shape))]

    def accumulate(indent: int, lo: str, hi: str, r_var: Idx, first_pass: bool) -> None:
        """The loop over r in [lo, hi). float32 sums add up blocks of BLOCK_SUM terms in float32
        (vectorised 16 lanes wide, ~BLOCK_SUM/16 terms per lane) and the blocks in float64."""
        blocked = [] if first_pass else [acc for acc in accs if acc.narrow]
        if nested and (lo, hi) == ("0", str(red_size)):  # r = ro * inner + ri, a block per ro
            outer_shape, inner_shape = red_shape[: len(axes) - n_inner], red_shape[len(axes) - n_inner :]
            emit(indent, f"for ro in range({red_size // inner}):")
            for acc in blocked:
                emit(indent + 1, f"{acc.part} = {DIALECT.literal(0, acc.in_dtype)}")
            emit(indent + 1, f"for ri in range({inner}):")
            red_idx = unflatten_index(Idx.var("ro", red_size // inner), outer_shape)
            red_idx += unflatten_index(Idx.var("ri", inner), inner_shape)
            emit_body(indent + 2, input_index(red_idx), f"ro * {inner} + ri", first_pass, blocked)
            for acc in blocked:
                emit(indent + 1, f"{acc.acc} += {DIALECT.cast(acc.part, acc.acc_dtype)}")
            return
        if blocked:
            emit(indent, f"for rb in range({lo}, {hi}, {BLOCK_SUM}):")
            for acc in blocked:
                emit(indent + 1, f"{acc.part} = {DIALECT.literal(0, acc.in_dtype)}")
            emit(indent + 1, f"for r in range(rb, min(rb + {BLOCK_SUM}, {hi})):")
            indent += 1
        else:
            emit(indent, f"for r in range({lo}, {hi}):")
        emit_body(indent + 1, input_index(unflatten_index(r_var, red_shape)), "r", first_pass, blocked)
        for acc in blocked:
            emit(indent, f"{acc.acc} += {DIALECT.cast(acc.part, acc.acc_dtype)}")

    def emit_body(indent: int, idx: list[Idx], position: str, first_pass: bool, blocked) -> None:
        body = src.scope(indent)
        for acc in accs:
            v = body.value(acc.node.inputs[0], idx)
            if first_pass:
                acc.first_pass(body.emit, v)
            else:
                acc.update(body.emit, v, position, partial=bool(blocked))
        if not first_pass:
            src.store_siblings(body, idx)
        src.close(body)

    r_var = Idx.var("r", red_size)
    scratch, after = [], None
    if chunked:  # each thread sums its chunks of every row into part_<acc>, the entry adds them up
        n_chunks = max(1, min(256, red_size // CHUNKS_MIN))
        chunk = -(-red_size // n_chunks)
        emit(1, f"for c in {_outer_range(n_chunks, True)}:")
        emit(2, f"for o in range({kept_size}):")
        for acc in accs:
            acc.init(lambda line: emit(3, line))
        accumulate(3, f"c * {chunk}", f"min({red_size}, (c + 1) * {chunk})", r_var, False)
        for acc in accs:
            emit(3, f"part_{acc.acc}[o * {n_chunks} + c] = {acc.acc}")
        scratch = [(f"part_{acc.acc}", acc.acc_dtype, kept_size * n_chunks) for acc in accs]
        after = len(src.lines)
        emit(1, f"for o in range({kept_size}):")
        for acc in accs:
            acc.init(lambda line: emit(2, line))
        emit(2, f"for c in range({n_chunks}):")
        for acc in accs:
            acc.update(lambda line: emit(3, line), f"part_{acc.acc}[o * {n_chunks} + c]", "c")
    else:
        emit(1, f"for o in {_outer_range(kept_size, parallel)}:")
        for acc in accs:
            acc.init(lambda line: emit(2, line))
        if any(acc.op == "logsumexp" for acc in accs):
            accumulate(2, "0", str(red_size), r_var, True)
            for acc in accs:
                acc.shift(lambda line: emit(2, line))
        accumulate(2, "0", str(red_size), r_var, False)

    epilogue = src.scope(2)
    full = [
        Idx() if d in axes else i for d, i in zip(range(len(shape)), input_index(unflatten_index(Idx(), red_shape)))
    ]
    for acc in accs:
        epilogue.bind(acc.node, reduction_index(full, axes, acc.node), acc.result(epilogue.emit))
    for root in [kernel.root, *kernel.roots]:
        out_idx = reduction_index(full, axes, root)
        epilogue.emit(f"{DIALECT.element(src.outputs[root], out_idx, root.shape)} = {epilogue.value(root, out_idx)}")
    src.close(epilogue)
    return (scratch, after) if chunked else None


# ---- row-wise: softmax, log_softmax ----


def _rowwise(src: KernelSource, parallel: bool) -> None:
    """Per row: the maximum, then the sum of exp(x - max), then the normalised values. Softmax
    keeps exp(x - max) in the output row between the last two passes, so exp runs once."""
    kernel = src.kernel
    (node,) = [n for n in kernel.nodes if OPS[n.op].kind == Kind.ROWWISE]
    x, axis, dt, shape = node.inputs[0], node.attrs["axis"], node.dtype, node.shape
    kept = tuple(n for d, n in enumerate(shape) if d != axis)
    kept_size, row = prod(kept), shape[axis]
    t = dtypes.short_name(dt)
    reuse_out = node.op == "softmax" and kernel.root.dtype == dt
    emit = src.emit
    emit(1, f"for o in {_outer_range(kept_size, parallel)}:")
    kept_idx = unflatten_index(Idx.var("o", kept_size), kept)
    idx = kept_idx[:axis] + [Idx.var("r", row)] + kept_idx[axis:]
    at = DIALECT.element("out", idx, shape)

    def row_loop(statements) -> None:
        emit(2, f"for r in range({row}):")
        body = src.scope(3)
        statements(body, body.value(x, idx))
        src.close(body)

    emit(2, f"m = {DIALECT.extreme(dt, -1)}")
    row_loop(lambda body, v: body.emit(f"m = {DIALECT.extremum('maximum', 'm', v, dt)}"))
    emit(2, f"s = {DIALECT.literal(0, dt)}")  # in the row's dtype: 16 float32 lanes, one row's worth of terms
    if reuse_out:
        row_loop(lambda body, v: (body.emit(f"e = vm.exp_{t}({v} - m)"), body.emit(f"{at} = e"), body.emit("s += e")))
    else:
        row_loop(lambda body, v: body.emit(f"s += vm.exp_{t}({v} - m)"))
    if node.op == "softmax":
        emit(2, f"inv = {DIALECT.cast('1.0 / s', dt)}")
    else:
        emit(2, f"log_s = vm.log_{t}({DIALECT.cast('s', dt)})")

    def normalise(body: Emitter, v: str) -> None:
        y = src.names("y")
        if reuse_out:
            body.emit(f"{y} = {at} * inv")
        elif node.op == "softmax":
            body.emit(f"{y} = vm.exp_{t}({v} - m) * inv")
        else:
            body.emit(f"{y} = ({v} - m) - log_s")
        body.bind(node, idx, y)
        body.emit(f"{at} = {body.value(kernel.root, idx)}")

    if reuse_out:  # the last pass reads the stored exponentials, not x
        emit(2, f"for r in range({row}):")
        body = src.scope(3)
        normalise(body, "")
        src.close(body)
    else:
        row_loop(normalise)
