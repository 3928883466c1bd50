"""Helpers shared by the tests: comparing a compiled function with the numpy reference interpreter
on each backend, the backends as one parametrised table, and the comparison operators as a table."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import jitnet as jn
from jitnet.backends.cuda.device import cuda_available

# What a CUDA test carries: the `cuda` mark (the plain test process skips it, `NUMBA_ENABLE_CUDASIM=1
# pytest -m cuda` runs it under numba's simulator, `pytest -m cuda` runs it on a GPU), a skip where
# neither is there, and quiet RuntimeWarnings (the simulator evaluates kernels with numpy scalars,
# which warn where a GPU gives inf/NaN quietly). A CUDA-only module sets `pytestmark = CUDA_MARKS`.
CUDA_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]
# Every differential test runs on each backend.
BACKENDS = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA_MARKS)]


def assert_same(actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Same pytree structure, shapes and dtypes; values close, NaN where NaN, inf where inf."""
    a_leaves, a_tree = jn.ir.pytree.flatten(actual)
    e_leaves, e_tree = jn.ir.pytree.flatten(expected)
    assert a_tree == e_tree, f"structure {a_tree} != {e_tree}"
    for a, e in zip(a_leaves, e_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
        assert a.dtype == e.dtype, f"dtype {a.dtype} != {e.dtype}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, e)


def on_device(tree, kind: str) -> None:
    """Every leaf is a jitnet Array on the `kind` device."""
    for leaf in jn.ir.pytree.flatten(tree)[0]:
        assert isinstance(leaf, jn.Array), type(leaf)
        assert leaf.device.kind == kind, leaf.device


def check(fn, *args, rtol: float = 1e-5, atol: float = 1e-6, backend: str = "cpu", **compile_kwargs):
    """Run fn compiled for `backend` and interpreted; assert they agree and that the results are
    Arrays on the backend's device; return the compiled result."""
    got = jn.compile(fn, backend=backend, **compile_kwargs)(*args)
    want = jn.compile(fn, backend="interpret", **compile_kwargs)(*args)
    on_device(got, backend)
    assert_same(got, want, rtol, atol)
    return got


COMPARISONS = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}
