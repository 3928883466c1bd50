"""What a generated CUDA module runs, as data: its kernels in order, each over some of its buffers.

Every generated module defines `launch = Plan(...)`. Called as `launch(*outputs, *inputs)` a Plan
launches its kernels through numba's dispatcher (the plain path, and the simulator's). Because the
launches are data (kernel, grid, block, which buffers), the program runner (runner.py) can also
launch them through the driver with argument blocks it prepares once, or capture a whole program's
launches into one CUDA graph, without knowing what any kernel computes.

A Plan's scratch buffers (split reductions' partial results) are allocated at its first use and
held by the Plan for the life of the process: every launch goes to one stream, in order, so two
programs that share a module may share its scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np


class Launch(NamedTuple):
    kernel: Any  # a numba CUDA kernel compiled for one signature (`cuda.jit(sig)`)
    grid: tuple[int, int, int]
    block: int
    args: tuple[int, ...]  # indices into the plan's buffers: its parameters, then its scratch


class _Scratch:
    """The scratch buffers of a Plan (and of its reorderings), made once."""

    def __init__(self, specs: Sequence[tuple[int, str]]):
        self.specs = tuple((int(size), np.dtype(dtype)) for size, dtype in specs)
        self.buffers: list | None = None

    def get(self, allocate: Callable) -> list:
        if self.buffers is None:
            self.buffers = [allocate(size, dtype) for size, dtype in self.specs]
        return self.buffers


class Plan:
    """The launches of one generated module over its `n_params` parameter buffers (outputs, then
    inputs) and its scratch buffers ((size, dtype) each)."""

    def __init__(self, n_params: int, launches: Sequence[Launch], scratch: Sequence[tuple[int, str]] = ()):
        self.n_params = n_params
        self.launches = tuple(Launch(k, _grid3(g), int(b), tuple(a)) for k, g, b, a in launches)
        self._scratch = scratch if isinstance(scratch, _Scratch) else _Scratch(scratch)
        for launch in self.launches:
            if any(not 0 <= i < n_params + len(self._scratch.specs) for i in launch.args):
                raise ValueError(f"launch arguments {launch.args} out of range of {n_params} params and scratch")
        self._configured = None

    def scratch(self, allocate: Callable) -> list:
        """This plan's scratch buffers, made by `allocate(size, dtype)` on first use."""
        return self._scratch.get(allocate)

    def __call__(self, *params) -> None:
        """Launch every kernel through numba's dispatcher, on the default stream."""
        if len(params) != self.n_params:
            raise TypeError(f"this kernel takes {self.n_params} buffers, got {len(params)}")
        if not self.launches:
            return
        from numba import cuda

        if self._configured is None:
            self._configured = [launch.kernel[launch.grid, launch.block] for launch in self.launches]
        buffers = [*params, *self.scratch(cuda.device_array)]
        for configured, launch in zip(self._configured, self.launches):
            configured(*[buffers[i] for i in launch.args])

    def reorder(self, order: Sequence[int], n_params: int) -> Plan:
        """The same launches for a caller passing `n_params` buffers (out, *inputs) in another
        order: parameter j + 1 of this plan is the caller's inputs[order[j]]."""
        source = [0, *(i + 1 for i in order)]  # our parameter -> the caller's
        if source == list(range(n_params)) and n_params == self.n_params:
            return self
        n = n_params
        remap = [*source, *range(n, n + len(self._scratch.specs))]
        launches = [Launch(k, g, b, tuple(remap[i] for i in args)) for k, g, b, args in self.launches]
        return Plan(n, launches, self._scratch)


def _grid3(grid) -> tuple[int, int, int]:
    grid = (grid,) if isinstance(grid, int) else tuple(grid)
    return tuple(int(g) for g in (*grid, 1, 1)[:3])


IMPORT = "from jitnet.backends.cuda.launch import Launch, Plan"


def plan_source(n_params: int, launches: Sequence[tuple[str, Any, int, Sequence[int]]] = (), scratch=()) -> str:
    """The `launch = Plan(...)` line of a generated module: launches as (kernel name, grid, block,
    argument indices), scratch as (size, dtype name)."""
    items = ", ".join(f"Launch({k}, {_grid3(g)}, {int(b)}, {tuple(a)})" for k, g, b, a in launches)
    tail = f", scratch={tuple((int(s), str(d)) for s, d in scratch)}" if scratch else ""
    return f"launch = Plan({n_params}, [{items}]{tail})"


def single_source(kernel: str, grid, block: int, n_params: int) -> str:
    """A plan of one kernel taking all the parameters in order."""
    return plan_source(n_params, [(kernel, grid, block, range(n_params))])
