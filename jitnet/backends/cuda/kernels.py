"""CUDA kernel source for one fused group: `numba.cuda.jit` kernels over flat device buffers.

The same fusion groups as the CPU backend, lowered to GPU loops:
- elementwise: a grid-stride loop over the output, UNROLL elements per thread per step (consecutive
  threads touch consecutive elements, so contiguous loads coalesce);
- reduce: one block per output element, each thread accumulating a strided slice of the reduced
  elements, then a shared-memory tree; when few outputs remain, a first kernel splits every
  reduction over many blocks into partial results and a second combines them;
- row-wise softmax: one block per row, three passes, block reductions in shared memory; rows of up
  to ROW_CACHE * BLOCK elements read once, kept in each thread's registers between passes.
Each generated module defines `launch(out, *inputs)`, with its launch configuration computed once
here (shapes are static). Shared-memory trees rather than warp shuffles keep every kernel runnable
in numba's CUDA simulator, which has no warp-level operations.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.dialect import DIALECT
from jitnet.backends.cuda.launch import IMPORT, plan_source, single_source
from jitnet.backends.cuda.rules import RULES
from jitnet.codegen.expr import Emitter
from jitnet.codegen.index import Idx, unflatten_index
from jitnet.codegen.reduction import Accumulator, Slot, combine_values
from jitnet.codegen.source import KernelSource, numba_type, prod, reduction_index, row_geometry
from jitnet.ir import dtypes
from jitnet.ir.fusion import Kernel
from jitnet.ir.opdefs import OPS, Kind

BLOCK = 32 if simulator() else 256  # the simulator runs a Python thread per CUDA thread
MAX_BLOCKS = 4 if simulator() else 132 * 16  # enough resident blocks to fill an H100's 132 SMs
SPLIT_MIN = 256 if simulator() else 1 << 16  # reductions this long (per output) are split across blocks
UNROLL = 4  # elements per thread per step of an elementwise kernel
ROW_CACHE = 16  # row-wise kernels keep up to this many elements per thread in registers (rows of 4096 on a GPU)


def _blocks(work: int) -> int:
    return max(1, min(MAX_BLOCKS, -(-work // BLOCK)))


class _Source(KernelSource):
    def __init__(self, kernel: Kernel):
        super().__init__(kernel, DIALECT)

    def args(self) -> str:
        return ", ".join([*self.outputs.values(), *self.params.values()])

    @property
    def n_params(self) -> int:
        return len(self.outputs) + len(self.params)

    def signature(self) -> str:
        types = [n.dtype for n in self.kernel.outputs] + [n.dtype for n in self.kernel.inputs]
        return f"void({', '.join(numba_type(t) + '[::1]' for t in types)})"


def generate(kernel: Kernel) -> str:
    """Module source defining `launch(out, out1, ..., in0, ...)`."""
    src = _Source(kernel)
    template = {
        "elementwise": _emit_elementwise_kernel,
        "reduce": _emit_reduce_kernels,
        "rowwise": _emit_rowwise_kernel,
    }[kernel.kind]
    body = template(src)
    header = [
        *src.header(f"jitnet cuda kernel: {kernel.kind}"),
        "import math",
        "",
        "import numpy as np",
        "from numba import cuda",
        "from numba.types import void, boolean, int32, int64, float32, float64",
        "",
        "from jitnet.backends.cuda import devmath as dm",
        IMPORT,
        "",
    ]
    return "\n".join(header + body) + "\n"


def _kernel_def(src: _Source, name: str, params: str | None = None, sig: str | None = None) -> list[str]:
    return ["", "", f"@cuda.jit({sig or src.signature()}, cache=True)", f"def {name}({params or src.args()}):"]


# ---- elementwise ----


def _emit_elementwise_kernel(src: _Source) -> list[str]:
    """A grid-stride loop taking UNROLL elements per thread per step (i, i + stride, ...: each load
    still coalesced), all loaded and computed before any is stored, so that a thread has UNROLL
    loads in flight (one in flight per thread cannot cover the memory latency at full bandwidth);
    the last partial step goes one element at a time."""
    root = src.kernel.root
    n = root.size
    src.emit(1, "start = cuda.grid(1)")
    src.emit(1, "stride = cuda.gridsize(1)")
    if n >= UNROLL * BLOCK:
        src.emit(1, f"for i in range(start, {n}, {UNROLL} * stride):")
        src.emit(2, f"if i + {UNROLL - 1} * stride < {n}:")
        body = src.scope(3)
        idxs = []
        for k in range(UNROLL):
            body.emit(f"i{k} = i + {k} * stride" if k else "i0 = i")
            idxs.append(unflatten_index(Idx.var(f"i{k}", n), root.shape))
        outputs = [(src.outputs[node], node) for node in [root, *src.kernel.siblings]]
        values = [[body.value(node, idx) for _, node in outputs] for idx in idxs]
        for idx, row in zip(idxs, values):
            for (name, node), value in zip(outputs, row):
                body.emit(f"{DIALECT.element(name, idx, node.shape)} = {value}")
        src.close(body)
        src.emit(2, "else:")
        src.emit(3, f"for j in range(i, {n}, stride):")
        _emit_element(src, 4, "j", n)
        blocks = _blocks(-(-n // UNROLL))
    else:
        src.emit(1, f"for i in range(start, {n}, stride):")
        _emit_element(src, 2, "i", n)
        blocks = _blocks(n)
    return _kernel_def(src, "kernel") + src.lines + ["", "", single_source("kernel", blocks, BLOCK, src.n_params)]


def _emit_element(src: _Source, indent: int, var: str, n: int) -> None:
    """Compute and store the output element(s) at flat index `var`."""
    root = src.kernel.root
    idx = unflatten_index(Idx.var(var, n), root.shape)
    body = src.scope(indent)
    body.emit(f"{DIALECT.element('out', idx, root.shape)} = {body.value(root, idx)}")
    src.store_siblings(body, idx)
    src.close(body)


# ---- block reductions ----


def _tree(emit, indent: int, step) -> None:
    """Halve the block's shared arrays until slot 0 holds the block's result; `step(emit, lo, hi)`
    merges slot hi into slot lo."""
    emit(indent, "cuda.syncthreads()")
    emit(indent, f"s = {BLOCK // 2}")
    emit(indent, "while s > 0:")
    emit(indent + 1, "if tid < s:")
    step(lambda line: emit(indent + 2, line), "tid", "tid + s")
    emit(indent + 1, "cuda.syncthreads()")
    emit(indent + 1, "s //= 2")


def _block_reduce(src: _Source, indent: int, slots: list[Slot], combine, result: int = 0) -> str:
    """Combine every thread's partial state (`slots`, its variables) across the block with
    `combine(a, b)` (the lines merging state b into state a); returns the name holding the block's
    value of slot `result`."""
    shared = [src.names(f"sm{slot.tag}") for slot in slots]
    for sm, slot in zip(shared, slots):
        src.emit(indent, f"{sm} = cuda.shared.array({BLOCK}, {numba_type(slot.dtype)})")
    for sm, slot in zip(shared, slots):
        src.emit(indent, f"{sm}[tid] = {slot.name}")

    def step(emit, lo, hi):
        for line in combine([f"{sm}[{lo}]" for sm in shared], [f"{sm}[{hi}]" for sm in shared]):
            emit(line)

    _tree(src.emit, indent, step)
    total = src.names("total")
    src.emit(indent, f"{total} = {shared[result]}[0]")
    src.emit(indent, "cuda.syncthreads()")
    return total


def _merging(op: str, dtype: np.dtype):
    """The combine of a one-variable state: a sum, max or min of partial values."""
    return lambda a, b: [f"{a[0]} = {combine_values(op, a[0], b[0], dtype, DIALECT)}"]


def _emit_reduce_kernels(src: _Source) -> list[str]:
    """One block per output element (block-strided loops, then shared-memory trees); when few
    outputs remain and the reductions are long, a partial kernel over (output, part) blocks and a
    finishing kernel combining the parts."""
    kernel = src.kernel
    reducers = [n for n in kernel.nodes if OPS[n.op].kind == Kind.REDUCE]
    first = reducers[0]
    shape, axes = first.inputs[0].shape, first.attrs["axes"]
    kept = [d for d in range(len(shape)) if d not in axes]
    kept_size, red_size = prod([shape[d] for d in kept]), prod([shape[d] for d in axes])
    kept_idx = unflatten_index(Idx.var("o", kept_size), tuple(shape[d] for d in kept))

    def input_index(r: Idx) -> list[Idx]:
        red_idx, it_kept = iter(unflatten_index(r, tuple(shape[d] for d in axes))), iter(kept_idx)
        return [next(red_idx) if d in axes else next(it_kept) for d in range(len(shape))]

    full = [Idx() if d in axes else i for d, i in zip(range(len(shape)), input_index(Idx()))]

    split = (
        kept_size * 4 <= MAX_BLOCKS and red_size >= SPLIT_MIN and all(r.op in RULES.split_reductions for r in reducers)
    )
    n_parts = max(1, min(MAX_BLOCKS // max(kept_size, 1), -(-red_size // (BLOCK * 8)))) if split else 1
    chunk = -(-red_size // n_parts)
    r_var = Idx.var("r", red_size)

    def emit_lines(indent: int, lines: list[str]) -> None:
        for line in lines:
            src.emit(indent, line)

    def accumulate(indent: int, r_lo: str, r_hi: str, finish: bool) -> list[tuple[Accumulator, str]]:
        """Per-thread accumulators over r in [r_lo, r_hi) and their block totals: each node's value
        (finish), else its partial result."""
        accs = [Accumulator(node, DIALECT, src.names) for node in reducers]
        for acc in accs:
            emit_lines(indent, acc.init())
        if any(acc.shifted for acc in accs):  # logsumexp's maximum first, across the block
            src.emit(indent, f"for r in range({r_lo} + tid, {r_hi}, {BLOCK}):")
            body = src.scope(indent + 1)
            for acc in accs:
                if acc.shifted:
                    for line in acc.update_max(body.value(acc.node.inputs[0], input_index(r_var))):
                        body.emit(line)
            src.close(body)
            for acc in accs:
                if acc.shifted:
                    total = _block_reduce(
                        src, indent, [acc.max_slot], lambda a, b, acc=acc: acc.combine_max(a[0], b[0])
                    )
                    emit_lines(indent, acc.shift(total))
        src.emit(indent, f"for r in range({r_lo} + tid, {r_hi}, {BLOCK}):")
        body = src.scope(indent + 1)
        for acc in accs:
            for line in acc.update(body.value(acc.node.inputs[0], input_index(r_var)), "r"):
                body.emit(line)
        src.store_siblings(body, input_index(r_var))
        src.close(body)
        totals = []
        for acc in accs:
            total = _block_reduce(src, indent, list(acc.state), acc.combine, acc.result)
            if finish:
                lines, total = acc.finalize(total)
                emit_lines(indent, lines)
            totals.append((acc, total))
        return totals

    def epilogue(indent: int, values: list[tuple[Accumulator, str]]) -> None:
        src.emit(indent, "if tid == 0:")
        scope = src.scope(indent + 1)
        for acc, value in values:
            scope.bind(acc.node, reduction_index(full, axes, acc.node), value)
        for root in [kernel.root, *kernel.roots]:
            out_idx = reduction_index(full, axes, root)
            scope.emit(f"{DIALECT.element(src.outputs[root], out_idx, root.shape)} = {scope.value(root, out_idx)}")
        src.close(scope)
        src.emit(indent, "cuda.syncthreads()")

    if not split:
        src.emit(1, "tid = cuda.threadIdx.x")
        src.emit(1, f"for o in range(cuda.blockIdx.x, {kept_size}, cuda.gridDim.x):")
        epilogue(2, accumulate(2, "0", str(red_size), finish=True))
        return (
            _kernel_def(src, "kernel")
            + src.lines
            + ["", "", single_source("kernel", _blocks(kept_size * BLOCK), BLOCK, src.n_params)]
        )

    # Split: blocks (o, part) write partial results; one block per output combines them. Only
    # one-variable states split (RULES.split_reductions: sum, max, min).
    parts = [src.names("part") for _ in reducers]
    src.emit(1, "tid = cuda.threadIdx.x")
    src.emit(1, f"for b in range(cuda.blockIdx.x, {kept_size * n_parts}, cuda.gridDim.x):")
    src.emit(2, f"o = b // {n_parts}")
    src.emit(2, f"lo = (b % {n_parts}) * {chunk}")
    totals = accumulate(2, "lo", f"min({red_size}, lo + {chunk})", finish=False)
    src.emit(2, "if tid == 0:")
    for (_, total), part in zip(totals, parts):
        src.emit(3, f"{part}[b] = {total}")
    src.emit(2, "cuda.syncthreads()")
    part_params = ", ".join(parts)
    part_types = ", ".join(f"{numba_type(acc.state[0].dtype)}[::1]" for acc, _ in totals)
    input_types = ", ".join(f"{numba_type(n.dtype)}[::1]" for n in kernel.inputs)
    siblings = "".join(f"{src.outputs[n]}, " for n in kernel.siblings)  # written by the partial pass
    sibling_types = "".join(f"{numba_type(n.dtype)}[::1], " for n in kernel.siblings)
    partial_sig = f"void({sibling_types}{part_types}, {input_types})"
    partial_params = f"{siblings}{part_params}, {', '.join(src.params.values())}"
    partial = _kernel_def(src, "partial", partial_params, partial_sig) + src.lines

    src.lines = []
    src.emit(1, "tid = cuda.threadIdx.x")
    src.emit(1, f"for o in range(cuda.blockIdx.x, {kept_size}, cuda.gridDim.x):")
    finals = []
    for (acc, _), part in zip(totals, parts):
        (slot,) = acc.state
        merged = Slot(src.names("acc"), slot.dtype, slot.init)
        src.emit(2, f"{merged.name} = {merged.init}")
        src.emit(2, f"for p in range(tid, {n_parts}, {BLOCK}):")
        emit_lines(3, acc.combine([merged.name], [f"{part}[o * {n_parts} + p]"]))
        lines, value = acc.finalize(_block_reduce(src, 2, [merged], acc.combine))
        emit_lines(2, lines)
        finals.append((acc, value))
    epilogue(2, finals)
    roots = ", ".join(src.outputs[n] for n in [kernel.root, *kernel.roots])
    root_types = ", ".join(f"{numba_type(n.dtype)}[::1]" for n in [kernel.root, *kernel.roots])
    finish_sig = f"void({root_types}, {part_types}, {input_types})"
    finish = (
        _kernel_def(src, "finish", f"{roots}, {part_params}, {', '.join(src.params.values())}", finish_sig) + src.lines
    )
    # the plan's buffers: roots, siblings, inputs (the executor's order), then the partials
    n_roots, n_siblings, n_ins = 1 + len(kernel.roots), len(kernel.siblings), len(src.params)
    n = n_roots + n_siblings + n_ins
    roots_i, siblings_i = range(n_roots), range(n_roots, n_roots + n_siblings)
    ins_i, parts_i = range(n_roots + n_siblings, n), range(n, n + len(parts))
    launcher = [
        "",
        "",
        plan_source(
            n,
            [
                ("partial", _blocks(kept_size * n_parts * BLOCK), BLOCK, [*siblings_i, *parts_i, *ins_i]),
                ("finish", _blocks(kept_size * BLOCK), BLOCK, [*roots_i, *parts_i, *ins_i]),
            ],
            [(kept_size * n_parts, acc.state[0].dtype.name) for acc, _ in totals],
        ),
    ]
    return partial + finish + launcher


# ---- row-wise: softmax, log_softmax ----


def _emit_rowwise_kernel(src: _Source) -> list[str]:
    """One block per row, three passes (max, sum of exponentials, normalise) with block reductions
    between them. A row of at most ROW_CACHE * BLOCK elements is read from memory once: each thread
    keeps its elements (its producer's values) in a local array that the later passes read."""
    kernel = src.kernel
    (node,) = [n for n in kernel.nodes if OPS[n.op].kind == Kind.ROWWISE]
    x, dt, shape = node.inputs[0], node.dtype, node.shape
    kept_size, row, idx = row_geometry(node)
    per_thread = -(-row // BLOCK)
    cached = 0 < per_thread <= ROW_CACHE
    emit = src.emit
    emit(1, "tid = cuda.threadIdx.x")
    if cached:
        emit(1, f"cache = cuda.local.array({per_thread}, {numba_type(x.dtype)})")
    emit(1, f"for o in range(cuda.blockIdx.x, {kept_size}, cuda.gridDim.x):")

    def row_loop(statements, first: bool = False) -> None:
        """statements(body, the value of x at the element) for each of this thread's elements."""
        if cached:
            emit(2, f"for j in range({per_thread}):")
            emit(3, f"r = tid + j * {BLOCK}")
            emit(3, f"if r < {row}:")
            body = src.scope(4)
            if first:
                body.emit(f"cache[j] = {body.value(x, idx)}")
            else:
                body.bind(x, idx, "cache[j]")
            statements(body, "cache[j]")
        else:
            emit(2, f"for r in range(tid, {row}, {BLOCK}):")
            body = src.scope(3)
            statements(body, body.value(x, idx))
        src.close(body)

    emit(2, f"m = {DIALECT.extreme(dt, -1)}")
    row_loop(lambda body, v: body.emit(f"m = {combine_values('max', 'm', v, dt, DIALECT)}"), first=True)
    emit(2, f"m = {_block_reduce(src, 2, [Slot('m', dt, DIALECT.extreme(dt, -1))], _merging('max', dt))}")
    emit(2, "s = 0.0")
    row_loop(lambda body, v: body.emit(f"s += {DIALECT.math('exp', f'{v} - m', dt)}"))
    total = _block_reduce(src, 2, [Slot("s", dtypes.float64, "0.0")], _merging("sum", dtypes.float64))
    if node.op == "softmax":
        emit(2, f"inv = {DIALECT.cast(f'1.0 / {total}', dt)}")
    else:
        emit(2, f"log_s = {DIALECT.cast(DIALECT.math('log', total, dtypes.float64), dt)}")

    def normalise(body: Emitter, v: str) -> None:
        y = src.names("y")
        if node.op == "softmax":
            body.emit(f"{y} = {DIALECT.cast(DIALECT.math('exp', f'{v} - m', dt) + ' * inv', dt)}")
        else:
            body.emit(f"{y} = ({v} - m) - log_s")
        body.bind(node, idx, y)
        body.emit(f"{DIALECT.element('out', idx, shape)} = {body.value(kernel.root, idx)}")

    row_loop(normalise)
    emit(2, "cuda.syncthreads()")
    return (
        _kernel_def(src, "kernel")
        + src.lines
        + ["", "", single_source("kernel", _blocks(kept_size * BLOCK), BLOCK, src.n_params)]
    )


# ---- copies: a program runner's inputs and outputs (runner.py) ----

COPY_PAIRS = 32  # pairs per copy kernel: 64 arrays of 56 bytes of parameters each stay under 4 KB


def copy_source(dtypes_: list[np.dtype]) -> str:
    """Module source defining `copy(dst0, src0, dst1, src1, ...)`, which copies each src buffer of
    these dtypes into its dst (sizes read at run time, so one kernel serves any shapes): a
    grid-stride loop per pair."""
    if not 0 < len(dtypes_) <= COPY_PAIRS:
        raise ValueError(f"a copy kernel takes 1 to {COPY_PAIRS} buffer pairs, got {len(dtypes_)}")
    types = ", ".join(f"{numba_type(np.dtype(t))}[::1], {numba_type(np.dtype(t))}[::1]" for t in dtypes_)
    params = ", ".join(f"d{i}, s{i}" for i in range(len(dtypes_)))
    lines = [
        f"# jitnet cuda kernel: copy {len(dtypes_)} buffers ({', '.join(np.dtype(t).name for t in dtypes_)})",
        "from numba import cuda",
        "from numba.types import void, boolean, int32, int64, float32, float64",
        "",
        "",
        f"@cuda.jit(void({types}), cache=True)",
        f"def copy({params}):",
        "    start = cuda.grid(1)",
        "    stride = cuda.gridsize(1)",
    ]
    for i in range(len(dtypes_)):
        lines += [f"    for i in range(start, d{i}.size, stride):", f"        d{i}[i] = s{i}[i]"]
    return "\n".join(lines) + "\n"


def copy_blocks(size: int) -> int:
    """The grid of a copy kernel whose largest buffer has `size` elements."""
    return _blocks(size)
