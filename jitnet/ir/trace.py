"""Tracing: running the user's Python function on Tracers records IR nodes.

`apply` is the one door into the graph: it checks an op's shape and dtype rules and turns a failed
rule into a TraceError that names the op, the shapes and the user's source line.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np

from jitnet.errors import TraceError, TraceShapeError, TraceTypeError
from jitnet.ir import dtypes
from jitnet.ir.node import Const, Node
from jitnet.ir.opdefs import OPS

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tracer:
    """A symbolic array during tracing. `weak` marks values born of Python scalars (see dtypes)."""

    __slots__ = ("node", "weak")
    __array_priority__ = 1000  # numpy defers to our operators: ndarray + Tracer -> Tracer

    def __init__(self, node: Node, weak: bool = False):
        self.node = node
        self.weak = weak

    @property
    def shape(self) -> tuple:
        return self.node.shape

    @property
    def dtype(self) -> np.dtype:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    @property
    def size(self) -> int:
        return self.node.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __bool__(self):
        raise trace_error(
            TraceTypeError,
            "bool",
            f"the truth value of a traced array {self.shape} is not known while tracing; "
            "use jn.where for data-dependent choices, or static_argnums for Python control flow",
        )

    def __array__(self, *args, **kwargs):
        raise trace_error(TraceTypeError, "asarray", "cannot turn a traced array into a numpy array while tracing")

    def __repr__(self) -> str:
        return f"Tracer({dtypes.short_name(self.dtype)}{list(self.shape)})"


class TraceContext:
    """The state of one trace: the captured runtime arrays (implicit inputs) and their nodes."""

    def __init__(self):
        self.captured: list = []
        self._capture_nodes: dict[int, Node] = {}

    def capture(self, array, shape: tuple, dtype: np.dtype) -> Tracer:
        node = self._capture_nodes.get(id(array))
        if node is None:
            attrs = {"slot": len(self.captured), "shape": shape, "dtype": dtype.str}
            node = Node("capture", (), attrs, shape, dtype)
            self._capture_nodes[id(array)] = node
            self.captured.append(array)
        return Tracer(node)


class _TraceStack(threading.local):
    """The traces open in this thread, innermost last. Per thread: a compiled call in one thread must
    not join a trace another thread has open (it would return a Tracer), nor capture its arrays."""

    def __init__(self):
        self.contexts: list[TraceContext] = []


_stack = _TraceStack()


def current() -> TraceContext | None:
    contexts = _stack.contexts
    return contexts[-1] if contexts else None


class tracing:
    """`with tracing() as ctx:` — ops inside build nodes instead of running."""

    def __enter__(self) -> TraceContext:
        ctx = TraceContext()
        _stack.contexts.append(ctx)
        return ctx

    def __exit__(self, *exc) -> None:
        _stack.contexts.pop()


def input_tracer(slot: int, shape: tuple, dtype: np.dtype, weak: bool = False) -> Tracer:
    return Tracer(Node("input", (), {"slot": slot, "shape": shape, "dtype": dtype.str}, shape, dtype), weak)


def const(value: Any, dtype=None, weak: bool = False) -> Tracer:
    arr = np.asarray(value, dtype=dtype)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in dtypes.SUPPORTED:
        if arr.dtype.kind == "f":
            arr = arr.astype(dtypes.DEFAULT_FLOAT)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(dtypes.DEFAULT_INT)
        else:
            dtypes.canonical(arr.dtype)
    c = Const(arr)
    return Tracer(Node("const", (), {"value": c}, c.value.shape, c.value.dtype), weak)


def apply(op: str, inputs: tuple[Tracer, ...], weak: bool = False, **attrs) -> Tracer:
    """Add node `op(inputs, attrs)`, after checking the op's shape and dtype rules."""
    opdef = OPS[op]
    nodes = tuple(t.node for t in inputs)
    shapes = [n.shape for n in nodes]
    try:
        shape = tuple(int(d) for d in opdef.shape(shapes, attrs))
        dtype = np.dtype(opdef.dtype([n.dtype for n in nodes], attrs))
    except ValueError as e:
        raise trace_error(TraceShapeError, op, f"{e} (input shapes {_fmt_shapes(shapes)})") from None
    except TypeError as e:
        types = ", ".join(dtypes.short_name(n.dtype) for n in nodes)
        raise trace_error(TraceTypeError, op, f"{e} (input dtypes {types})") from None
    return Tracer(Node(op, nodes, attrs, shape, dtype), weak)


def _fmt_shapes(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def user_location() -> str:
    """file:line of the innermost frame outside the jitnet package: the line the user wrote."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def trace_error(cls: type[TraceError], op: str, message: str) -> TraceError:
    return cls(f"{op}: {message}, at {user_location()}")


# ---- operands ----


def is_runtime_array(x) -> bool:
    return getattr(x, "_jitnet_array", False)


def lift(x: Any) -> Tracer:
    """Any operand as a Tracer: Python scalars are weak constants, numpy data strong constants,
    runtime Arrays captured as implicit inputs of the current trace."""
    if isinstance(x, Tracer):
        return x
    if is_runtime_array(x):
        return current().capture(x, x.shape, x.dtype)
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return const(x, dtypes.weak_storage(x), weak=True)
    if isinstance(x, (list, tuple)) and not numbers_only(x):
        raise trace_error(TraceTypeError, "lift", "a list of arrays is not an array; combine them with jn.concatenate")
    if isinstance(x, (list, tuple)):
        return const(list_array(x))
    if isinstance(x, (np.ndarray, np.generic)):
        return const(np.asarray(x))
    raise trace_error(TraceTypeError, "lift", f"cannot use a {type(x).__name__} as an array")


def numbers_only(x) -> bool:
    """A (nested) list or tuple of plain numbers: array data, as numpy reads it."""
    if isinstance(x, (list, tuple)):
        return all(numbers_only(v) for v in x)
    return isinstance(x, (bool, int, float, np.generic))


def list_array(x) -> np.ndarray:
    """A nested list of numbers as an array of the default dtypes, as `jn.asarray` makes it."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        return arr.astype(dtypes.DEFAULT_FLOAT)
    return arr.astype(dtypes.DEFAULT_INT) if arr.dtype.kind in "iu" else arr
