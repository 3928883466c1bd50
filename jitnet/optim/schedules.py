"""Learning-rate schedules: factories returning `it -> lr` (it = 0 for the first update).

The optimizer evaluates the schedule on the host each step and passes the rate to the compiled
step as a runtime scalar, so a changing rate never recompiles.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence


def _check(name: str, **values) -> None:
    for k, v in values.items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"schedules.{name}: {k} must be a non-negative number, got {v!r}")


def step(base_lr: float, step_size: int, gamma: float = 0.1) -> Callable[[int], float]:
    """base_lr * gamma ** (it // step_size) (PyTorch's StepLR, Caffe's "step")."""
    _check("step", base_lr=base_lr, gamma=gamma)
    if int(step_size) <= 0:
        raise ValueError(f"schedules.step: step_size must be positive, got {step_size}")
    return lambda it: base_lr * gamma ** (it // step_size)


def multistep(base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Callable[[int], float]:
    """base_lr * gamma ** (number of milestones <= it) (PyTorch's MultiStepLR)."""
    _check("multistep", base_lr=base_lr, gamma=gamma)
    ms = sorted(int(m) for m in milestones)
    return lambda it: base_lr * gamma ** bisect.bisect_right(ms, it)


def exp(base_lr: float, gamma: float) -> Callable[[int], float]:
    """base_lr * gamma ** it (PyTorch's ExponentialLR)."""
    _check("exp", base_lr=base_lr, gamma=gamma)
    return lambda it: base_lr * gamma**it


def inv(base_lr: float, gamma: float, power: float) -> Callable[[int], float]:
    """base_lr * (1 + gamma * it) ** -power (Caffe's "inv")."""
    _check("inv", base_lr=base_lr, gamma=gamma, power=power)
    return lambda it: base_lr * (1 + gamma * it) ** -power


def poly(base_lr: float, max_iter: int, power: float = 1.0) -> Callable[[int], float]:
    """base_lr * (1 - it / max_iter) ** power, 0 from max_iter on (Caffe's "poly")."""
    _check("poly", base_lr=base_lr, power=power)
    if int(max_iter) <= 0:
        raise ValueError(f"schedules.poly: max_iter must be positive, got {max_iter}")
    return lambda it: base_lr * (1 - min(it, max_iter) / max_iter) ** power


def cosine(base_lr: float, max_iter: int, min_lr: float = 0.0) -> Callable[[int], float]:
    """min_lr + (base_lr - min_lr) * (1 + cos(pi * it / max_iter)) / 2, min_lr from max_iter on
    (PyTorch's CosineAnnealingLR with T_max = max_iter, without restarts)."""
    _check("cosine", base_lr=base_lr, min_lr=min_lr)
    if int(max_iter) <= 0:
        raise ValueError(f"schedules.cosine: max_iter must be positive, got {max_iter}")
    return lambda it: min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * min(it, max_iter) / max_iter)) / 2
