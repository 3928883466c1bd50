"""The IR: one immutable node type, hash-consed, and a graph of them.

Identical nodes (same op, inputs, attrs, shape and dtype) are the same object, so common
subexpression elimination happens as the graph is built and nodes compare by identity.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from jitnet.ir import dtypes


class Const:
    """A constant array as a hashable attribute (hashed by its bytes)."""

    __slots__ = ("_key", "value")

    def __init__(self, value: np.ndarray):
        self.value = np.array(value, order="C")  # a copy: ascontiguousarray would make 0-d 1-d
        self.value.setflags(write=False)
        self._key = (self.value.shape, self.value.dtype.str, self.value.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, Const) and self._key == other._key

    def __repr__(self) -> str:
        v = self.value
        return repr(v.item()) if v.size == 1 else f"<const {v.dtype}{list(v.shape)}>"


_interned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_next_id = 0


class Node:
    """One value of the graph: `op` applied to `inputs`, with static `attrs`."""

    __slots__ = ("__weakref__", "attrs", "dtype", "id", "inputs", "op", "shape")

    def __new__(cls, op: str, inputs: tuple, attrs: dict, shape: tuple, dtype: np.dtype):
        global _next_id
        key = (op, inputs, tuple(sorted(attrs.items())), shape, dtype)
        node = _interned.get(key)
        if node is None:
            node = object.__new__(cls)
            node.op, node.inputs, node.attrs = op, inputs, attrs
            node.shape, node.dtype = shape, dtype
            node.id = _next_id
            _next_id += 1
            _interned[key] = node
        return node

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"%{self.id}:{type_str(self)}"


def type_str(node: Node) -> str:
    return f"{dtypes.short_name(node.dtype)}[{','.join(map(str, node.shape))}]"


def toposort(outputs) -> list[Node]:
    """Nodes reachable from `outputs`, producers before consumers (dead code is never visited)."""
    order, seen = [], set()
    for root in outputs:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((i, False) for i in reversed(node.inputs) if i not in seen)
    return order


@dataclass
class Graph:
    """A traced function: its input nodes (in argument order) and output nodes."""

    inputs: list[Node]
    outputs: list[Node]
    captured: list = field(default_factory=list)  # runtime Arrays read at each call, one per "capture" input

    def nodes(self) -> list[Node]:
        return toposort(self.outputs)

    def consumers(self) -> dict[Node, list[Node]]:
        users: dict[Node, list[Node]] = {}
        for node in self.nodes():
            for i in node.inputs:
                users.setdefault(i, []).append(node)
        return users

    def __str__(self) -> str:
        lines = []
        for node in self.nodes():
            args = ", ".join(f"%{i.id}" for i in node.inputs)
            attrs = ", ".join(f"{k}={v!r}" for k, v in sorted(node.attrs.items()))
            inner = ", ".join(x for x in (args, attrs) if x)
            lines.append(f"  %{node.id}:{type_str(node)} = {node.op}({inner})")
        outs = ", ".join(f"%{o.id}" for o in self.outputs)
        return "\n".join(lines + [f"  return {outs}"])
