"""Fusion: decide which values live in memory, and group the rest into kernels.

A value is materialised (gets a buffer) when it is an output, the result of an extern op (matmul,
conv, pools) or an input to one, a reduction or row-wise result that cannot ride along as the
epilogue of its consumer's kernel, or a costly value that several kernels (or a broadcast) would
otherwise recompute. Every materialised value is the root of one kernel, which computes all the
unmaterialised nodes it reaches: elementwise chains, views (index arithmetic), the elementwise
producers of its reductions, and an elementwise epilogue over a reduction's result.

Sibling fusion then merges independent kernels that walk the same domain and read a common buffer:
an elementwise kernel rides along in a reduction over its shape (the forward sum and the gradient
of `value_and_grad(sum(f(x)))` read x once) or in another elementwise kernel of its shape (an
optimizer's new parameter and its new moments are one pass over the gradient), and reductions
over the same domain and axes share their loop. Such a kernel has several outputs: its root, more
roots (reductions and their epilogues) and siblings (elementwise over the domain).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jitnet.ir.node import Graph, Node, toposort, type_str
from jitnet.ir.opdefs import OPS, Kind

# Recompute a value in every kernel that reads it unless its fused subtree costs more than this
# (a transcendental costs 8, a cheap op 1): writing and re-reading it is the alternative, and on
# memory-bound kernels a little arithmetic is cheaper than a round trip through memory.
RECOMPUTE_LIMIT = 24
# ... or reads more than this many buffers: each kernel recomputing it would read them all (a
# residual stream x0 + a1 + m1 + a2 + ... read by every block's kernels), where one kept value is one read.
RECOMPUTE_READS = 3
BROADCAST_LIMIT = 8  # a value broadcast to a larger shape is recomputed per element below this cost


@dataclass(frozen=True)
class FusionRules:
    """What a backend's kernels can do, as far as the fuser needs to know (each backend declares its own)."""

    epilogue_ops: frozenset[str]  # extern ops whose consumers run at the op's store, in its kernel
    transposed_operands: frozenset[str]  # extern ops that read an operand's buffer with its last two axes swapped
    split_reductions: frozenset[str]  # reductions split across threads or blocks when a kernel has few outputs
    few_outputs: int  # ... fewer than this many


@dataclass
class Kernel:
    kind: Kind  # ELEMENTWISE, REDUCE, ROWWISE or EXTERN: what shapes its loops
    root: Node  # the value the kernel writes
    nodes: list[Node]  # the nodes it computes, producers first (root last)
    inputs: list[Node]  # the buffers it reads
    roots: list[Node] = field(default_factory=list)  # more outputs computed like root (reductions)
    siblings: list[Node] = field(default_factory=list)  # more outputs, elementwise over the domain

    @property
    def outputs(self) -> list[Node]:
        return [self.root, *self.roots, *self.siblings]

    @property
    def domain(self) -> tuple:
        """The shape the kernel's loops walk: a reduction's input, else the output."""
        reducers = [n for n in self.nodes if _kind(n) == Kind.REDUCE]
        return reducers[0].inputs[0].shape if self.kind == Kind.REDUCE else self.root.shape

    def describe(self) -> str:
        ops = " ".join(n.op for n in self.nodes if n.op != "const")
        ins = ", ".join(f"%{i.id}" for i in self.inputs)
        outs = ", ".join(f"%{o.id}:{type_str(o)}" for o in self.outputs)
        return f"{self.kind} -> {outs} reads ({ins}) ops: {ops}"


@dataclass
class Schedule:
    graph: Graph
    kernels: list[Kernel]
    buffers: list[Node] = field(default_factory=list)  # every node that lives in memory
    aliases: dict[Node, Node] = field(default_factory=dict)  # a reshape of a buffer -> that buffer

    def __str__(self) -> str:
        lines = [f"  k{i}: {k.describe()}" for i, k in enumerate(self.kernels)]
        lines += [f"  %{a.id}:{type_str(a)} is %{b.id} reshaped (no copy)" for a, b in self.aliases.items()]
        return "\n".join(lines)


def is_buffer_source(node: Node) -> bool:
    """Sources that are read from memory rather than computed inline."""
    return node.op in ("input", "capture") or (node.op == "const" and node.size != 1)


def _kind(node: Node) -> Kind:
    return OPS[node.op].kind


def _same_reduction(a: Node, b: Node) -> bool:
    return (
        _kind(a) == _kind(b) == Kind.REDUCE
        and a.inputs[0].shape == b.inputs[0].shape
        and a.attrs["axes"] == b.attrs["axes"]
        and a.attrs["keepdims"] == b.attrs["keepdims"]
    )


def is_swap_of_last_axes(node: Node) -> bool:
    axes = node.attrs.get("axes", ()) if node.op == "permute" else ()
    r = len(axes)
    return r >= 2 and tuple(axes) == (*range(r - 2), r - 1, r - 2)


def extern_operands(kernel: Kernel) -> list[tuple[Node, bool]]:
    """(buffer, transposed) of each operand of an extern kernel's op: a matmul operand may be its
    buffer read with the last two axes swapped, never copied."""
    (op,) = [n for n in kernel.nodes if _kind(n) == Kind.EXTERN]
    return [(i.inputs[0], True) if i not in kernel.inputs else (i, False) for i in op.inputs]


def _materialised(graph: Graph, order: list[Node], rules: FusionRules) -> set[Node]:
    users: dict[Node, list[Node]] = {n: [] for n in order}
    for node in order:
        for i in node.inputs:
            users[i].append(node)
    outputs = set(graph.outputs)
    # transposed views that extern kernels read in place (every extern reading them can): not
    # copied, their source is a buffer
    views = {
        i
        for n in order
        if n.op in rules.transposed_operands
        for i in n.inputs
        if is_swap_of_last_axes(i)
        and all(c.op in rules.transposed_operands for c in users[i] if _kind(c) == Kind.EXTERN)
    } - outputs
    mat: set[Node] = set()
    roots_of: dict[Node, frozenset] = {}  # unmaterialised node -> the kernel roots that compute it
    clean: dict[Node, bool] = {}  # within its kernel, n is elementwise over the root's whole shape
    reducers: dict[Node, list[Node]] = {}  # root -> the reductions fused into its kernel

    # Consumers first: what must live in memory, which kernels read each value, epilogues.
    for node in reversed(order):
        kind = _kind(node)
        if is_buffer_source(node):
            continue
        roots = frozenset().union(*({c} if c in mat else roots_of[c] for c in users[node]))
        read_by_extern = any(
            (_kind(c) == Kind.EXTERN and node not in views) or (c in views and c not in mat) for c in users[node]
        )
        must = node in outputs or read_by_extern or (kind == Kind.EXTERN and node.op not in rules.epilogue_ops)
        if not must and kind in (Kind.REDUCE, Kind.ROWWISE, Kind.EXTERN):  # fused under an epilogue?
            root = next(iter(roots)) if len(roots) == 1 else None
            fits = root is not None and root.shape == node.shape
            fits = fits and all(_kind(c) == Kind.ELEMENTWISE and clean[c] for c in users[node])
            if kind == Kind.EXTERN:  # alone in its kernel, writing its own dtype
                must = not (fits and root.dtype == node.dtype and not reducers.get(root))
            else:
                must = not (fits and all(_same_reduction(node, r) for r in reducers.get(root, [])))
        if must:
            mat.add(node)
            clean[node] = kind == Kind.ELEMENTWISE
            if kind in (Kind.REDUCE, Kind.ROWWISE, Kind.EXTERN):
                reducers[node] = [node]
            continue
        roots_of[node] = roots
        root = next(iter(roots)) if len(roots) == 1 else None
        clean[node] = (
            root is not None
            and kind == Kind.ELEMENTWISE
            and node.shape == root.shape
            and all(clean[c] for c in users[node])
        )
        if kind in (Kind.REDUCE, Kind.ROWWISE, Kind.EXTERN):
            reducers.setdefault(root, []).append(node)

    # Producers first: keep the values too costly to recompute where several kernels (or a
    # broadcast) would. A kept value costs its readers only a load.
    cost: dict[Node, int] = {}
    reads: dict[Node, frozenset] = {}  # the buffers a node's fused subtree reads
    for node in order:
        if node in mat or is_buffer_source(node):
            cost[node], reads[node] = 0, frozenset({node}) if node.size > 1 else frozenset()
            continue
        cost[node] = OPS[node.op].cost + sum(cost[i] for i in node.inputs)
        reads[node] = frozenset().union(*(reads[i] for i in node.inputs))
        if _kind(node) not in (Kind.ELEMENTWISE, Kind.MOVEMENT):
            continue
        costly = cost[node] > RECOMPUTE_LIMIT or len(reads[node]) > RECOMPUTE_READS
        shared = len(roots_of[node]) > 1 and costly
        broadcast = cost[node] >= BROADCAST_LIMIT and any(c.op == "expand" and c.size > node.size for c in users[node])
        if shared or broadcast:
            mat.add(node)
            cost[node], reads[node] = 0, frozenset({node})
    return mat


def _collect(root: Node, buffers: set[Node]) -> tuple[list[Node], list[Node]]:
    """The nodes computed by root's kernel (producers first) and the buffers it reads."""
    nodes, inputs, seen = [], [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            nodes.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        if node is not root and node in buffers:
            inputs.append(node)
            continue
        stack.append((node, True))
        stack.extend((i, False) for i in reversed(node.inputs))
    return nodes, inputs


def schedule(graph: Graph, rules: FusionRules) -> Schedule:
    order = toposort(graph.outputs)
    mat = _materialised(graph, order, rules)
    buffers = [n for n in order if n in mat or is_buffer_source(n)]
    buffer_set = set(buffers)
    # Buffers are flat and contiguous, so a reshape of one is the same memory: no kernel, no copy
    # (a Flatten before a matmul, and its gradient's reshape back). Outputs keep their own buffer.
    aliases: dict[Node, Node] = {}
    for node in buffers:
        src = node.inputs[0] if node.op == "reshape" else None
        if src is not None and src in buffer_set and node not in graph.outputs:
            aliases[node] = aliases.get(src, src)
    kernels = []
    for root in order:
        if root not in mat or root in aliases:
            continue
        nodes, inputs = _collect(root, buffer_set)
        kinds = {_kind(n) for n in nodes}
        kind = next((k for k in (Kind.EXTERN, Kind.ROWWISE, Kind.REDUCE) if k in kinds), Kind.ELEMENTWISE)
        kernels.append(Kernel(kind, root, nodes, inputs))
    return Schedule(graph, _merge_siblings(kernels, rules), buffers, aliases)


def _reduction_of(kernel: Kernel) -> tuple | None:
    """(domain, axes) of a reduce kernel whose reductions all run over the same axes."""
    reducers = [n for n in kernel.nodes if _kind(n) == Kind.REDUCE]
    axes = {n.attrs["axes"] for n in reducers}
    return (kernel.domain, axes.pop()) if kernel.kind == Kind.REDUCE and len(axes) == 1 else None


def _can_host(host: Kernel, guest: Kernel, rules: FusionRules) -> bool:
    """Can `guest` run inside `host`'s loops, adding its outputs: an elementwise kernel over
    host's domain, or a reduction over host's domain and axes?"""
    if guest.siblings or guest.roots or not set(host.inputs) & set(guest.inputs):
        return False
    if set(host.outputs) & set(guest.inputs) or set(guest.outputs) & set(host.inputs):
        return False
    if guest.kind == Kind.ELEMENTWISE:
        if host.kind == Kind.REDUCE and not _splits(host, rules) and host.root.size < rules.few_outputs:
            return False  # a serial loop would take the guest's parallelism away
        return host.kind in (Kind.ELEMENTWISE, Kind.REDUCE) and host.domain == guest.root.shape
    return (
        guest.kind == Kind.REDUCE
        and _reduction_of(host) is not None
        and _reduction_of(host) == _reduction_of(guest)
        and (_splits(host, rules) == _splits(guest, rules) or host.root.size >= rules.few_outputs)
    )


def _splits(kernel: Kernel, rules: FusionRules) -> bool:
    """Whether the backends split this kernel's reductions across threads when they have few
    outputs: sums and extrema combine in any order; argmax and logsumexp are not split."""
    return all(n.op in rules.split_reductions for n in kernel.nodes if _kind(n) == Kind.REDUCE)


def _merge_siblings(kernels: list[Kernel], rules: FusionRules) -> list[Kernel]:
    """Merge each kernel into the first kernel that can host it, running the merged kernel at the
    later one's place when no kernel between reads the earlier one's outputs, else at the earlier
    one's place when no kernel between writes the later one's inputs."""
    kernels = list(kernels)
    i = 0
    while i < len(kernels):
        guest = kernels[i]
        for j, host in enumerate(kernels):
            if j == i or not _can_host(host, guest, rules):
                continue
            lo, hi = min(i, j), max(i, j)
            between = kernels[lo + 1 : hi]
            if not any(set(kernels[lo].outputs) & set(k.inputs) for k in between):
                at, gone = hi, lo  # the earlier kernel's outputs can wait
            elif not any(set(k.outputs) & set(kernels[hi].inputs) for k in between):
                at, gone = lo, hi  # the later kernel's inputs are ready earlier
            else:
                continue
            reduction = guest.kind == Kind.REDUCE
            merged = Kernel(
                host.kind,
                host.root,
                host.nodes + [n for n in guest.nodes if n not in set(host.nodes)],
                host.inputs + [n for n in guest.inputs if n not in set(host.inputs)],
                host.roots + [guest.root] * reduction,
                host.siblings + [guest.root] * (not reduction),
            )
            kernels[at] = merged
            del kernels[gone]
            i = -1  # start over: the merged kernel may host more
            break
        i += 1
    return kernels
