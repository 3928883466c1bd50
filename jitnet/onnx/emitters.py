"""IR op -> ONNX nodes: one emitter per op in `EMITTERS`, written against opset 18.

An emitter `rule(builder, node, args) -> name` gets the ONNX names of the node's inputs and returns
the name of the value it made. The IR is strict (broadcasting and promotion are explicit `expand`
and `cast` nodes), so most ops are one ONNX node; the rest spell the IR's semantics out: indices
count from the end when negative and are clamped into the axis (`take`, `scatter_add`), the `sum`
of bools and int32 is int64, pooling pads with -inf (max) or zeros that count (avg). Where ONNX has
no op, the nearest spelling stands in: expm1 and log1p as exp(x) - 1 and log(1 + x) (less accurate
near 0), and onnxruntime's Pow, Max and Min decide integer negative powers and NaN ties their way;
its ReduceMax/ReduceMin may skip a NaN that jitnet propagates, and its ArgMax need not pick the
first NaN as jitnet does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from jitnet.ir.node import Node, type_str
from jitnet.ir.opdefs import OPS

_SMALL = 16  # constants of at most this many elements are Constant nodes, larger ones initializers
_BEFORE_START = -(2**63)  # a Slice end before index 0 (ONNX clamps it to -1 for a negative step)


class Builder:
    """The ONNX nodes and initializers made so far and the ONNX name of each IR value."""

    def __init__(self, input_names: list[str], captured: list[tuple[str, np.ndarray]], reserved: list[str]):
        self.input_names, self.captured = input_names, captured  # captured: (name, value) per slot
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[Node, str] = {}
        self._taken = set(input_names) | set(reserved) | {name for name, _ in captured}
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        """A value name no input, output, parameter or earlier value has."""
        n = len(self._taken)
        while f"{hint}_{n}" in self._taken:
            n += 1
        self._taken.add(f"{hint}_{n}")
        return f"{hint}_{n}"

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs):
        """Add one node; its output's name (a list of names when it has several)."""
        names = [self.fresh(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def initializer(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, value, dtype=None) -> str:
        """A constant, made once per value: inline when small, an initializer when large."""
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            if arr.size > _SMALL:
                self._consts[key] = self.initializer(self.fresh("const"), arr)
            else:
                self._consts[key] = self.op("Constant", [], value=numpy_helper.from_array(arr))
        return self._consts[key]

    def ints(self, values) -> str:
        return self.const(np.array(list(values), np.int64))


def emit(builder: Builder, node: Node) -> None:
    """Add the ONNX form of `node`, whose inputs were emitted before it."""
    rule = EMITTERS.get(node.op)
    if rule is None:
        raise NotImplementedError(f"jn.onnx.export: op {node.op!r} ({type_str(node)}) has no ONNX form")
    builder.names[node] = rule(builder, node, [builder.names[i] for i in node.inputs])


Emitter = Callable[[Builder, Node, list[str]], str]


def _same(op_type: str) -> Emitter:
    """Ops that are one ONNX op of the same meaning."""
    return lambda b, n, x: b.op(op_type, x)


def _tensor_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _zeros(b: Builder, shape, dtype) -> str:
    return b.op("ConstantOfShape", [b.ints(shape)], value=numpy_helper.from_array(np.zeros(1, dtype)))


# ---- sources ----


def _capture(b: Builder, n: Node, x: list[str]) -> str:
    name, value = b.captured[n.attrs["slot"]]
    return b.initializer(name, value)


def _iota(b: Builder, n: Node, x: list[str]) -> str:
    """The values along the axis as a constant, broadcast over the other axes."""
    a, shape = n.attrs, tuple(n.attrs["shape"])
    line = OPS["iota"].ref(shape=(shape[a["axis"]],), axis=0, start=a["start"], step=a["step"], dtype=a["dtype"])
    line = line.reshape([-1 if d == a["axis"] else 1 for d in range(len(shape))])
    return b.op("Expand", [b.const(line), b.ints(shape)])


# ---- elementwise ----


def _relu(b: Builder, n: Node, x: list[str]) -> str:
    return b.op("Relu", x) if n.dtype.kind == "f" else b.op("Max", [x[0], b.const(0, n.dtype)])


def _mix32(b: Builder, n: Node, x: list[str]) -> str:
    """One round of dropout's hash (opdefs._mix32_ref) in int64 arithmetic; >> of a non-negative
    value is a division."""
    a = n.attrs

    def c(v):
        return b.const(v, np.int64)

    y = b.op("BitwiseAnd", [b.op("BitwiseXor", x), c(0xFFFFFFFF)])
    z = b.op("BitwiseXor", [y, b.op("Div", [y, c(1 << a["shift"])])])
    high = b.op("BitwiseAnd", [b.op("Mul", [z, c(a["hi"])]), c(0xFFFF)])
    total = b.op("Add", [b.op("Mul", [z, c(a["lo"])]), b.op("Mul", [high, c(1 << 16)])])
    return b.op("BitwiseAnd", [total, c(0xFFFFFFFF)])


def _where(b: Builder, n: Node, x: list[str]) -> str:
    """onnxruntime's Where has no bool kernel: a select between bools is (c and a) or (not c and b)."""
    if n.dtype != np.bool_:
        return b.op("Where", x)
    c, a, other = x
    return b.op("Or", [b.op("And", [c, a]), b.op("And", [b.op("Not", [c]), other])])


# ---- movement ----


def _slice(b: Builder, n: Node, x: list[str]) -> str:
    src = n.inputs[0].shape
    parts = [
        (d, begin, end if end >= 0 else _BEFORE_START, step)
        for d, (begin, end, step) in enumerate(n.attrs["slices"])
        if (begin, end, step) != (0, src[d], 1)
    ]
    if not parts:
        return b.op("Identity", x)
    axes, starts, ends, steps = zip(*parts)
    return b.op("Slice", [x[0], b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)])


def _pad(b: Builder, n: Node, x: list[str]) -> str:
    widths = n.attrs["widths"]
    pads = [lo for lo, _ in widths] + [hi for _, hi in widths]
    return b.op("Pad", [x[0], b.ints(pads), b.const(n.attrs["value"], n.dtype)], mode="constant")


def _clamped(b: Builder, ind: str, dtype: np.dtype, size: int) -> str:
    """Indices as the IR reads them: negative ones count from the end, the rest clamped into the axis."""
    wrapped = b.op("Add", [ind, b.const(size, dtype)])
    ind = b.op("Where", [b.op("Less", [ind, b.const(0, dtype)]), wrapped, ind])
    return b.op("Clip", [ind, b.const(0, dtype), b.const(max(size - 1, 0), dtype)])


def _take(b: Builder, n: Node, x: list[str]) -> str:
    (src, ind), axis = n.inputs, n.attrs["axis"]
    return b.op("Gather", [x[0], _clamped(b, x[1], ind.dtype, src.shape[axis])], axis=axis)


def _scatter_add(b: Builder, n: Node, x: list[str]) -> str:
    """As (outer, axis, inner): ScatterElements adds each value at its index along the middle axis."""
    axis, shape, k = n.attrs["axis"], tuple(n.attrs["shape"]), n.inputs[1].size
    outer, size, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    values = b.op("Reshape", [x[0], b.ints([outer, k, inner])])
    ind = b.op("Reshape", [_clamped(b, x[1], n.inputs[1].dtype, size), b.ints([1, k, 1])])
    ind = b.op("Expand", [ind, b.ints([outer, k, inner])])
    out = b.op("ScatterElements", [_zeros(b, [outer, size, inner], n.dtype), ind, values], axis=1, reduction="add")
    return b.op("Reshape", [out, b.ints(shape)])


# ---- reductions and row-wise ops ----


def _reduce(op_type: str) -> Emitter:
    def rule(b: Builder, n: Node, x: list[str]) -> str:
        src = x[0] if n.inputs[0].dtype == n.dtype else b.op("Cast", x, to=_tensor_type(n.dtype))  # int sums
        axes = sorted(n.attrs["axes"])
        if not axes:  # ONNX reads no axes as all axes
            return b.op("Identity", [src])
        return b.op(op_type, [src, b.ints(axes)], keepdims=int(n.attrs["keepdims"]))

    return rule


def _argmax(b: Builder, n: Node, x: list[str]) -> str:
    (axis,) = n.attrs["axes"]
    return b.op("ArgMax", x, axis=axis, keepdims=int(n.attrs["keepdims"]))


def _rowwise(op_type: str) -> Emitter:
    return lambda b, n, x: b.op(op_type, x, axis=n.attrs["axis"])


# ---- extern: convolution, pooling and their gradients ----


def _window(n: Node) -> dict:
    (ph, pw), stride = n.attrs["padding"], n.attrs["stride"]
    return {"strides": list(stride), "pads": [ph, pw, ph, pw]}


def _output_padding(n: Node, kernel) -> list[int]:
    """The rows and columns of the input a strided window never reached: ConvTranspose adds them back."""
    (ph, pw), (sh, sw) = n.attrs["padding"], n.attrs["stride"]
    grid = n.inputs[0].shape[2:]  # the cotangent's (Ho, Wo)
    return [size - (s * (o - 1) + k - 2 * p) for size, o, k, s, p in zip(n.shape[2:], grid, kernel, (sh, sw), (ph, pw))]


def _conv2d(b: Builder, n: Node, x: list[str]) -> str:
    return b.op("Conv", x, kernel_shape=list(n.inputs[1].shape[2:]), **_window(n))


def _pool(op_type: str, **extra) -> Emitter:
    return lambda b, n, x: b.op(op_type, x, kernel_shape=list(n.attrs["kernel"]), **_window(n), **extra)


def _conv2d_input_grad(b: Builder, n: Node, x: list[str]) -> str:
    """The transposed convolution of the cotangent with the weight."""
    kernel = n.inputs[1].shape[2:]
    return b.op("ConvTranspose", x, kernel_shape=list(kernel), output_padding=_output_padding(n, kernel), **_window(n))


def _conv2d_weight_grad(b: Builder, n: Node, x: list[str]) -> str:
    """A convolution over the batch: x as (C, N, H, W) by the cotangent as (O, N, Ho, Wo) kernels,
    dilated by the stride, cropped to the weight's window and put back as (O, C, kh, kw)."""
    (ph, pw), stride = n.attrs["padding"], n.attrs["stride"]
    xt, gt = (b.op("Transpose", [v], perm=[1, 0, 2, 3]) for v in x)
    y = b.op("Conv", [xt, gt], kernel_shape=list(n.inputs[1].shape[2:]), dilations=list(stride), pads=[ph, pw, ph, pw])
    y = b.op("Slice", [y, b.ints([0, 0]), b.ints(n.shape[2:]), b.ints([2, 3])])
    return b.op("Transpose", [y], perm=[1, 0, 2, 3])


def _avg_pool2d_vjp(b: Builder, n: Node, x: list[str]) -> str:
    """Each channel's cotangent spread evenly over its windows: a grouped transposed convolution."""
    (kh, kw), channels = n.attrs["kernel"], n.shape[1]
    weight = b.const(np.full((channels, 1, kh, kw), 1.0 / (kh * kw), n.dtype))
    return b.op(
        "ConvTranspose",
        [x[0], weight],
        group=channels,
        kernel_shape=[kh, kw],
        output_padding=_output_padding(n, (kh, kw)),
        **_window(n),
    )


def _max_pool2d_vjp(b: Builder, n: Node, x: list[str]) -> str:
    """Each window's cotangent added at its first maximum, which MaxPool's Indices output names (an
    index into the whole flattened input)."""
    _, where = b.op("MaxPool", [x[0]], outputs=2, kernel_shape=list(n.attrs["kernel"]), **_window(n))
    flat = [b.op("Reshape", [v, b.ints([-1])]) for v in (where, x[1])]
    out = b.op("ScatterElements", [_zeros(b, [n.size], n.dtype), *flat], axis=0, reduction="add")
    return b.op("Reshape", [out, b.ints(n.shape)])


EMITTERS: dict[str, Emitter] = {
    # sources
    "input": lambda b, n, x: b.input_names[n.attrs["slot"]],
    "capture": _capture,
    "const": lambda b, n, x: b.const(n.attrs["value"].value),
    "iota": _iota,
    # elementwise
    "neg": _same("Neg"),
    "exp": _same("Exp"),
    "expm1": lambda b, n, x: b.op("Sub", [b.op("Exp", x), b.const(1, n.dtype)]),
    "log": _same("Log"),
    "log1p": lambda b, n, x: b.op("Log", [b.op("Add", [x[0], b.const(1, n.dtype)])]),
    "sqrt": _same("Sqrt"),
    "rsqrt": lambda b, n, x: b.op("Reciprocal", [b.op("Sqrt", x)]),
    "square": lambda b, n, x: b.op("Mul", [x[0], x[0]]),
    "reciprocal": _same("Reciprocal"),
    "abs": _same("Abs"),
    "sign": _same("Sign"),
    "tanh": _same("Tanh"),
    "sigmoid": _same("Sigmoid"),
    "erf": _same("Erf"),
    "sin": _same("Sin"),
    "cos": _same("Cos"),
    "acos": _same("Acos"),
    "relu": _relu,
    "leaky_relu": lambda b, n, x: b.op("LeakyRelu", x, alpha=float(n.attrs["slope"])),
    "elu": lambda b, n, x: b.op("Elu", x, alpha=float(n.attrs["alpha"])),
    "logical_not": _same("Not"),
    "add": _same("Add"),
    "sub": _same("Sub"),
    "mul": _same("Mul"),
    "div": _same("Div"),
    "pow": _same("Pow"),
    "maximum": _same("Max"),
    "minimum": _same("Min"),
    "logical_and": _same("And"),
    "logical_or": _same("Or"),
    "lt": _same("Less"),
    "le": _same("LessOrEqual"),
    "gt": _same("Greater"),
    "ge": _same("GreaterOrEqual"),
    "eq": _same("Equal"),
    "ne": lambda b, n, x: b.op("Not", [b.op("Equal", x)]),
    "mix32": _mix32,
    "cast": lambda b, n, x: b.op("Cast", x, to=_tensor_type(n.dtype)),
    "where": _where,
    "tag": _same("Identity"),
    # movement
    "reshape": lambda b, n, x: b.op("Reshape", [x[0], b.ints(n.shape)]),
    "permute": lambda b, n, x: b.op("Transpose", x, perm=list(n.attrs["axes"])),
    "expand": lambda b, n, x: b.op("Expand", [x[0], b.ints(n.shape)]),
    "slice": _slice,
    "pad": _pad,
    "concat": lambda b, n, x: b.op("Concat", x, axis=n.attrs["axis"]),
    "take": _take,
    "scatter_add": _scatter_add,
    # reductions and row-wise
    "sum": _reduce("ReduceSum"),
    "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"),
    "argmax": _argmax,
    "logsumexp": _reduce("ReduceLogSumExp"),
    "softmax": _rowwise("Softmax"),
    "log_softmax": _rowwise("LogSoftmax"),
    # extern
    "matmul": _same("MatMul"),
    "conv2d": _conv2d,
    "conv2d_input_grad": _conv2d_input_grad,
    "conv2d_weight_grad": _conv2d_weight_grad,
    "max_pool2d": _pool("MaxPool"),
    "avg_pool2d": _pool("AveragePool", count_include_pad=1),
    "max_pool2d_vjp": _max_pool2d_vjp,
    "avg_pool2d_vjp": _avg_pool2d_vjp,
}
