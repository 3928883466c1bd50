"""The CPU pooling kernels (jitnet/backends/cpu/pooling.py): max/avg pooling and their gradients against
the op table's numpy references for strides, paddings, overlapping windows and windows that do not
divide the input; ties to the first maximum in window order; NaN and -inf; the engine against the
interpreter; torch as an optional oracle."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn
from jitnet.backends.cpu import pooling
from jitnet.codegen import cache
from jitnet.ir.opdefs import OPS

rng = np.random.default_rng(5)

CASES = [
    # x shape, kernel, stride, padding
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 7, 9), (2, 2), (2, 2), (0, 0)),  # windows that do not divide the input
    ((1, 2, 8, 7), (3, 3), (2, 1), (1, 1)),  # overlapping windows, padding
    ((2, 2, 5, 6), (3, 2), (1, 2), (1, 0)),  # kernel larger than the stride in one dim only
    ((3, 1, 9, 5), (4, 3), (3, 3), (2, 1)),
]


def run(op, shape, kernel, stride, padding, *args):
    fn = cache.load(pooling.pool_source(op, shape, kernel, stride, padding, args[0].dtype))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    out_shape = shape if op.endswith("_vjp") else OPS[op].shape([shape], attrs)
    out = np.full(int(np.prod(out_shape)), np.nan, args[0].dtype)  # every element must be written
    fn(out, *(a.ravel() for a in args))
    return out.reshape(out_shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}".replace(" ", ""))
def test_kernels_against_reference(case, dtype):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :2, :3] = 1.5  # a tied block
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    for op in ("max_pool2d", "avg_pool2d"):
        want = OPS[op].ref(x, **attrs)
        np.testing.assert_allclose(run(op, shape, kernel, stride, padding, x), want, rtol=1e-6, atol=1e-6)
        g = rng.standard_normal(want.shape).astype(dtype)
        inputs = (x, g) if op == "max_pool2d" else (g,)
        want_g = OPS[op + "_vjp"].ref(*inputs, **attrs, in_shape=shape)
        got_g = run(op + "_vjp", shape, kernel, stride, padding, *inputs)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-6)


def test_max_ties_nan_and_inf():
    """Ties route to the first maximum in window order; NaN is a window's maximum and the first NaN
    takes its gradient; an all -inf window gives -inf and routes to its first cell; with padding,
    a window whose first cell is padding drops an all -inf window's gradient (as the reference)."""
    x = np.array(
        [
            [
                [
                    [2.0, 2.0, 0.0, 1.0],
                    [2.0, 1.0, np.nan, np.nan],
                    [-np.inf, -np.inf, 3.0, 3.0],
                    [-np.inf, -np.inf, 3.0, 3.0],
                ]
            ]
        ],
        np.float32,
    )
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    got = run("max_pool2d", x.shape, (2, 2), (2, 2), (0, 0), x)
    np.testing.assert_array_equal(got, [[[[2.0, np.nan], [-np.inf, 3.0]]]])
    want_g = np.zeros_like(x)
    want_g[0, 0, 0, 0], want_g[0, 0, 1, 2], want_g[0, 0, 2, 0], want_g[0, 0, 2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(run("max_pool2d_vjp", x.shape, (2, 2), (2, 2), (0, 0), x, g), want_g)

    attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (1, 1)}
    g = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    got = run("max_pool2d", x.shape, (2, 2), (2, 2), (1, 1), x)
    np.testing.assert_array_equal(got, OPS["max_pool2d"].ref(x, **attrs))
    got_g = run("max_pool2d_vjp", x.shape, (2, 2), (2, 2), (1, 1), x, g)
    np.testing.assert_array_equal(got_g, OPS["max_pool2d_vjp"].ref(x, g, **attrs, in_shape=x.shape))
    assert got_g[0, 0, 3, 0] == 0  # window (2, 0): padding, then -inf: dropped


def test_engine_against_interpreter():
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)

    def loss(x):
        return (jn.max_pool2d(x, 3, 2, 1) ** 2).sum() + (jn.avg_pool2d(jn.tanh(x), (2, 3), (1, 2)) ** 2).sum()

    check(jn.value_and_grad(loss), x, rtol=1e-5, atol=1e-5)
    text = jn.compile(jn.value_and_grad(loss), backend="cpu").inspect(x)
    for op in ("max_pool2d ", "avg_pool2d ", "max_pool2d_vjp", "avg_pool2d_vjp"):
        assert f"jitnet cpu {op}" in text


def test_against_torch():
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 2, 7, 8)).astype(np.float32)
    f = jn.compile(jn.value_and_grad(lambda x: (jn.max_pool2d(x, 3, 2, 1) * jn.max_pool2d(x, 3, 2, 1)).sum()))
    value, grad = f(x)
    t = torch.from_numpy(x).requires_grad_(True)
    tv = (torch.nn.functional.max_pool2d(t, 3, 2, 1) ** 2).sum()
    tv.backward()
    np.testing.assert_allclose(np.asarray(value), tv.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_not_a_pool_op():
    with pytest.raises(ValueError, match="not a pooling op"):
        pooling.pool_source("sum_pool2d", (1, 1, 4, 4), (2, 2), (2, 2), (0, 0), np.float32)
