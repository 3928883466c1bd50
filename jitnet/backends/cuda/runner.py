"""Running a compiled program on the GPU with few host calls.

numba's dispatcher spends about 20 us of host time per kernel launch (typing the arguments,
marshalling them, building a launch configuration); a training step of 20 to 40 kernels is then
bound by the host, not the GPU. A `ProgramRunner` runs a program's plans (launch.py) another way:

- direct: each kernel launched through the driver (driver.py) with its configuration and function
  looked up once; per launch only the buffers' addresses change.
- graph: the whole program captured once into a CUDA graph over buffers the runner owns (its
  inputs' staging copies, its intermediates, its outputs), then replayed per call: one copy kernel
  brings the call's inputs into the staging buffers, one graph launch runs every kernel, one copy
  kernel moves the outputs into fresh buffers handed to the caller. Three launches per call
  whatever the program's size; used for programs of GRAPH_MIN_LAUNCHES kernels or more. Its
  buffers live as long as the runner (as a captured torch CUDA graph's memory pool does).

The first call decides. It runs the program the plain way (numba's dispatcher), then the chosen
way on the same inputs, and compares the outputs bit for bit (the same kernels on the same inputs
give the same bits: no kernel uses atomics). A failure or a difference warns and falls back to the
next way (graph, then direct, then plain): a faster launch path may be unavailable on some driver
or library version, but it never returns a different number. `JITNET_CUDA_LAUNCH` picks the
fastest way allowed: graph (default), direct or plain. numba's simulator always runs plainly.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from jitnet.backends.cuda.driver import Driver, array_params
from jitnet.backends.cuda.kernels import BLOCK, COPY_PAIRS, copy_blocks, copy_source
from jitnet.backends.cuda.launch import Plan
from jitnet.codegen import cache
from jitnet.runtime.array import Array
from jitnet.runtime.executor import Program
from jitnet.runtime.memory import BufferPool

MODES = ("graph", "direct", "plain")  # fastest first
GRAPH_MIN_LAUNCHES = 4  # a graph costs three launches per call (copy in, graph, copy out)


def launch_mode() -> str:
    """JITNET_CUDA_LAUNCH: the fastest way a program's kernels may be launched."""
    mode = os.environ.get("JITNET_CUDA_LAUNCH", "graph").strip().lower() or "graph"
    if mode not in MODES:
        raise ValueError(f"JITNET_CUDA_LAUNCH={mode!r} is not one of {MODES}")
    return mode


class ProgramRunner:
    """Runs one Program's calls (see the module doc); callable as runner(inputs, captured)."""

    def __init__(self, program: Program, driver: Driver, mode: str = "graph"):
        self.program, self.driver = program, driver
        plans = all(isinstance(step.fn, Plan) for step in program.steps)
        self.launches = sum(len(step.fn.launches) for step in program.steps) if plans else 0
        self.mode = "plain" if mode == "plain" or not plans else "new"
        start = MODES.index(mode)
        if self.launches < GRAPH_MIN_LAUNCHES:
            start = max(start, MODES.index("direct"))
        self._candidates = [m for m in MODES[start:] if m != "plain"]
        self._lock = threading.Lock()  # the graph's buffers are shared by every call
        self._prepared: list | None = None  # per step: ([(function, config, args)], scratch)
        self._graph = None

    def __call__(self, inputs: list, captured: list) -> list[Array]:
        mode = self.mode
        if mode == "plain":
            return self.program.run(inputs, captured)
        if mode == "direct":
            return self._direct(inputs, captured)
        with self._lock:
            if self.mode == "new":
                return self._first(inputs, captured)
            return self._replay(inputs, captured)

    # ---- the first call: choose, checking against the plain way ----

    def _first(self, inputs: list, captured: list) -> list[Array]:
        reference = self.program.run(inputs, captured)
        for mode in self._candidates:
            try:
                outputs = self._direct(inputs, captured) if mode == "direct" else self._replay(inputs, captured)
            except Exception as e:  # an unsupported driver call, an older cuda.core: the next way
                self._graph = None
                warnings.warn(
                    f"jitnet: {mode} CUDA launches failed ({type(e).__name__}: {e}); this program uses the next "
                    "way (JITNET_CUDA_LAUNCH sets which ways are tried)",
                    RuntimeWarning,
                    stacklevel=4,
                )
                continue
            if _same(reference, outputs):
                self.mode = mode
                return reference
            self._graph = None
            warnings.warn(
                f"jitnet: {mode} CUDA launches gave different results than numba's launches; this program "
                "uses the next way (please report this)",
                RuntimeWarning,
                stacklevel=4,
            )
        self.mode = "plain"
        return reference

    # ---- direct launches ----

    def _prepare(self) -> list:
        if self._prepared is None:
            d, allocate = self.driver, self.program.device.pool.allocate
            self._prepared = [
                (
                    [(d.function(x.kernel), d.config(x.grid, x.block), x.args) for x in step.fn.launches],
                    step.fn.scratch(allocate),
                )
                for step in self.program.steps
            ]
        return self._prepared

    def _launch(self, target, k: int, buffers: list) -> None:
        launches, scratch = self._prepared[k]
        buffers = buffers + scratch
        address, launch = self.driver.address, self.driver.launch
        for function, config, args in launches:
            launch(target, config, function, array_params([buffers[i] for i in args], address))

    def _direct(self, inputs: list, captured: list) -> list[Array]:
        self._prepare()
        program = self.program
        slots = program.bind(inputs, captured)
        program.execute(slots, lambda k, step, buffers: self._launch(None, k, buffers))
        return program.collect(slots)

    # ---- graph replay ----

    def _replay(self, inputs: list, captured: list) -> list[Array]:
        if self._graph is None:
            self._graph = _Graph(self, inputs, captured)
        return self._graph.replay(inputs, captured)


class _Graph:
    """A program captured over buffers it owns, with its copy kernels (see the module doc)."""

    def __init__(self, runner: ProgramRunner, inputs: list, captured: list):
        program, driver = runner.program, runner.driver
        runner._prepare()
        self.program, self.driver = program, driver
        self.held: list = []  # every buffer the graph reads or writes: owned here, for the graph's life
        device_allocate = program.device.pool.allocate

        def allocate(size, dtype):
            self.held.append(device_allocate(size, dtype))
            return self.held[-1]

        slots = program.bind(inputs, captured)
        # (source list, index, staging buffer) of each input and capture
        self.staged = [(0, i, allocate(inputs[i].size, inputs[i].dtype)) for i, _ in program.input_slots]
        self.staged += [(1, i, allocate(captured[i].size, captured[i].dtype)) for i, _ in program.capture_slots]
        for (_, _, buf), (_, slot) in zip(self.staged, [*program.input_slots, *program.capture_slots]):
            slots[slot] = buf
        pool = BufferPool(allocate, driver.address)  # intermediates reuse each other's memory, as in a plain run
        builder = driver.begin_graph()
        try:
            program.execute(slots, lambda k, step, buffers: runner._launch(builder, k, buffers), pool)
        except BaseException:
            driver.end_graph(builder)
            raise
        self.graph = driver.end_graph(builder)
        self.results = [(slots[slot], shape) for slot, shape in program.outputs]
        self.copy_in = self._copies([buf for _, _, buf in self.staged])
        self.copy_out = self._copies([buf for buf, _ in self.results])

    def _copies(self, buffers: list) -> list:
        """Per copy kernel: (function, config, indices into `buffers`), non-empty buffers only."""
        todo = [i for i, buf in enumerate(buffers) if buf.size]
        kernels = []
        for at in range(0, len(todo), COPY_PAIRS):
            chunk = todo[at : at + COPY_PAIRS]
            kernel = cache.load(copy_source([buffers[i].dtype for i in chunk]), "copy")
            grid = (copy_blocks(max(buffers[i].size for i in chunk)), 1, 1)
            kernels.append((self.driver.function(kernel), self.driver.config(grid, BLOCK), chunk))
        return kernels

    def _copy(self, kernels: list, pairs: list) -> None:
        """Launch the copy kernels over pairs[i] = (dst, src)."""
        address, launch = self.driver.address, self.driver.launch
        for function, config, chunk in kernels:
            launch(None, config, function, array_params([buf for i in chunk for buf in pairs[i]], address))

    def replay(self, inputs: list, captured: list) -> list[Array]:
        program, take = self.program, self.program.device.pool.take
        sources = (inputs, captured)
        self._copy(self.copy_in, [(buf, sources[which][i]) for which, i, buf in self.staged])
        self.driver.launch_graph(self.graph)
        outs = [take(buf.size, buf.dtype) for buf, _ in self.results]
        self._copy(self.copy_out, [(out, buf) for out, (buf, _) in zip(outs, self.results)])
        claim, device = program.device.pool.claim, program.device
        return [Array(claim(out), shape, device) for out, (_, shape) in zip(outs, self.results)]


def _same(reference: list[Array], outputs: list[Array]) -> bool:
    """Bit for bit (NaNs included)."""
    for a, b in zip(reference, outputs, strict=True):
        x, y = np.ascontiguousarray(a.numpy()), np.ascontiguousarray(b.numpy())
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)):
            return False
    return True
