"""The numpy reference interpreter: runs any graph with each op's numpy reference. The oracle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jitnet.ir.node import Graph, Node, toposort
from jitnet.ir.opdefs import OPS


def evaluate(node: Node, inputs: Sequence[np.ndarray] = (), captured: Sequence[np.ndarray] = ()) -> np.ndarray:
    return run(Graph([], [node]), inputs, captured)[0]


def run(graph: Graph, inputs: Sequence[np.ndarray], captured: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
    values: dict[Node, np.ndarray] = {}
    for node in toposort(graph.outputs):
        if node.op == "input":
            value = inputs[node.attrs["slot"]]
        elif node.op == "capture":
            value = captured[node.attrs["slot"]]
        else:
            args = [values[i] for i in node.inputs]
            value = OPS[node.op].ref(*args, **node.attrs)
        value = np.asarray(value)
        if value.shape != node.shape or value.dtype != node.dtype:
            value = np.ascontiguousarray(np.broadcast_to(value, node.shape)).astype(node.dtype, copy=False)
        values[node] = value
    return [values[o] for o in graph.outputs]
