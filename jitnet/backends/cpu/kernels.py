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
from jitnet.backends.cpu.rules import RULES
from jitnet.codegen.expr import Emitter
from jitnet.codegen.index import Idx, flat_index, unflatten_index
from jitnet.codegen.reduction import Accumulator, combine_values
from jitnet.codegen.source import KernelSource, numba_type, prod, reduction_index, row_geometry
from jitnet.ir.fusion import Kernel
from jitnet.ir.node import Node
from jitnet.ir.opdefs import OPS, Kind

PARALLEL_MIN_WORK = 1 << 15  # elements of work below which a kernel runs serially
INNER_MIN = 512  # the innermost loop covers at least this many elements when the shape allows
INNER_RUN = 32  # ... or this many, where merging more dims into it would divide per element
INNER_RUN_MIN = 16  # a reduction's contiguous trailing run gets an inner loop from this many elements
CHUNKS_MIN = 8192  # elements per chunk when a whole reduction is split across threads
BLOCK_SUM = 4096  # float32 terms a float32 partial sum takes before it is added to the float64 total


def _loop_nest(shape: tuple, parallel: bool, emit, indent: int, run: int) -> tuple[int, list[Idx]]:
    """Open loops over `shape`: an outer (maybe parallel) loop over the leading dims and an inner
    loop over the smallest trailing block of at least `run` elements. Returns the body's indent
    and the multi-index."""
    split, inner = len(shape), 1
    while split > 0 and inner < run:
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
    emit = {"elementwise": _emit_elementwise_kernel, "reduce": _emit_reduce_kernel, "rowwise": _emit_rowwise_kernel}[
        kernel.kind
    ]
    scratch, after = emit(src, parallel) or ([], len(src.lines))
    args = list(src.outputs.values()) + list(src.params.values())
    types = [f"{numba_type(n.dtype)}[::1]" for n in kernel.outputs] + [
        f"readonly({numba_type(n.dtype)})" for n in kernel.inputs
    ]
    sig = f"void({', '.join(types)})"
    flags = jit_flags('fastmath={"reassoc"}' if kernel.kind != "elementwise" else "")
    header = [
        *src.header(
            f"jitnet cpu kernel: {kernel.kind}, {work} elements of work, {'parallel' if parallel else 'serial'}"
        ),
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


def _emit_elementwise_kernel(src: KernelSource, parallel: bool) -> None:
    """A loop nest per piece of the output (see `_pieces`). The inner loop merges trailing dims
    into a run of INNER_MIN elements, which amortises the loop's entry (LLVM's overlap checks)
    where every access stays contiguous over it; where an access would need a division per
    element (a transposed or head-split view), the run is the trailing dims up to INNER_RUN."""
    root = src.kernel.root
    for offset, shape in _pieces(root):
        for run in (INNER_MIN, INNER_RUN):
            start = len(src.lines)
            indent, idx = _loop_nest(shape, parallel, src.emit, 1, run)
            if offset:
                axis = root.attrs["axis"]
                idx[axis] = idx[axis] + offset
            body = src.scope(indent)
            value = body.value(root, idx)
            body.emit(f"{DIALECT.element('out', idx, root.shape)} = {value}")
            src.store_siblings(body, idx)
            stores = [flat_index(idx, root.shape)]
            if run == INNER_RUN or not any(i.divides("i") for i in body.loads + stores):
                src.close(body)
                break
            del src.lines[start:]  # an access divides per element: the short run instead


def _pieces(root: Node) -> list[tuple[int, tuple]]:
    """The loops over the output: one per input of a concat at the root, over that input's range
    of the axis (its loads then need no branch and index arithmetic only over its own shape), else
    one over the whole output. Each is (offset along the concat axis, the loop's shape)."""
    if root.op != "concat":
        return [(0, root.shape)]
    axis, offset, pieces = root.attrs["axis"], 0, []
    for x in root.inputs:
        pieces.append((offset, x.shape))
        offset += x.shape[axis]
    return pieces


# ---- reductions ----


class _Reducer:
    """One reduce node's accumulator (codegen/reduction.py) and its float32 block partial sum."""

    def __init__(self, src: KernelSource, node: Node):
        self.acc = Accumulator(node, DIALECT, src.names)
        self.part = src.names("p")  # a block's float32 partial sum
        # float32 terms summed into a float64 accumulator: in float32 blocks (see accumulate)
        self.narrow = self.acc.additive and self.acc.in_dtype == np.float32 and self.acc.acc_dtype == np.float64


def _emit_reduce_kernel(src: KernelSource, parallel: bool) -> tuple[list, int] | None:
    """The reduce nodes of the kernel (one shape of input, one set of axes) in one loop over the
    kept elements: serial or parallel over them, or, when few outputs remain, each thread taking
    chunks of the reduced elements and the entry combining the chunks' partial states. Returns the
    chunked kernel's scratch buffers and where its entry's lines start, else None."""
    kernel = src.kernel
    reducers = [n for n in kernel.nodes if OPS[n.op].kind == Kind.REDUCE]
    first = reducers[0]
    shape, axes = first.inputs[0].shape, first.attrs["axes"]
    kept = [d for d in range(len(shape)) if d not in axes]
    kept_size, red_size = prod([shape[d] for d in kept]), prod([shape[d] for d in axes])
    chunked = parallel and kept_size < RULES.few_outputs and all(r.op in RULES.split_reductions for r in reducers)

    emit = src.emit
    kept_idx = unflatten_index(Idx.var("o", kept_size), tuple(shape[d] for d in kept))
    reds = [_Reducer(src, r) for r in reducers]
    accs = [red.acc for red in reds]

    def emit_lines(indent: int, lines: list[str]) -> None:
        for line in lines:
            emit(indent, line)

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
        blocked = [] if first_pass else [red for red in reds if red.narrow]
        if nested and (lo, hi) == ("0", str(red_size)):  # r = ro * inner + ri, a block per ro
            outer_shape, inner_shape = red_shape[: len(axes) - n_inner], red_shape[len(axes) - n_inner :]
            emit(indent, f"for ro in range({red_size // inner}):")
            for red in blocked:
                emit(indent + 1, f"{red.part} = {DIALECT.literal(0, red.acc.in_dtype)}")
            emit(indent + 1, f"for ri in range({inner}):")
            red_idx = unflatten_index(Idx.var("ro", red_size // inner), outer_shape)
            red_idx += unflatten_index(Idx.var("ri", inner), inner_shape)
            emit_body(indent + 2, input_index(red_idx), f"ro * {inner} + ri", first_pass, blocked)
            for red in blocked:
                emit(indent + 1, f"{red.acc.acc} += {DIALECT.cast(red.part, red.acc.acc_dtype)}")
            return
        if blocked:
            emit(indent, f"for rb in range({lo}, {hi}, {BLOCK_SUM}):")
            for red in blocked:
                emit(indent + 1, f"{red.part} = {DIALECT.literal(0, red.acc.in_dtype)}")
            emit(indent + 1, f"for r in range(rb, min(rb + {BLOCK_SUM}, {hi})):")
            indent += 1
        else:
            emit(indent, f"for r in range({lo}, {hi}):")
        emit_body(indent + 1, input_index(unflatten_index(r_var, red_shape)), "r", first_pass, blocked)
        for red in blocked:
            emit(indent, f"{red.acc.acc} += {DIALECT.cast(red.part, red.acc.acc_dtype)}")

    def emit_body(indent: int, idx: list[Idx], position: str, first_pass: bool, blocked: list[_Reducer]) -> None:
        body = src.scope(indent)
        for red in reds:
            acc = red.acc
            v = body.value(acc.node.inputs[0], idx)
            if first_pass:
                lines = acc.update_max(v) if acc.shifted else []
            else:
                lines = acc.update(v, position, (red.part, acc.in_dtype) if blocked and red.narrow else None)
            for line in lines:
                body.emit(line)
        if not first_pass:
            src.store_siblings(body, idx)
        src.close(body)

    r_var = Idx.var("r", red_size)
    scratch, after = [], None

    def combine_chunks(n_chunks: int, part_index: str) -> None:
        """The entry, once every chunk is done: each kept element's state from its chunks' partial
        states, part_<slot>[part_index], in chunk order."""
        emit(1, f"for o in range({kept_size}):")
        for acc in accs:
            emit_lines(2, acc.init())
        emit(2, f"for c in range({n_chunks}):")
        for acc in accs:
            parts = [f"part_{slot.name}[{part_index}]" for slot in acc.state]
            emit_lines(3, acc.combine([slot.name for slot in acc.state], parts))

    columns = (
        parallel
        and tuple(sorted(axes)) == tuple(range(len(axes)))
        and kept_size >= INNER_RUN_MIN
        and all(r.op in ("sum", "max", "min") for r in reducers)
    )
    if columns:  # the kept dims end the input: accumulate whole rows of them, vectorised (see below)
        scratch, n_chunks = _emit_column_reduce(src, reds, red_shape, kept_size, input_index)
        after = len(src.lines)
        combine_chunks(n_chunks, f"c * {kept_size} + o")
    elif chunked:  # each thread reduces its chunks of every row into part_<slot>, the entry combines them
        n_chunks = max(1, min(256, red_size // CHUNKS_MIN))
        chunk = -(-red_size // n_chunks)
        emit(1, f"for c in {_outer_range(n_chunks, True)}:")
        emit(2, f"for o in range({kept_size}):")
        for acc in accs:
            emit_lines(3, acc.init())
        accumulate(3, f"c * {chunk}", f"min({red_size}, (c + 1) * {chunk})", r_var, False)
        for acc in accs:
            for slot in acc.state:
                emit(3, f"part_{slot.name}[o * {n_chunks} + c] = {slot.name}")
        scratch = [(f"part_{slot.name}", slot.dtype, kept_size * n_chunks) for acc in accs for slot in acc.state]
        after = len(src.lines)
        combine_chunks(n_chunks, f"o * {n_chunks} + c")
    else:
        emit(1, f"for o in {_outer_range(kept_size, parallel)}:")
        for acc in accs:
            emit_lines(2, acc.init())
        if any(acc.shifted for acc in accs):
            accumulate(2, "0", str(red_size), r_var, True)
            for acc in accs:
                if acc.shifted:
                    emit_lines(2, acc.shift())
        accumulate(2, "0", str(red_size), r_var, False)

    epilogue = src.scope(2)
    full = [
        Idx() if d in axes else i for d, i in zip(range(len(shape)), input_index(unflatten_index(Idx(), red_shape)))
    ]
    for acc in accs:
        lines, value = acc.finalize(acc.state[acc.result].name)
        for line in lines:
            epilogue.emit(line)
        epilogue.bind(acc.node, reduction_index(full, axes, acc.node), value)
    for root in [kernel.root, *kernel.roots]:
        out_idx = reduction_index(full, axes, root)
        epilogue.emit(f"{DIALECT.element(src.outputs[root], out_idx, root.shape)} = {epilogue.value(root, out_idx)}")
    src.close(epilogue)
    return (scratch, after) if chunked or columns else None


COLUMNS_BLOCK = 1024  # kept elements one work item accumulates (its partial states stay in L1)
ROWS_CHUNKS_MAX = 16  # chunks of the reduced rows (the entry combines kept x chunks partial states)


def _emit_column_reduce(src: KernelSource, reds: list[_Reducer], red_shape: tuple, kept_size: int, input_index):
    """A reduction over leading axes (a bias gradient: (rows, cols) -> (cols,)). Strided reads of one
    output at a time would touch a cache line per element and cannot vectorise; instead each work
    item takes a chunk of rows x a block of columns and accumulates row after row into partial
    states part_<acc>[chunk * kept + column], its inner loop contiguous over the columns. The entry
    combines the chunks. Sums accumulate in acc_dtype (float64 for float32) directly. Returns the
    scratch buffers (one per accumulator, kept x chunks) and the number of chunks."""
    emit, red_size = src.emit, prod(red_shape)
    n_chunks = max(1, min(ROWS_CHUNKS_MAX, red_size * kept_size // CHUNKS_MIN, red_size))
    chunk = -(-red_size // n_chunks)
    n_blocks = -(-kept_size // COLUMNS_BLOCK)
    block = -(-kept_size // n_blocks)
    emit(1, f"for w in {_outer_range(n_chunks * n_blocks, True)}:")
    emit(2, f"c, cb = w // {n_blocks}, w % {n_blocks}")
    emit(2, f"o_lo, o_hi = cb * {block}, min({kept_size}, (cb + 1) * {block})")
    emit(2, "for o in range(o_lo, o_hi):")
    for red in reds:
        emit(3, f"part_{red.acc.acc}[c * {kept_size} + o] = {red.acc.state[0].init}")
    for red in reds:  # a row's terms: computed by one loop, accumulated by another (both vectorise;
        # one loop doing both does not when the terms call vmath, 2 -> 13 ms for gelu's)
        emit(2, f"row_{red.acc.acc} = np.empty({block}, np.{red.acc.in_dtype.name})")
    emit(2, f"for r in range(c * {chunk}, min({red_size}, (c + 1) * {chunk})):")
    emit(3, "for o in range(o_lo, o_hi):")
    body = src.scope(4)
    full = input_index(unflatten_index(Idx.var("r", red_size), red_shape))
    for red in reds:
        body.emit(f"row_{red.acc.acc}[o - o_lo] = {body.value(red.acc.node.inputs[0], full)}")
    src.store_siblings(body, full)
    src.close(body)
    emit(3, "for o in range(o_lo, o_hi):")
    for red in reds:
        acc = red.acc
        at = f"part_{acc.acc}[c * {kept_size} + o]"
        emit(4, f"{acc.acc} = {at}")
        for line in acc.update(f"row_{acc.acc}[o - o_lo]", "r"):
            emit(4, line)
        emit(4, f"{at} = {acc.acc}")
    return [(f"part_{red.acc.acc}", red.acc.acc_dtype, kept_size * n_chunks) for red in reds], n_chunks


# ---- row-wise: softmax, log_softmax ----


def _emit_rowwise_kernel(src: KernelSource, parallel: bool) -> None:
    """Per row: the maximum, then the sum of exp(x - max), then the normalised values. Softmax
    keeps exp(x - max) in the output row between the last two passes, so exp runs once."""
    kernel = src.kernel
    (node,) = [n for n in kernel.nodes if OPS[n.op].kind == Kind.ROWWISE]
    x, dt, shape = node.inputs[0], node.dtype, node.shape
    kept_size, row, idx = row_geometry(node)
    reuse_out = node.op == "softmax" and kernel.root.dtype == dt
    emit = src.emit
    emit(1, f"for o in {_outer_range(kept_size, parallel)}:")
    at = DIALECT.element("out", idx, shape)

    def row_loop(statements) -> None:
        emit(2, f"for r in range({row}):")
        body = src.scope(3)
        statements(body, body.value(x, idx))
        src.close(body)

    emit(2, f"m = {DIALECT.extreme(dt, -1)}")
    row_loop(lambda body, v: body.emit(f"m = {combine_values('max', 'm', v, dt, DIALECT)}"))
    emit(2, f"s = {DIALECT.literal(0, dt)}")  # in the row's dtype: 16 float32 lanes, one row's worth of terms
    if reuse_out:
        row_loop(
            lambda body, v: (
                body.emit(f"e = {DIALECT.math('exp', f'{v} - m', dt)}"),
                body.emit(f"{at} = e"),
                body.emit("s += e"),
            )
        )
    else:
        row_loop(lambda body, v: body.emit(f"s += {DIALECT.math('exp', f'{v} - m', dt)}"))
    if node.op == "softmax":
        emit(2, f"inv = {DIALECT.cast('1.0 / s', dt)}")
    else:
        emit(2, f"log_s = {DIALECT.math('log', DIALECT.cast('s', dt), dt)}")

    def normalise(body: Emitter, v: str) -> None:
        y = src.names("y")
        if reuse_out:
            body.emit(f"{y} = {at} * inv")
        elif node.op == "softmax":
            body.emit(f"{y} = {DIALECT.math('exp', f'{v} - m', dt)} * inv")
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
