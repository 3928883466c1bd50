"""Helpers shared by the tests: comparing a function compiled for the CPU with the numpy reference
interpreter, and the comparison operators as a table."""

from __future__ import annotations

import operator

import numpy as np

import jitnet as jn


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


def check(fn, *args, rtol: float = 1e-5, atol: float = 1e-6, **compile_kwargs):
    """Run fn compiled for the CPU and interpreted; assert they agree; return the compiled result."""
    got = jn.compile(fn, backend="cpu", **compile_kwargs)(*args)
    want = jn.compile(fn, backend="interpret", **compile_kwargs)(*args)
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
