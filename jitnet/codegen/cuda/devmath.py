"""Device functions for the math that CUDA's libdevice does not name."""

import math

import numpy as np
from numba import cuda


@cuda.jit(device=True)
def sigmoid_f32(x):
    # exp(-x) overflows to inf for very negative x, and 1 / inf is the right 0: never NaN.
    return np.float32(1.0) / (np.float32(1.0) + math.exp(-x))


@cuda.jit(device=True)
def sigmoid_f64(x):
    return 1.0 / (1.0 + math.exp(-x))
