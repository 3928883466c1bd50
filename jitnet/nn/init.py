"""PyTorch's default initialisations, drawn from one global generator that `jn.manual_seed` resets."""

from __future__ import annotations

import math

import numpy as np

_GENERATOR = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make parameter initialisation, Dropout outside train_step and Trainer shuffling repeatable."""
    global _GENERATOR
    _GENERATOR = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _GENERATOR


def uniform(shape: tuple, bound: float) -> np.ndarray:
    return _GENERATOR.uniform(-bound, bound, size=shape).astype(np.float32)


def kaiming_uniform(shape: tuple, fan_in: int) -> np.ndarray:
    """PyTorch's kaiming_uniform_(a=sqrt(5)) for Linear and Conv2d weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    gain = math.sqrt(2.0 / (1 + 5))
    return uniform(shape, gain * math.sqrt(3.0 / fan_in) if fan_in else 0.0)


def fan_in_bias(shape: tuple, fan_in: int) -> np.ndarray:
    """PyTorch's bias init for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1 / math.sqrt(fan_in) if fan_in else 0.0)


def xavier_uniform(shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
    """torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    return uniform(shape, float(np.sqrt(6.0 / (fan_in + fan_out))))


def normal(shape: tuple, std: float = 1.0) -> np.ndarray:
    """torch.nn.init.normal_: N(0, std^2) (nn.Embedding's weights)."""
    return (_GENERATOR.standard_normal(size=shape) * std).astype(np.float32)
