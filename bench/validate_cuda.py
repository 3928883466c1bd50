"""Validation of the CUDA backend, run before the GPU timings: a few functions compiled for CUDA and
checked against the numpy reference interpreter: fused elementwise with broadcasting and views,
reductions over each axis, the split (two-kernel) path of long reductions with one and with several
outputs, row-wise softmax/log_softmax, a value_and_grad program, int/bool dtypes, and (on a GPU)
zero-copy export through `__cuda_array_interface__`. On a GPU the shapes are large (millions of
elements); under numba's simulator they are tiny.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import cuda

import jitnet as jn
from bench.elementwise import gelu
from bench.workload import F32, rng


@dataclass
class Case:
    name: str
    fn: Callable
    args: Callable[[bool], tuple]  # big -> arguments
    rtol: float = 1e-5
    atol: float = 1e-6
    split: bool = False  # the long reductions must take the two-kernel split path


def _randn(*shape):
    return rng().standard_normal(shape, dtype=F32)


def _normal(*shapes: tuple):
    """Arguments of normal float32 of these shapes: (shape on a GPU, shape under the simulator) each."""
    return lambda big: tuple(_randn(*(gpu if big else sim)) for gpu, sim in shapes)


def _cases() -> list[Case]:
    def loss(x, w, b, y):
        h = jn.tanh(x @ w + b)
        return -(jn.log_softmax(h, axis=1) * jn.one_hot(y, w.shape[1])).sum() / x.shape[0] + (w * w).sum() * 1e-3

    def vg_args(big):
        (n, d, k), g = (2048, 256, 10) if big else (8, 6, 3), rng()
        x, w = g.standard_normal((n, d), dtype=F32), g.standard_normal((d, k), dtype=F32) * F32(0.1)
        return x, w, g.standard_normal(k, dtype=F32), g.integers(0, k, n).astype(np.int32)

    def int_args(big):
        return rng().integers(-1000, 1000, 2**20 if big else 300).astype(np.int32), _randn(2**20 if big else 300)

    def views(x, r, c):
        return jn.maximum(x * r + c, 0.0), x.T[::2] * 2, jn.pad(x, ((1, 0), (0, 2)))

    def reductions(x):
        return x.sum(1), x.max(0), jn.argmax(x, 1), jn.logsumexp(x, 1), x.mean(0, keepdims=True) * 2 + 1

    return [
        Case("elementwise gelu", gelu, _normal(((2**22,), (1000,))), rtol=2e-5),
        Case(
            "broadcast row/column + views",
            views,
            _normal(((2048, 1024), (5, 37)), ((1024,), (37,)), ((2048, 1), (5, 1))),
            atol=1e-3,
        ),
        Case("reductions over each axis", reductions, _normal(((1024, 1000), (4, 9))), rtol=2e-5, atol=1e-5),
        Case(
            "split: whole-vector sum/max/min + epilogue",
            lambda v: (v.sum(), v.max(), v.min(), (v * v).sum() * 0.5 + 1),
            _normal(((2**24,), (3000,))),
            atol=1e-4,
            split=True,
        ),
        Case(
            "split: several outputs (row sums, column max)",
            lambda x: (x.sum(1) * 2, x.T.max(0)),
            _normal(((64, 2**17), (1, 1000))),
            atol=1e-4,
            split=True,
        ),
        Case(
            "softmax / log_softmax rows + epilogue",
            lambda x: (jn.softmax(x, axis=-1) * 2, jn.log_softmax(x, axis=1) - 1),
            _normal(((4096, 1024), (4, 40))),
            rtol=2e-5,
            atol=1e-5,
        ),
        Case(
            "value_and_grad (matmul via host, log_softmax)",
            jn.value_and_grad(loss, argnums=(1, 2)),
            vg_args,
            rtol=1e-4,
            atol=1e-5,
        ),
        Case("int32 and bool", lambda a, x: (a * 3 + 1, (a > 0).sum(), jn.where(a > 0, x, -x), a.max()), int_args),
    ]


def _flatten(tree) -> tuple[list, object]:
    """The leaves of nested tuples, lists and dicts, and the structure around them."""
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(t) for t in tree]
        return [leaf for p in parts for leaf in p[0]], (type(tree).__name__, [p[1] for p in parts])
    if isinstance(tree, dict):
        leaves, shape = _flatten([tree[k] for k in sorted(tree)])
        return leaves, ("dict", sorted(tree), shape)
    return [tree], "*"


def _compare(got, want, rtol: float, atol: float) -> float:
    """Max abs error over the leaves; raises AssertionError on a mismatch."""
    (g_leaves, g_tree), (w_leaves, w_tree) = _flatten(got), _flatten(want)
    assert g_tree == w_tree, f"structure {g_tree} != {w_tree}"
    worst = 0.0
    for g, w in zip(g_leaves, w_leaves):
        assert isinstance(g, jn.Array) and g.device.kind == "cuda", f"result not on the GPU: {type(g)}"
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{g.shape} {g.dtype} != {w.shape} {w.dtype}"
        if g.dtype.kind != "f":
            np.testing.assert_array_equal(g, w)
            continue
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        d = np.abs(g.astype(np.float64) - w.astype(np.float64))
        if d.size and np.isfinite(d).any():
            worst = max(worst, float(np.nanmax(d)))
    return worst


def _check_cai() -> bool:
    """A device Array exported to numba through __cuda_array_interface__ shares its memory."""
    x = _randn(1000, 3)
    a = jn.asarray(x, device="cuda")
    d = cuda.as_cuda_array(a)
    same = d.__cuda_array_interface__["data"][0] == a.buffer().device_ctypes_pointer.value
    return bool(same and np.array_equal(d.copy_to_host(), x))


def validate(big: bool, log) -> tuple[int, int]:
    """Run every case: (passed, total)."""
    from jitnet.backends.cuda import kernels

    log(
        f"validation ({'GPU sizes' if big else 'tiny simulator sizes'}; block {kernels.BLOCK}, "
        f"max blocks {kernels.MAX_BLOCKS}, split from {kernels.SPLIT_MIN} elements per output)"
    )
    passed = total = 0
    for case in _cases():
        total += 1
        t0 = time.perf_counter()
        try:
            args = case.args(big)
            f = jn.compile(case.fn, backend="cuda")
            err = _compare(f(*args), jn.compile(case.fn, backend="interpret")(*args), case.rtol, case.atol)
            kinds = [getattr(k.kind, "value", str(k.kind)) for k in f.lower(*args).schedule.kernels]
            split = "def partial(" in f.inspect(*args)
            if case.split and not split:
                raise AssertionError("expected the split (two-kernel) reduction path, got one kernel per output")
            note = f"kernels {kinds}" + (", split path" if split else "")
            log(f"  ok   {case.name}: max abs err {err:.1e}, {note} ({time.perf_counter() - t0:.1f} s)")
            passed += 1
        except Exception as e:
            log(f"  FAIL {case.name}: {type(e).__name__}: {str(e)[:400]}")
            log("       " + traceback.format_exc().strip().splitlines()[-1][:300])
    if big:
        total += 1
        try:
            ok = _check_cai()
            log(f"  {'ok  ' if ok else 'FAIL'} __cuda_array_interface__ -> numba.cuda.as_cuda_array: zero-copy")
            passed += ok
        except Exception as e:
            log(f"  FAIL __cuda_array_interface__: {type(e).__name__}: {e}")
    return passed, total
