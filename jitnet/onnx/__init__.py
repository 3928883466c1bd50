"""`jn.onnx.export`: a model or function, traced as `jn.compile` traces it, written as an ONNX model.

The exporter reads jitnet's own IR (the graph `compile` builds and simplifies), so every layer that
traces exports, and each IR op maps to ONNX nodes through one table (`emitters.EMITTERS`). `onnx`
is an optional extra: importing this module needs nothing, calling `export` needs `jitnet[onnx]`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jitnet import compiler
from jitnet.ir.node import Graph

if TYPE_CHECKING:
    import onnx

OPSET = 18  # ai.onnx opset of every exported model (onnxruntime 1.32 runs up to 23)


def export(
    model_or_function: Callable,
    example_inputs: Any,
    path: str | os.PathLike | None,
    *,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Trace `model_or_function` on `example_inputs` and write it to `path` as an ONNX model
    (atomically, its folder made); returns the `onnx.ModelProto` (checked with `onnx.checker`).
    `path=None` only returns it.

    `example_inputs`: a tuple is the argument list, anything else the one argument; array leaves of
    pytrees become the graph inputs in flattening order. A `jn.nn.Module` is traced in eval mode (its
    training flags are restored afterwards), and the parameters and buffers its forward reads become
    initializers named by their `state_dict` keys; a function's captured Arrays are `capture_<i>`.
    Shapes are static, those of the example inputs (no dynamic batch dimension). `opset` must be at
    least `OPSET`, the set the emitters are written against. An op with no ONNX form raises
    NotImplementedError naming it.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("jn.onnx.export needs the onnx package: pip install jitnet[onnx]") from None
    from jitnet.onnx.emitters import Builder, emit

    opset = OPSET if opset is None else int(opset)
    if opset < OPSET:
        raise ValueError(f"jn.onnx.export: opset must be >= {OPSET}, got {opset}")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    graph, names = _trace(model_or_function, args)
    in_names = _names("input", input_names, len(graph.inputs))
    out_names = _names("output", output_names, len(graph.outputs))
    captured = [(names.get(id(a), f"capture_{i}"), np.asarray(a)) for i, a in enumerate(graph.captured)]
    clash = sorted(set(in_names) & set(out_names) | (set(in_names) | set(out_names)) & {n for n, _ in captured})
    if clash:
        raise ValueError(
            f"jn.onnx.export: names {clash} are used twice (inputs, outputs and parameters need names of their own)"
        )
    builder = Builder(in_names, captured, out_names)
    for node in graph.nodes():
        emit(builder, node)
    for node, name in zip(graph.outputs, out_names):
        builder.nodes.append(onnx.helper.make_node("Identity", [builder.names[node]], [name]))
    model = _model(onnx, builder, graph, in_names, out_names, opset)
    if path is not None:
        _write(model.SerializeToString(), os.fspath(path))
    return model


def _write(data: bytes, path: str) -> None:
    """Atomically, as `jn.save` writes: a temporary beside the file, then a rename; the folder is made."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _trace(fn: Callable, args: tuple) -> tuple[Graph, dict[int, str]]:
    """The simplified graph compile builds for these arguments (no kernels: the interpreter backend),
    and the state_dict names of a module's Arrays by identity."""
    nn_module = sys.modules.get("jitnet.nn.module")  # loaded if fn is a Module: a function needs no jn.nn
    if nn_module is None or not isinstance(fn, nn_module.Module):
        return compiler.compile(fn, backend="interpret").lower(*args).graph, {}
    modes = {m: m.training for _, m in fn.named_modules()}
    fn.eval()
    try:
        graph = compiler.compile(lambda *a: fn(*a), backend="interpret").lower(*args).graph
    finally:
        for m, mode in modes.items():
            object.__setattr__(m, "training", mode)
    names: dict[int, str] = {}
    for key, value in fn.state_dict().items():
        names.setdefault(id(value), key)
    return graph, names


def _names(kind: str, given: Sequence[str] | None, count: int) -> list[str]:
    if given is None:
        return [kind] if count == 1 else [f"{kind}_{i}" for i in range(count)]
    given = list(given)
    if len(given) != count or len(set(given)) != count or not all(isinstance(n, str) and n for n in given):
        raise ValueError(f"jn.onnx.export: {count} distinct non-empty strings needed as {kind}_names, got {given}")
    return given


def _model(onnx, builder, graph: Graph, in_names: list[str], out_names: list[str], opset: int):
    helper = onnx.helper

    def info(name, node):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(node.dtype), list(node.shape))

    onnx_graph = helper.make_graph(
        builder.nodes,
        "jitnet",
        [info(n, node) for n, node in zip(in_names, graph.inputs)],
        [info(n, node) for n, node in zip(out_names, graph.outputs)],
        initializer=builder.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        onnx_graph, opset_imports=opsets, producer_name="jitnet", ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(model, full_check=True)
    return model
