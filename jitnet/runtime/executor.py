"""The executor: runs a Program, a list of kernels over numbered buffer slots.

Intermediate buffers come from the pool and go back to it right after their last reader, so the
next kernel (and the next call) reuses them. Outputs are handed to the caller as Arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jitnet.runtime.array import Array
from jitnet.runtime.device import Device


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
    copy_outputs: frozenset  # output slots that alias inputs or constants: copied out
    device: Device

    def run(self, inputs: list, captured: list) -> list[Array]:
        """Run on buffers of this program's device; return the outputs as Arrays."""
        slots: list = [None] * self.n_slots
        for i, slot in self.input_slots:
            slots[slot] = inputs[i]
        for i, slot in self.capture_slots:
            slots[slot] = captured[i]
        for slot, buf in self.consts:
            slots[slot] = buf
        take, give = self.device.pool.take, self.device.pool.give
        for step in self.steps:
            outs = []
            for slot, size, dtype in step.outs:
                outs.append(take(size, dtype))
                slots[slot] = outs[-1]
            step.fn(*outs, *[slots[a] for a in step.args])
            for r in step.release:
                give(slots[r])
                slots[r] = None
        results = []
        for slot, shape in self.outputs:
            buf = slots[slot]
            if slot in self.copy_outputs:
                buf = self.device.copy(buf)
            results.append(Array(buf, shape, self.device, owned=True))
        return results
