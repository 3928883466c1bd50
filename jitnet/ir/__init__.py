"""The IR and everything that only reads or rewrites it. Nothing here imports codegen, runtime or numba."""
