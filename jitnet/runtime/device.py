"""Devices. The CPU is always there; CUDA comes with the `cuda` extra and a usable GPU."""

from __future__ import annotations

import os

BACKENDS = ("cpu", "cuda", "interpret")


class Device:
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"device({self.kind!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self.kind)


_CPU = Device("cpu")


def cuda_available() -> bool:
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def device(kind: str | Device) -> Device:
    """`jn.device("cpu")` or `jn.device("cuda")`; a clear error where the device cannot be used."""
    if isinstance(kind, Device):
        return kind
    if kind == "cpu":
        return _CPU
    if kind == "cuda":
        if not cuda_available():
            raise RuntimeError(
                "jitnet: no usable CUDA GPU (numba.cuda.is_available() is False; install the "
                "'cuda' extra and check the driver), use device('cpu')"
            )
        raise RuntimeError("jitnet: the CUDA backend is not built yet; use device('cpu')")
    raise ValueError(f"unknown device {kind!r}; expected 'cpu' or 'cuda'")


def default_backend() -> str:
    """JITNET_BACKEND if set, else the CPU (the CUDA backend is not built yet)."""
    backend = os.environ.get("JITNET_BACKEND", "").strip().lower()
    if backend:
        if backend not in BACKENDS:
            raise ValueError(f"JITNET_BACKEND={backend!r} is not one of {BACKENDS}")
        return backend
    return "cpu"


def default_device() -> Device:
    backend = default_backend()
    return device("cpu" if backend == "interpret" else backend)
