"""Reverse-mode differentiation: IR in, IR out.

The walk is micrograd's: visit the nodes between the outputs and the values being differentiated
in reverse topological order, and push each node's cotangent to its inputs through the op's VJP
rule (from the op table). The rules build ordinary nodes with the public ops, so the backward graph
is simplified, fused and compiled like any forward graph, and can itself be differentiated. The ops
namespace reaches the rules from here (`RuleOps`), so the op table imports nothing from the layers
above it, tracing included.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from jitnet.errors import TraceTypeError
from jitnet.ir import dtypes
from jitnet.ir.node import Node, toposort
from jitnet.ir.opdefs import OPS
from jitnet.ir.trace import Tracer, apply, trace_error


class RuleOps:
    """What a VJP rule's `jn` is: the public ops namespace, plus `apply(op, inputs, **attrs)` for the
    ops that have no public function (conv2d_input_grad, max_pool2d_vjp, ...)."""

    def __init__(self, jn: ModuleType):
        self._jn = jn

    apply = staticmethod(apply)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jn, name)


def backward(outputs: list[Node], cotangents: list[Tracer], wrt: list[Node], jn: ModuleType) -> list[Tracer | None]:
    """Cotangents of `wrt` given cotangents of `outputs`; None where no path carries a gradient.
    `jn` is the public ops namespace the VJP rules are written in."""
    targets = set(wrt)
    order = toposort(outputs)
    carries = set()  # nodes whose value depends on a target through float values
    for node in order:
        if node in targets or (dtypes.is_float(node.dtype) and any(i in carries for i in node.inputs)):
            carries.add(node)

    ct: dict[Node, Tracer] = {}
    rule_ops = RuleOps(jn)

    def accumulate(node: Node, g: Tracer) -> None:
        if g.shape != node.shape or g.dtype != node.dtype:
            raise AssertionError(f"VJP produced {g.dtype}{g.shape} for {node}")
        ct[node] = jn.add(ct[node], g) if node in ct else g

    for out, g in zip(outputs, cotangents):
        if out in carries:
            accumulate(out, g)
    for node in reversed(order):
        g = ct.get(node)
        if g is None or node in targets or not node.inputs:
            continue
        rule = OPS[node.op].vjp
        if rule is None:
            raise trace_error(TraceTypeError, node.op, "has no VJP rule, so it cannot be differentiated")
        inputs = [Tracer(i) for i in node.inputs]
        for inp, g_in in zip(node.inputs, rule(rule_ops, g, Tracer(node), *inputs, **node.attrs)):
            if g_in is not None and inp in carries:
                accumulate(inp, g_in)
    return [ct.get(w) for w in wrt]
