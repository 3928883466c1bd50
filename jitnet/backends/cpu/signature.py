"""Numba types for kernel signatures: inputs are read-only arrays, so constants and read-only
user arrays pass without a copy (writable arrays convert to read-only ones for free)."""

from numba import types


def readonly(dtype: types.Type) -> types.Array:
    return types.Array(dtype, 1, "C", readonly=True)
