"""The IR and everything that only reads or rewrites it. Nothing here imports codegen, runtime or numba."""

from jitnet.ir import pytree  # noqa: F401  (jn.ir.pytree)
