"""Graph simplification: constant folding and algebraic rewrites, then dead-code elimination.

Common subexpressions are shared as the graph is built (nodes are hash-consed), and a graph only
ever walks what its outputs reach, so CSE and DCE need no pass of their own: `simplify` rebuilds
the reachable graph bottom-up, and every rebuilt node is interned again.
"""

from __future__ import annotations

from collections.abc import Callable

from jitnet.ir import dtypes
from jitnet.ir.interpret import evaluate
from jitnet.ir.node import Const, Graph, Node, toposort
from jitnet.ir.opdefs import OPS, Kind

FOLD_LIMIT = 4096  # fold constant subgraphs up to this many elements; larger ones stay lazy views


def scalar_value(node: Node):
    """The value of a constant that holds one repeated scalar (a const seen through reshape/expand)."""
    while node.op in ("reshape", "expand"):
        node = node.inputs[0]
    if node.op == "const" and node.attrs["value"].value.size == 1:
        return node.attrs["value"].value.item()
    return None


def _node(op: str, inputs: tuple, like: Node, **attrs) -> Node:
    return Node(op, inputs, attrs, like.shape, like.dtype)


def _is_constant(node: Node) -> bool:
    """A constant, or a view of one (a broadcast literal is an expand of a 0-d const)."""
    while node.op in ("reshape", "expand"):
        node = node.inputs[0]
    return node.op == "const"


def _fold_constants(node: Node) -> Node | None:
    kind = OPS[node.op].kind
    if kind == Kind.SOURCE or not node.inputs or node.size > FOLD_LIMIT or node.op in ("reshape", "expand"):
        return None  # views of constants cost nothing; folding them would make buffers
    if all(_is_constant(i) for i in node.inputs):
        value = evaluate(node)
        return Node("const", (), {"value": Const(value)}, node.shape, node.dtype)
    return None


def _pow_by_constant(node: Node) -> Node | None:
    if node.op != "pow":
        return None
    x, c = node.inputs[0], scalar_value(node.inputs[1])
    if c == 1:
        return x
    if c == 2:
        return _node("square", (x,), node)
    if c == 3:
        return _node("mul", (_node("square", (x,), node), x), node)
    if c == -1 and dtypes.is_float(node.dtype):  # integers: the truncated reciprocal, kept as pow
        return _node("reciprocal", (x,), node)
    return None


def _collapse_movement(node: Node) -> Node | None:
    x = node.inputs[0] if node.inputs else None
    if node.op in ("reshape", "expand") and x.shape == node.shape:
        return x
    if node.op == "reshape" and x.op == "reshape":
        return _node("reshape", x.inputs, node, shape=node.shape)
    if node.op == "permute":
        if node.attrs["axes"] == tuple(range(node.ndim)):
            return x
        if x.op == "permute":
            axes = tuple(x.attrs["axes"][a] for a in node.attrs["axes"])
            return _node("permute", x.inputs, node, axes=axes)
    if node.op == "cast" and x.dtype == node.dtype:
        return x
    if node.op == "tag":  # differentiation is over: the marker is an identity
        return x
    return None


def _identities(node: Node) -> Node | None:
    """x * 1 and 1 * x are x (the seed cotangent of a gradient is a broadcast 1); -(-x) is x."""
    if node.op == "mul":
        a, b = node.inputs
        if scalar_value(b) == 1 and a.shape == node.shape:
            return a
        if scalar_value(a) == 1 and b.shape == node.shape:
            return b
    if node.op == "neg" and node.inputs[0].op == "neg":
        return node.inputs[0].inputs[0]
    return None


def _padded_piece(node: Node) -> tuple[int, int, int, Node] | None:
    """(axis, lo, hi, x) when node is x zero-padded along one axis only."""
    if node.op != "pad" or node.attrs["value"] != 0:
        return None
    padded = [d for d, w in enumerate(node.attrs["widths"]) if w != (0, 0)]
    if len(padded) != 1:
        return None
    (axis,) = padded
    lo, hi = node.attrs["widths"][axis]
    return axis, lo, hi, node.inputs[0]


def _adjacent_pads_concat(node: Node) -> Node | None:
    """pad(a) + pad(b), zero-padded along one axis into adjacent ranges, is pad(concat(a, b)): the
    gradient of slices that tile an array (self-attention's q, k and v columns of one product)
    becomes one concatenation, each element read from one piece, not a sum of padded copies that
    evaluates every piece's bounds at every element."""
    if node.op != "add" or any(i.shape != node.shape or i.dtype != node.dtype for i in node.inputs):
        return None
    pieces = [_padded_piece(i) for i in node.inputs]
    if None in pieces or pieces[0][0] != pieces[1][0]:
        return None
    (axis, lo_a, _, a), (_, lo_b, hi_b, b) = sorted(pieces, key=lambda p: p[1])
    if lo_a + a.shape[axis] != lo_b:
        return None  # overlapping, or a gap between them
    parts = [p for x in (a, b) for p in (x.inputs if x.op == "concat" and x.attrs["axis"] == axis else (x,))]
    shape = node.shape[:axis] + (a.shape[axis] + b.shape[axis],) + node.shape[axis + 1 :]
    joined = Node("concat", tuple(parts), {"axis": axis}, shape, node.dtype)
    if lo_a == 0 and hi_b == 0:
        return joined
    widths = tuple((lo_a, hi_b) if d == axis else (0, 0) for d in range(node.ndim))
    return _node("pad", (joined,), node, widths=widths, value=0.0)


RULES: list[Callable[[Node], Node | None]] = [
    _fold_constants,
    _pow_by_constant,
    _collapse_movement,
    _identities,
    _adjacent_pads_concat,
]


def _swap_axes(rank: int) -> tuple:
    return (*range(rank - 2), rank - 1, rank - 2)


def _swap_last_axes(x: Node) -> Node:
    axes = _swap_axes(x.ndim)
    if x.op == "permute" and x.attrs["axes"] == axes:
        return x.inputs[0]
    return Node("permute", (x,), {"axes": axes}, (*x.shape[:-2], x.shape[-1], x.shape[-2]), x.dtype)


def _transposed_product(node: Node) -> Node | None:
    """(a @ b)^T = b^T @ a^T: the product comes out in the layout its reader wants (a weight
    gradient, say), and the operands' transposes are views the matmul kernel reads in place."""
    if node.op != "permute" or node.inputs[0].op != "matmul" or node.attrs["axes"] != _swap_axes(node.ndim):
        return None
    a, b = node.inputs[0].inputs
    return Node("matmul", (_swap_last_axes(b), _swap_last_axes(a)), node.inputs[0].attrs, node.shape, node.dtype)


def _reduce_without_keepdims(node: Node) -> Node | None:
    """reshape(sum(x, axes, keepdims=True)) to the reduced shape is sum(x, axes): an elementwise
    consumer (a bias gradient's update) can then be the reduction's epilogue."""
    x = node.inputs[0] if node.op == "reshape" else None
    if x is None or OPS[x.op].kind != Kind.REDUCE or not x.attrs["keepdims"]:
        return None
    axes = x.attrs["axes"]
    if node.shape != tuple(n for d, n in enumerate(x.shape) if d not in axes):
        return None
    return Node(x.op, x.inputs, {**x.attrs, "keepdims": False}, node.shape, node.dtype)


SINGLE_USE_RULES = [_transposed_product, _reduce_without_keepdims]  # they rebuild their input's node


def simplify(graph: Graph) -> Graph:
    new: dict[Node, Node] = {}
    order = toposort(graph.outputs)
    uses = {n: 0 for n in order}
    for n in order:
        for i in n.inputs:
            uses[i] += 1
    for node in order:
        inputs = tuple(new[i] for i in node.inputs)
        current = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.shape, node.dtype)
        if node.inputs and uses[node.inputs[0]] == 1 and node.inputs[0] not in graph.outputs:
            for rule in SINGLE_USE_RULES:  # the input has no other reader: rebuilding it duplicates nothing
                current = rule(current) or current
        changed = True
        while changed:
            changed = False
            for rule in RULES:
                out = rule(current)
                if out is not None and out is not current:
                    current, changed = out, True
                    break
        new[node] = current
    return Graph(graph.inputs, [new[o] for o in graph.outputs], graph.captured)
