"""Device functions for the math that CUDA's libdevice does not name."""

import math

import numpy as np
from numba import cuda


@cuda.jit(device=True)
def sigmoid_f32(x):
    # exp of a non-positive number never overflows, so no input gives NaN
    e = np.float32(math.exp(-abs(x)))
    return np.float32(1.0) / (np.float32(1.0) + e) if x >= 0 else e / (np.float32(1.0) + e)


@cuda.jit(device=True)
def sigmoid_f64(x):
    e = math.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
