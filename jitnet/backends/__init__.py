"""Backends: one object per backend, registered here, and the only place that names them.

A backend is a package exporting `BACKEND`, a `Backend`: its device, the facts the fuser needs
(`FusionRules`), and one table from kernel kind to lowering, each lowering taking a fused `Kernel`
and returning `(fn, source)`, fn(*outputs, *inputs) running it on flat device buffers; and how a
compiled program's calls run (`runner`: plainly, step by step, unless the backend launches its
programs another way). The compiler asks the backend for all of it and never tests a backend's name. Adding a backend is one package and
one line in `_PACKAGES`.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jitnet.ir.fusion import FusionRules, Kernel
from jitnet.ir.opdefs import Kind
from jitnet.runtime.device import Device

Lowering = Callable[[Kernel], tuple[Callable, str]]

_PACKAGES = {"cpu": "jitnet.backends.cpu", "cuda": "jitnet.backends.cuda", "interpret": "jitnet.backends.interpret"}
HOST = "cpu"  # the backend whose device holds host data (`jn.asarray` without a device)


def _nothing(kernels: list[Kernel]) -> None:
    return None


def _run_plainly(program: Any) -> Callable[[list, list], list]:
    return program.run


@dataclass(frozen=True)
class Backend:
    name: str
    device_kind: str  # the device it runs on: its own name, or another backend's (the interpreter runs on the CPU)
    device: Callable[[], Device]  # that device, made on first use; a clear error where it cannot be used
    rules: FusionRules | None  # what the fuser may fuse; None: programs run unfused through the reference interpreter
    lowerings: Mapping[Kind, Lowering] = field(default_factory=dict)
    prepare: Callable[[list[Kernel]], None] = _nothing  # before a program's kernels are lowered (batch compiles)
    preferred: Callable[[], bool] = lambda: False  # chosen by default when nothing says otherwise
    runner: Callable[[Any], Callable[[list, list], list]] = _run_plainly  # (a runtime Program) -> how its calls run

    def lower(self, kernels: list[Kernel]) -> list[tuple[Callable, str]]:
        """(fn, source) for each kernel of a program."""
        self.prepare(kernels)
        return [self.lowerings[kernel.kind](kernel) for kernel in kernels]


def names() -> tuple[str, ...]:
    """The registered backends' names."""
    return tuple(_PACKAGES)


def get(name: str) -> Backend:
    """The backend registered as `name`."""
    if name not in _PACKAGES:
        raise ValueError(f"unknown backend {name!r}; expected one of {names()}")
    return importlib.import_module(_PACKAGES[name]).BACKEND


_devices: dict[str, Device] = {}  # the devices made so far, for empty_cache


def device(kind: str | Device) -> Device:
    """`jn.device("cpu")` or `jn.device("cuda")`; a clear error where the device cannot be used."""
    if isinstance(kind, Device):
        return kind
    if kind not in _PACKAGES or get(kind).device_kind != kind:
        devices = [n for n in names() if get(n).device_kind == n]
        raise ValueError(f"unknown device {kind!r}; expected one of {', '.join(map(repr, devices))}")
    return device_of(kind)


def host_device() -> Device:
    return device(HOST)


def empty_cache() -> None:
    """Release the idle buffers every device's pool keeps for reuse (as `torch.cuda.empty_cache`).
    Memory held by live Arrays stays; the pools refill as programs run."""
    for dev in _devices.values():
        dev.pool.clear()


def default_backend() -> str:
    """JITNET_BACKEND if set, else the first backend that prefers itself (a real GPU), else the host."""
    backend = os.environ.get("JITNET_BACKEND", "").strip().lower()
    if backend:
        if backend not in _PACKAGES:
            raise ValueError(f"JITNET_BACKEND={backend!r} is not one of {names()}")
        return backend
    return _preferred()


@functools.cache
def _preferred() -> str:
    """The first backend that prefers itself, else the host: asked once (compiled calls ask per call)."""
    return next((n for n in names() if n != HOST and get(n).preferred()), HOST)


def default_device() -> Device:
    return device_of(default_backend())


def device_of(backend: str) -> Device:
    """The device a backend's programs run on."""
    dev = get(backend).device()
    _devices[dev.kind] = dev
    return dev
