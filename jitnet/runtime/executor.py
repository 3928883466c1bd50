"""The executor: runs a Program, a list of kernels over numbered buffer slots.

A run owns the buffers it takes from the pool: each intermediate goes back right after its last
reader, so the next kernel (and the next call) reuses it; each output is claimed by one Storage and
handed to the caller as an Array. If a kernel raises, the run's buffers are simply dropped (the
allocator frees them): none is given back while something might still use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jitnet.runtime.array import Array
from jitnet.runtime.device import Device
from jitnet.runtime.memory import BufferPool


@dataclass
class Step:
    fn: Callable  # fn(*outputs, *inputs) on flat buffers
    outs: tuple[tuple[int, int, np.dtype], ...]  # (slot, size, dtype) of each buffer written
    args: tuple[int, ...]  # slots read
    release: tuple[int, ...]  # intermediate slots whose last reader is this step


@dataclass
class Program:
    n_slots: int
    input_slots: list[tuple[int, int]]  # (argument index, slot) of each input the program reads
    capture_slots: list[tuple[int, int]]  # (index into the captured Arrays, slot)
    consts: list[tuple[int, np.ndarray]]  # slot, flat data
    steps: list[Step]
    outputs: list[tuple[int, tuple]]  # slot, shape
    copy_outputs: frozenset  # output slots holding an input's, a capture's or a constant's memory: copied out
    device: Device

    def peak_bytes(self) -> int:
        """The most bytes of buffers a run holds at once (what `execute` takes and gives back, the
        outputs included; not the inputs, captures and constants it reads)."""
        live = peak = 0
        sizes: dict[int, int] = {}
        for step in self.steps:
            for slot, size, dtype in step.outs:
                sizes[slot] = size * np.dtype(dtype).itemsize
                live += sizes[slot]
            peak = max(peak, live)
            live -= sum(sizes.pop(r) for r in step.release)
        return peak

    def run(self, inputs: list, captured: list) -> list[Array]:
        """Run on buffers of this program's device; return the outputs as Arrays."""
        slots = self.bind(inputs, captured)
        self.execute(slots)
        return self.collect(slots)

    def bind(self, inputs: list, captured: list) -> list:
        """The slot table of a run: the inputs', captures' and constants' buffers in their slots."""
        slots: list = [None] * self.n_slots
        for i, slot in self.input_slots:
            slots[slot] = inputs[i]
        for i, slot in self.capture_slots:
            slots[slot] = captured[i]
        for slot, buf in self.consts:
            slots[slot] = buf
        return slots

    def execute(self, slots: list, launch: Callable | None = None, pool: BufferPool | None = None) -> None:
        """Run every step over `slots`: each step's outputs taken from `pool` (the device's), its
        dead intermediates given back. `launch(k, step, buffers)` runs step k (default:
        step.fn(*buffers)); a runner that launches otherwise (backends/cuda/runner.py) passes its own."""
        pool = pool or self.device.pool
        take, give = pool.take, pool.give
        for k, step in enumerate(self.steps):
            outs = []
            for slot, size, dtype in step.outs:
                outs.append(take(size, dtype))
                slots[slot] = outs[-1]
            buffers = [*outs, *[slots[a] for a in step.args]]
            if launch is None:
                step.fn(*buffers)
            else:
                launch(k, step, buffers)
            for r in step.release:
                give(slots[r])
                slots[r] = None

    def collect(self, slots: list) -> list[Array]:
        """The outputs of a run as Arrays: each output buffer claimed by one Storage."""
        results, claimed = [], set()
        for slot, shape in self.outputs:
            buf = slots[slot]
            # one Storage per output: a slot returned twice (a value and its reshape) is copied once more
            if slot in self.copy_outputs or slot in claimed:
                storage = self.device.storage(buf)
            else:
                storage = self.device.pool.claim(buf)
                claimed.add(slot)
            results.append(Array(storage, shape, self.device))
        return results
