"""Code generation: fused kernel groups -> compiled kernels (numba), cached in memory and on disk."""
