"""`jn.compile`: trace once per signature, simplify, fuse, generate kernels, run.

A compiled function keeps a table from call signature (pytree structure, shapes and dtypes of the
array leaves, types of the scalar leaves, static argument values) to a ready Program, so a repeated
signature goes straight to the executor. The table keeps the `JITNET_CACHE_SIZE` (default 64) most
recently used signatures: a function called with ever new shapes does not hold a program (its graph,
constants and kernels) for each one forever.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jitnet.backends import Backend, default_backend, device_of, get, names
from jitnet.errors import TraceTypeError
from jitnet.ir import dtypes, pytree, trace
from jitnet.ir.fusion import Schedule, schedule
from jitnet.ir.interpret import run as interpret_graph
from jitnet.ir.node import Graph
from jitnet.ir.passes import simplify
from jitnet.ir.trace import apply, input_tracer, lift, trace_error, tracing
from jitnet.retrace import Retraces, Signature
from jitnet.runtime.array import Array
from jitnet.runtime.device import Device
from jitnet.runtime.executor import Program, Step

_SCALARS = (bool, int, float)
DEFAULT_CACHE_SIZE = 64  # programs kept per compiled function (JITNET_CACHE_SIZE overrides)


def cache_size() -> int:
    """How many signatures' programs a compiled function keeps (least recently used go first)."""
    text = os.environ.get("JITNET_CACHE_SIZE", "")
    if not text:
        return DEFAULT_CACHE_SIZE
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"jitnet: JITNET_CACHE_SIZE must be a positive integer, got {text!r}")
    return size


def _leaf_spec(x: Any):
    """The part of a leaf's identity that decides the compiled program: (shape, dtype, weak)."""
    if isinstance(x, Array):
        return (x.shape, x.dtype.char, False)
    if isinstance(x, (np.ndarray, np.generic)):
        try:
            dt = dtypes.canonical(x.dtype)
        except TypeError:
            names = ", ".join(d.name for d in dtypes.SUPPORTED)
            raise TypeError(
                f"jitnet: argument of dtype {x.dtype.name} is not supported; convert it to one of {names}"
            ) from None
        return (x.shape, dt.char, False)
    if isinstance(x, _SCALARS):
        return ((), dtypes.weak_storage(x).char, True)
    raise TypeError(f"jitnet: cannot pass a {type(x).__name__} to a compiled function; use arrays, numbers or pytrees")


def _buffer_on(dev: Device, x: Any, dtype_char: str):
    """A leaf's data as a flat buffer on `dev`: only data not already there is copied."""
    if isinstance(x, Array):
        return x.buffer() if x.device is dev else dev.put(x.device.get(x.buffer()))
    if isinstance(x, np.ndarray):
        return dev.put(np.ascontiguousarray(x, dtype=dtype_char).reshape(-1))
    return dev.put(np.array([x], dtype=dtype_char))


def _backend_of(leaves: list, explicit: str | None) -> str:
    """The explicit backend, else the device the data already lives on, else the default."""
    if explicit is not None:
        return explicit
    return (
        next((x.device.kind for x in leaves if isinstance(x, Array) and not x.device.host), None) or default_backend()
    )


@dataclass
class Compiled:
    """One signature's traced graph and its executable form."""

    graph: Graph
    schedule: Schedule | None
    program: Program | None
    runner: Callable[[list, list], list] | None  # runs the program: the backend's choice (Backend.runner)
    sources: list[str]
    out_treedef: Any
    captured_specs: list[tuple]
    device: Device

    def run(self, leaves: list, specs: tuple) -> list:
        dev = self.device
        buffers = [_buffer_on(dev, x, s[1]) for x, s in zip(leaves, specs)]
        captured = [_buffer_on(dev, a, a.dtype.char) for a in self.graph.captured]
        if self.program is None:
            inputs = [b.reshape(n.shape) for b, n in zip(buffers, self.graph.inputs)]
            outs = interpret_graph(
                self.graph, inputs, [c.reshape(a.shape) for c, a in zip(captured, self.graph.captured)]
            )
            return [Array(dev.storage(np.ascontiguousarray(o).reshape(-1)), o.shape, dev) for o in outs]
        return self.runner(buffers, captured)

    def captures_unchanged(self) -> bool:
        return all((a.shape, a.dtype.char) == s for a, s in zip(self.graph.captured, self.captured_specs))

    def read_bytes(self) -> int:
        """Bytes of the memory a run reads and does not own: inputs, captured arrays, constants."""
        inputs = sum(n.size * n.dtype.itemsize for n in self.graph.inputs)
        captured = sum(a.size * a.dtype.itemsize for a in self.graph.captured)
        consts = sum(buf.nbytes for _, buf in self.program.consts) if self.program is not None else 0
        return inputs + captured + consts

    @property
    def peak_bytes(self) -> int | None:
        """The most device bytes a run needs at once: what it reads, plus the most buffers it holds
        at once (Program.peak_bytes). None for the interpreter, which has no program."""
        return None if self.program is None else self.read_bytes() + self.program.peak_bytes()

    def describe(self) -> str:
        parts = ["== IR ==", str(self.graph)]
        if self.schedule is not None:
            parts += ["== fusion groups ==", str(self.schedule), "== kernels =="]
            parts += self.sources
            parts += [
                "== memory ==",
                f"peak device bytes: {self.peak_bytes} (buffers the program takes: {self.program.peak_bytes()}; "
                f"inputs, captures and constants it reads: {self.read_bytes()})",
            ]
        return "\n".join(parts)


class CompiledFunction:
    def __init__(self, fn: Callable, static_argnums: Sequence[int] = (), backend: str | None = None):
        if backend is not None and backend not in names():
            raise ValueError(f"backend must be one of {names()} or None, got {backend!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.static_argnums = tuple(
            sorted({static_argnums} if isinstance(static_argnums, int) else set(static_argnums))
        )
        self.backend = backend
        self._table: OrderedDict = OrderedDict()  # Signature -> Compiled, least recently used first
        self.traces = 0  # how many times fn was traced (a new signature traces once)
        self._retraces = Retraces(fn, self.static_argnums)

    def expect_many_signatures(self) -> CompiledFunction:
        """No RetraceWarning for this function: it is meant to see many shapes (an eager op's
        per-shape cache). Retrace reasons are still logged."""
        self._retraces.warned = True
        return self

    def _split(self, args: tuple) -> tuple[tuple, tuple]:
        static = tuple(args[i] for i in self.static_argnums if i < len(args))
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        return dynamic, static

    def _lookup(self, args: tuple):
        dynamic, static = self._split(args)
        leaves, treedef = pytree.flatten(dynamic)
        specs = tuple(_leaf_spec(x) for x in leaves)
        backend = _backend_of(leaves, self.backend)
        key = Signature(treedef, specs, static, len(args), backend)
        try:
            entry = self._table.get(key)
        except TypeError:
            raise TypeError(f"jitnet: static arguments must be hashable, got {static!r}") from None
        if entry is None or not entry.captures_unchanged():
            size = cache_size()
            changed = None if entry is None else "a captured array (a closure or global) changed shape or dtype"
            nearest = self._retraces.nearest(reversed(self._table), key)
            entry = self._build(
                args, treedef, specs, backend, self._retraces.record(nearest, key, self.traces + 1, changed)
            )
            self._table[key] = entry
            while len(self._table) > size:
                self._table.popitem(last=False)
        self._table.move_to_end(key)
        return entry, leaves, specs

    def __call__(self, *args):
        if trace.current() is not None:  # called while tracing something else: inline
            return self.fn(*args)
        entry, leaves, specs = self._lookup(args)
        return pytree.unflatten(entry.out_treedef, entry.run(leaves, specs))

    def inspect(self, *args) -> str:
        """The IR, the fusion groups and the generated kernel sources for this signature."""
        return self.lower(*args).describe()

    def lower(self, *args) -> Compiled:
        """This signature's traced graph, fusion schedule, kernel sources and program."""
        return self._lookup(args)[0]

    def _build(self, args, treedef, specs, backend: str, why: str | None = None) -> Compiled:
        self.traces += 1
        target = get(backend)
        dev = device_of(backend)  # a clear error if there is no GPU
        with tracing() as ctx:
            tracers = [input_tracer(i, shape, np.dtype(char), weak) for i, (shape, char, weak) in enumerate(specs)]
            dynamic = iter(pytree.unflatten(treedef, tracers))
            call_args = [args[i] if i in self.static_argnums else next(dynamic) for i in range(len(args))]
            out = self.fn(*call_args)
            out_leaves, out_treedef = pytree.flatten(out)
            outputs = [_output_tracer(x) for x in out_leaves]
        graph = Graph([t.node for t in tracers], [t.node for t in outputs], ctx.captured)
        graph = simplify(graph)
        captured_specs = [(a.shape, a.dtype.char) for a in graph.captured]
        if target.rules is None:  # the interpreter: the graph itself is the program
            entry = Compiled(graph, None, None, None, [], out_treedef, captured_specs, dev)
        else:
            sched = schedule(graph, target.rules)
            program, sources = _build_program(sched, target, dev)
            entry = Compiled(graph, sched, program, target.runner(program), sources, out_treedef, captured_specs, dev)
        if os.environ.get("JITNET_DEBUG", "") not in ("", "0"):
            reason = f"{why}\n" if why else ""
            print(
                f"{reason}jitnet: compiled {getattr(self.fn, '__qualname__', self.fn)}\n{entry.describe()}",
                file=sys.stderr,
            )
        return entry


def _output_tracer(x):
    """A returned value as a tracer; a weak scalar leaves in its default dtype (float32, int64)."""
    try:
        t = lift(x)
        dt = dtypes.weak_result(t.dtype)
        return apply("cast", (t,), t.weak, dtype=dt.str) if t.weak and t.dtype != dt else t
    except Exception:
        raise trace_error(
            TraceTypeError, "return", f"a compiled function must return arrays, got {type(x).__name__}"
        ) from None


def _build_program(sched: Schedule, backend: Backend, dev: Device) -> tuple[Program, list[str]]:
    graph = sched.graph
    slot: dict = {}
    for node in sched.buffers:  # a reshaped buffer (an alias) shares its source's slot
        slot[node] = slot[sched.aliases[node]] if node in sched.aliases else len(set(slot.values()))
    for node in graph.outputs:  # outputs that are small constants or inputs still need a slot
        slot.setdefault(node, len(set(slot.values())))
    last_read: dict = {}  # slot -> the last kernel reading it
    for k, kernel in enumerate(sched.kernels):
        for i in kernel.inputs:
            last_read[slot[i]] = k
    external = {slot[n] for n in slot if n.op in ("input", "capture", "const")}  # memory the program does not own
    keep = external | {slot[n] for n in graph.outputs}
    steps, sources = [], []
    for k, (kernel, (fn, source)) in enumerate(zip(sched.kernels, backend.lower(sched.kernels))):
        sources.append(f"# k{k}\n{source}")
        release = tuple(sorted({slot[i] for i in kernel.inputs if last_read[slot[i]] == k and slot[i] not in keep}))
        outs = tuple((slot[o], o.size, o.dtype) for o in kernel.outputs)
        steps.append(Step(fn, outs, tuple(slot[i] for i in kernel.inputs), release))
    consts = [(slot[n], dev.put(n.attrs["value"].value.reshape(-1))) for n in slot if n.op == "const"]
    captures = [n for n in graph.nodes() if n.op == "capture"]
    program = Program(
        n_slots=len(set(slot.values())),
        input_slots=[(i, slot[n]) for i, n in enumerate(graph.inputs) if n in slot],
        capture_slots=[(n.attrs["slot"], slot[n]) for n in captures],
        consts=consts,
        steps=steps,
        outputs=[(slot[n], n.shape) for n in graph.outputs],
        copy_outputs=frozenset(slot[n] for n in graph.outputs if slot[n] in external),
        device=dev,
    )
    return program, sources


def compile(fn: Callable | None = None, *, static_argnums: Sequence[int] = (), backend: str | None = None):
    """Compile `fn` into fused kernels, traced once per call signature. Usable as `@compile` or
    `@compile(static_argnums=..., backend=...)`."""
    if fn is None:
        return lambda f: CompiledFunction(f, static_argnums, backend)
    return CompiledFunction(fn, static_argnums, backend)
