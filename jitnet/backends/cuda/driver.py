"""The driver calls the program runner (runner.py) makes, through `cuda.core`, the library numba-cuda
itself launches with: launch a loaded kernel with prepared arguments, capture launches into a
graph, launch a graph. Everything goes to the legacy default stream, numba's stream, so launches,
graph replays and numba's own transfers stay in one order and the buffer pool may hand a buffer
to the next kernel as soon as the last one that reads it was launched.

The runner talks to a `Driver`; tests give it a recording fake that runs the launches in numba's
simulator (tests/backends/cuda/test_runner.py).
"""

from __future__ import annotations

from typing import Any, Protocol


class Driver(Protocol):
    def address(self, buf) -> int:
        """The device address of a buffer's first element (0 for an empty one)."""

    def function(self, kernel) -> Any:
        """The loaded kernel of a numba CUDA kernel compiled for one signature."""

    def config(self, grid: tuple[int, int, int], block: int) -> Any:
        """A launch configuration."""

    def launch(self, target, config, function, params: list) -> None:
        """Launch `function` with these flat parameters (see `array_params`), on the default
        stream (target None) or into a graph being captured (target: what begin_graph gave)."""

    def begin_graph(self) -> Any:
        """Start capturing launches into a graph."""

    def end_graph(self, builder) -> Any:
        """Stop capturing; the executable graph."""

    def launch_graph(self, graph) -> None:
        """Replay a graph on the default stream."""


def array_params(buffers, address) -> list:
    """The flat kernel parameters of these 1-D C-contiguous buffers, each as numba passes an array
    (numba-cuda's `_Kernel._prepare_args`): meminfo, parent, nitems, itemsize, data, shape[0],
    strides[0]; integers as intptr_t. `address(buf)` gives a buffer's device address."""
    params: list = []
    for buf in buffers:
        size, itemsize = buf.size, buf.dtype.itemsize
        params += (0, 0, size, itemsize, address(buf), size, itemsize)
    return params


def _core():
    """cuda.core's public names (moved out of `cuda.core.experimental` in its later releases)."""
    try:
        import cuda.core as core

        core.launch  # noqa: B018 - older releases have the package but keep these in .experimental
    except (ImportError, AttributeError):
        import cuda.core.experimental as core
    return core


class CoreDriver:
    """The real driver, through cuda.core."""

    def __init__(self):
        core = _core()
        self._launch, self._config = core.launch, core.LaunchConfig
        self._device = core.Device()
        self._device.set_current()  # numba's primary context
        self.stream = core.Stream.from_handle(0)

    def address(self, buf) -> int:
        return int(buf.gpu_data.device_pointer) if buf.size else 0

    def function(self, kernel):
        (compiled,) = kernel.overloads.values()  # compiled for its one signature when its module loaded
        return compiled._codelibrary.get_cufunc().kernel

    def config(self, grid, block):
        return self._config(grid=tuple(grid), block=(block, 1, 1))

    def launch(self, target, config, function, params) -> None:
        # into a graph: onto the builder's capturing stream (as numba-cuda does with a GraphBuilder)
        stream = self.stream if target is None else target.stream
        self._launch(stream, config, function, *params)

    def begin_graph(self):
        builder = self._device.create_graph_builder()
        builder.begin_building("relaxed")
        return builder

    def end_graph(self, builder):
        return builder.end_building().complete()

    def launch_graph(self, graph) -> None:
        graph.launch(self.stream)
