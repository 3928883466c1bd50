"""CUDA kernel source for one fused group: `numba.cuda.jit` kernels over flat device buffers.

The same fusion groups as the CPU backend, lowered to GPU loops:
- elementwise: a grid-stride loop over the output, one element per thread per step (consecutive
  threads touch consecutive elements, so contiguous loads coalesce);
- reduce: one block per output element, each thread accumulating a strided slice of the reduced
  elements, then a shared-memory tree; when few outputs remain, a first kernel splits every
  reduction over many blocks into partial results and a second combines them;
- row-wise softmax: one block per row, three passes, block reductions in shared memory.
Each generated module defines `launch(out, *inputs)`, with its launch configuration computed once
here (shapes are static). Shared-memory trees rather than warp shuffles keep every kernel runnable
in numba's CUDA simulator, which has no warp-level operations.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.dialect import DIALECT, EXP, LOG
from jitnet.codegen.expr import Emitter
from jitnet.codegen.index import Idx, unflatten_index
from jitnet.codegen.source import KernelSource, acc_dtype, numba_type, prod, reduction_index
from jitnet.ir import dtypes
from jitnet.ir.fusion import Kernel
from jitnet.ir.node import Node, type_str
from jitnet.ir.opdefs import OPS, Kind

BLOCK = 32 if simulator() else 256  # the simulator runs a Python thread per CUDA thread
MAX_BLOCKS = 4 if simulator() else 132 * 16  # enough resident blocks to fill an H100's 132 SMs
SPLIT_MIN = 256 if simulator() else 1 << 16  # reductions this long (per output) are split across blocks


def _blocks(work: int) -> int:
    return max(1, min(MAX_BLOCKS, -(-work // BLOCK)))


class _Source(KernelSource):
    def __init__(self, kernel: Kernel):
        super().__init__(kernel, DIALECT)

    def args(self) -> str:
        return ", ".join([*self.outputs.values(), *self.params.values()])

    def signature(self) -> str:
        types = [n.dtype for n in self.kernel.outputs] + [n.dtype for n in self.kernel.inputs]
        return f"void({', '.join(numba_type(t) + '[::1]' for t in types)})"


def generate(kernel: Kernel) -> str:
    """Module source defining `launch(out, out1, ..., in0, ...)`."""
    src = _Source(kernel)
    body = {"elementwise": _elementwise, "reduce": _reduce, "rowwise": _rowwise}[kernel.kind](src)
    header = [
        f"# jitnet cuda kernel: {kernel.kind}",
        *(f"# {name}: {type_str(n)}" for n, name in src.outputs.items()),
        *(f"# {name}: {type_str(n)}" for n, name in src.params.items()),
        "# " + " ".join(n.op for n in kernel.nodes if n.op != "const"),
        "import math",
        "",
        "import numpy as np",
        "from numba import cuda",
        "from numba.types import void, boolean, int32, int64, float32, float64",
        "",
        "from jitnet.backends.cuda import devmath as dm",
        "",
    ]
    return "\n".join(header + body) + "\n"


def _kernel_def(src: _Source, name: str, params: str | None = None, sig: str | None = None) -> list[str]:
    return ["", "", f"@cuda.jit({sig or src.signature()}, cache=True)", f"def {name}({params or src.args()}):"]


# ---- elementwise ----


def _elementwise(src: _Source) -> list[str]:
    root = src.kernel.root
    n = root.size
    src.emit(1, "start = cuda.grid(1)")
    src.emit(1, "stride = cuda.gridsize(1)")
    src.emit(1, f"for i in range(start, {n}, stride):")
    idx = unflatten_index(Idx.var("i", n), root.shape)
    body = src.scope(2)
    value = body.value(root, idx)
    body.emit(f"{DIALECT.element('out', idx, root.shape)} = {value}")
    src.store_siblings(body, idx)
    src.close(body)
    return _kernel_def(src, "kernel") + src.lines + ["", "", f"launch = kernel[{_blocks(n)}, {BLOCK}]"]


# ---- block reductions ----


def _combine(op: str, a: str, b: str, dtype: np.dtype) -> str:
    if op == "sum":
        return f"{a} + {b}"
    return DIALECT.extremum("maximum" if op == "max" else "minimum", a, b, dtype)


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


def _block_reduce(src: _Source, indent: int, op: str, acc: str, dtype: np.dtype, acc_dtype: np.dtype) -> str:
    """Combine every thread's `acc` across the block; returns the name holding the result."""
    sm = src.names("sm")
    src.emit(indent, f"{sm} = cuda.shared.array({BLOCK}, {numba_type(acc_dtype)})")
    src.emit(indent, f"{sm}[tid] = {acc}")
    _tree(
        src.emit, indent, lambda emit, lo, hi: emit(f"{sm}[{lo}] = {_combine(op, f'{sm}[{lo}]', f'{sm}[{hi}]', dtype)}")
    )
    total = src.names("total")
    src.emit(indent, f"{total} = {sm}[0]")
    src.emit(indent, "cuda.syncthreads()")
    return total


def _block_argmax(src: _Source, indent: int, val: str, arg: str, dtype: np.dtype) -> str:
    """Block argmax: the largest value, ties and NaN to the smallest index (as numpy)."""
    sv, si = src.names("smv"), src.names("smi")
    src.emit(indent, f"{sv} = cuda.shared.array({BLOCK}, {numba_type(dtype)})")
    src.emit(indent, f"{si} = cuda.shared.array({BLOCK}, int64)")
    src.emit(indent, f"{sv}[tid] = {val}")
    src.emit(indent, f"{si}[tid] = {arg}")

    def step(emit, lo, hi):
        a, b, ia, ib = f"{sv}[{lo}]", f"{sv}[{hi}]", f"{si}[{lo}]", f"{si}[{hi}]"
        nan = f"({b} != {b} and ({a} == {a} or {ib} < {ia}))" if dtypes.is_float(dtype) else "False"
        emit(f"if {b} > {a} or ({b} == {a} and {ib} < {ia}) or {nan}:")
        emit(f"    {a} = {b}")
        emit(f"    {ia} = {ib}")

    _tree(src.emit, indent, step)
    total = src.names("total")
    src.emit(indent, f"{total} = {si}[0]")
    src.emit(indent, "cuda.syncthreads()")
    return total


def _reduce(src: _Source) -> list[str]:
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
        kept_size * 4 <= MAX_BLOCKS and red_size >= SPLIT_MIN and all(r.op in ("sum", "max", "min") for r in reducers)
    )
    n_parts = max(1, min(MAX_BLOCKS // max(kept_size, 1), -(-red_size // (BLOCK * 8)))) if split else 1
    chunk = -(-red_size // n_parts)
    r_var = Idx.var("r", red_size)

    def accumulate(indent: int, r_lo: str, r_hi: str) -> list[tuple[Node, str]]:
        """Per-thread accumulators over r in [r_lo, r_hi) and their block totals."""
        accs = []
        for node in reducers:
            acc, arg, m = src.names("acc"), src.names("arg"), src.names("m")
            accs.append((node, acc, arg, m))
            in_dt = node.inputs[0].dtype
            if node.op == "sum":
                src.emit(indent, f"{acc} = {DIALECT.literal(0, acc_dtype(node))}")
            elif node.op == "logsumexp":
                src.emit(indent, f"{m} = {DIALECT.extreme(in_dt, -1)}")
                src.emit(indent, f"{acc} = {DIALECT.literal(0, acc_dtype(node))}")
            else:
                src.emit(indent, f"{acc} = {DIALECT.extreme(in_dt, 1 if node.op == 'min' else -1)}")
                src.emit(indent, f"{arg} = 0")
        if any(n.op == "logsumexp" for n in reducers):  # its maximum first, across the block
            src.emit(indent, f"for r in range({r_lo} + tid, {r_hi}, {BLOCK}):")
            body = src.scope(indent + 1)
            for node, _, _, m in accs:
                if node.op == "logsumexp":
                    body.emit(
                        f"{m} = {_combine('max', m, body.value(node.inputs[0], input_index(r_var)), node.inputs[0].dtype)}"
                    )
            src.close(body)
            for node, _, _, m in accs:
                if node.op == "logsumexp":
                    in_dt = node.inputs[0].dtype
                    total = _block_reduce(src, indent, "max", m, in_dt, in_dt)
                    # an infinite maximum (a row with +inf, or only -inf) shifts by 0
                    src.emit(indent, f"{m} = {total} if {total} - {total} == 0 else {DIALECT.literal(0, in_dt)}")
        src.emit(indent, f"for r in range({r_lo} + tid, {r_hi}, {BLOCK}):")
        body = src.scope(indent + 1)
        for node, acc, arg, m in accs:
            v = body.value(node.inputs[0], input_index(r_var))
            in_dt = node.inputs[0].dtype
            if node.op == "sum":
                body.emit(f"{acc} += {DIALECT.cast(v, acc_dtype(node))}")
            elif node.op == "logsumexp":
                body.emit(f"{acc} += {DIALECT.cast(f'{EXP}({v} - {m})', acc_dtype(node))}")
            elif node.op in ("max", "min"):
                body.emit(f"{acc} = {_combine(node.op, acc, v, in_dt)}")
            else:  # argmax: strictly greater, or the first NaN
                nan = f" or ({v} != {v} and {acc} == {acc})" if dtypes.is_float(in_dt) else ""
                body.emit(f"if {v} > {acc}{nan}:")
                body.emit(f"    {acc} = {v}")
                body.emit(f"    {arg} = r")
        src.store_siblings(body, input_index(r_var))
        src.close(body)
        totals = []
        for node, acc, arg, m in accs:
            in_dt = node.inputs[0].dtype
            if node.op == "argmax":
                totals.append((node, _block_argmax(src, indent, acc, arg, in_dt)))
                continue
            op = "sum" if node.op in ("sum", "logsumexp") else node.op
            total = _block_reduce(src, indent, op, acc, in_dt, acc_dtype(node))
            if node.op == "logsumexp":
                src.emit(indent, f"{total} = {m} + {LOG}({DIALECT.cast(total, in_dt)})")
            totals.append((node, total))
        return totals

    def epilogue(indent: int, totals: list[tuple[Node, str]]) -> None:
        src.emit(indent, "if tid == 0:")
        scope = src.scope(indent + 1)
        for node, total in totals:
            scope.bind(node, reduction_index(full, axes, node), DIALECT.cast(total, node.dtype))
        for root in [kernel.root, *kernel.roots]:
            out_idx = reduction_index(full, axes, root)
            scope.emit(f"{DIALECT.element(src.outputs[root], out_idx, root.shape)} = {scope.value(root, out_idx)}")
        src.close(scope)
        src.emit(indent, "cuda.syncthreads()")

    if not split:
        src.emit(1, "tid = cuda.threadIdx.x")
        src.emit(1, f"for o in range(cuda.blockIdx.x, {kept_size}, cuda.gridDim.x):")
        epilogue(2, accumulate(2, "0", str(red_size)))
        return (
            _kernel_def(src, "kernel") + src.lines + ["", "", f"launch = kernel[{_blocks(kept_size * BLOCK)}, {BLOCK}]"]
        )

    # Split: blocks (o, part) write partial results; one block per output combines them.
    parts = [(node, src.names("part")) for node in reducers]
    src.emit(1, "tid = cuda.threadIdx.x")
    src.emit(1, f"for b in range(cuda.blockIdx.x, {kept_size * n_parts}, cuda.gridDim.x):")
    src.emit(2, f"o = b // {n_parts}")
    src.emit(2, f"lo = (b % {n_parts}) * {chunk}")
    totals = accumulate(2, "lo", f"min({red_size}, lo + {chunk})")
    src.emit(2, "if tid == 0:")
    for (_, total), (_, part) in zip(totals, parts):
        src.emit(3, f"{part}[b] = {total}")
    src.emit(2, "cuda.syncthreads()")
    part_params = ", ".join(p for _, p in parts)
    part_types = ", ".join(f"{numba_type(acc_dtype(n))}[::1]" for n, _ in parts)
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
    for node, part in parts:
        acc_dt = acc_dtype(node)
        acc = src.names("acc")
        init = (
            DIALECT.literal(0, acc_dt) if node.op == "sum" else DIALECT.extreme(acc_dt, 1 if node.op == "min" else -1)
        )
        src.emit(2, f"{acc} = {init}")
        src.emit(2, f"for p in range(tid, {n_parts}, {BLOCK}):")
        src.emit(3, f"{acc} = {_combine(node.op, acc, f'{part}[o * {n_parts} + p]', acc_dt)}")
        finals.append((node, _block_reduce(src, 2, node.op, acc, acc_dt, acc_dt)))
    epilogue(2, finals)
    roots = ", ".join(src.outputs[n] for n in [kernel.root, *kernel.roots])
    root_types = ", ".join(f"{numba_type(n.dtype)}[::1]" for n in [kernel.root, *kernel.roots])
    finish_sig = f"void({root_types}, {part_types}, {input_types})"
    finish = (
        _kernel_def(src, "finish", f"{roots}, {part_params}, {', '.join(src.params.values())}", finish_sig) + src.lines
    )
    ins = ", ".join(src.params.values())
    launcher = [
        "",
        "",
        f"_partial = partial[{_blocks(kept_size * n_parts * BLOCK)}, {BLOCK}]",
        f"_finish = finish[{_blocks(kept_size * BLOCK)}, {BLOCK}]",
        "",
        "_parts = []  # the partial results' buffers, allocated once: launches on one stream run in order",
        "",
        "",
        f"def launch({roots}, {siblings}{ins}):",
        "    if not _parts:",
        *(f"        _parts.append(cuda.device_array({kept_size * n_parts}, np.{acc_dtype(n).name}))" for n, _ in parts),
        f"    ({part_params},) = _parts",
        f"    _partial({siblings}{part_params}, {ins})",
        f"    _finish({roots}, {part_params}, {ins})",
    ]
    return partial + finish + launcher


# ---- row-wise: softmax, log_softmax ----


def _rowwise(src: _Source) -> list[str]:
    kernel = src.kernel
    (node,) = [n for n in kernel.nodes if OPS[n.op].kind == Kind.ROWWISE]
    x, axis, dt, shape = node.inputs[0], node.attrs["axis"], node.dtype, node.shape
    kept = tuple(n for d, n in enumerate(shape) if d != axis)
    kept_size, row = prod(kept), shape[axis]
    kept_idx = unflatten_index(Idx.var("o", kept_size), kept)
    idx = kept_idx[:axis] + [Idx.var("r", row)] + kept_idx[axis:]
    emit = src.emit
    emit(1, "tid = cuda.threadIdx.x")
    emit(1, f"for o in range(cuda.blockIdx.x, {kept_size}, cuda.gridDim.x):")

    def row_loop(statements) -> None:
        emit(2, f"for r in range(tid, {row}, {BLOCK}):")
        body = src.scope(3)
        statements(body, body.value(x, idx))
        src.close(body)

    emit(2, f"m = {DIALECT.extreme(dt, -1)}")
    row_loop(lambda body, v: body.emit(f"m = {_combine('max', 'm', v, dt)}"))
    emit(2, f"m = {_block_reduce(src, 2, 'max', 'm', dt, dt)}")
    emit(2, "s = 0.0")
    row_loop(lambda body, v: body.emit(f"s += {EXP}({v} - m)"))
    total = _block_reduce(src, 2, "sum", "s", dtypes.float64, dtypes.float64)
    if node.op == "softmax":
        emit(2, f"inv = {DIALECT.cast(f'1.0 / {total}', dt)}")
    else:
        emit(2, f"log_s = {DIALECT.cast(f'{LOG}({total})', dt)}")

    def normalise(body: Emitter, v: str) -> None:
        y = src.names("y")
        if node.op == "softmax":
            body.emit(f"{y} = {DIALECT.cast(f'{EXP}({v} - m) * inv', dt)}")
        else:
            body.emit(f"{y} = ({v} - m) - log_s")
        body.bind(node, idx, y)
        body.emit(f"{DIALECT.element('out', idx, shape)} = {body.value(kernel.root, idx)}")

    row_loop(normalise)
    emit(2, "cuda.syncthreads()")
    return _kernel_def(src, "kernel") + src.lines + ["", "", f"launch = kernel[{_blocks(kept_size * BLOCK)}, {BLOCK}]"]
