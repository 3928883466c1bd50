"""The CPU conv2d kernels (jitnet/backends/cpu/conv.py: im2col + the matmul micro-kernel): forward,
input gradient and weight gradient against float64 numpy for strides, paddings, kernels larger than
the stride, odd and non-square sizes; the epilogue hook; the engine against the interpreter; the
gradient ops' rules against finite differences; torch as an optional oracle."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn
from jitnet.backends.cpu import conv
from jitnet.codegen import cache
from jitnet.ir.opdefs import OPS

rng = np.random.default_rng(3)

GEOMETRIES = [
    # x shape, w shape, stride, padding, dtype
    ((3, 2, 10, 7), (5, 2, 3, 3), (2, 3), (1, 2), np.float64),  # stride > 1, padding, uneven
    ((1, 4, 7, 7), (6, 4, 5, 5), (2, 2), (2, 2), np.float32),  # kernel larger than the stride, batch 1
    ((5, 7, 13, 6), (9, 7, 4, 3), (3, 1), (0, 1), np.float32),  # rows no window reaches: (13 - 4) % 3 != 0
    ((3, 20, 12, 12), (50, 20, 5, 5), (1, 1), (0, 0), np.float32),  # LeNet's second conv
]


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def refs(x, w, g, stride, padding):
    """float64 conv2d, input gradient and weight gradient from the op table's references."""
    x64, w64, g64 = (t.astype(np.float64) for t in (x, w, g))
    attrs = {"stride": stride, "padding": padding}
    out = OPS["conv2d"].ref(x64, w64, **attrs)
    gx = OPS["conv2d_input_grad"].ref(g64, w64, **attrs, in_shape=x.shape)
    gw = OPS["conv2d_weight_grad"].ref(x64, g64, **attrs, w_shape=w.shape)
    return out, gx, gw


def close(got, want, dtype, k):
    tol = np.sqrt(k) * np.finfo(dtype).eps * 8 * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: f"x{g[0]}-w{g[1]}-s{g[2]}-p{g[3]}".replace(" ", ""))
def test_kernels_against_numpy(geo):
    xs, ws, stride, padding, dtype = geo
    x, w = randn(*xs, dtype=dtype), randn(*ws, dtype=dtype)
    out_shape = OPS["conv2d"].shape([xs, ws], {"stride": stride, "padding": padding})
    g = randn(*out_shape, dtype=dtype)
    want_out, want_gx, want_gw = refs(x, w, g, stride, padding)
    k = ws[1] * ws[2] * ws[3]

    fwd = cache.load(conv.conv2d_source(xs, ws, stride, padding, dtype))
    out = np.full(want_out.size, np.nan, dtype)  # every element must be written
    fwd(out, x.ravel(), w.ravel())
    close(out.reshape(out_shape), want_out, dtype, k)

    gin = cache.load(conv.conv2d_input_grad_source(out_shape, ws, stride, padding, xs, dtype))
    gx = np.full(x.size, np.nan, dtype)
    gin(gx, g.ravel(), w.ravel())
    close(gx.reshape(xs), want_gx, dtype, ws[0] * ws[2] * ws[3])

    gwt = cache.load(conv.conv2d_weight_grad_source(xs, out_shape, stride, padding, ws, dtype))
    gw = np.full(w.size, np.nan, dtype)
    gwt(gw, x.ravel(), g.ravel())
    close(gw.reshape(ws), want_gw, dtype, xs[0] * out_shape[2] * out_shape[3])


class BiasRelu:
    """A hand-written epilogue: relu(v + bias[o]) at output [n, o, y, x]."""

    params = ["bias"]

    def render(self, v, idx):
        return [f"ep_t = {v} + bias[{idx[1]}]"], "max(ep_t, 0.0)"


class HalfPlus:
    """0.5 * v + extra[idx] over an output of `shape` (any rank-4 index order)."""

    params = ["extra"]

    def __init__(self, shape):
        self.shape = shape

    def render(self, v, idx):
        flat = "0"
        for d, i in enumerate(idx):
            flat = f"({flat}) * {self.shape[d]} + ({i})"
        return [f"ep_e = extra[{flat}]"], f"0.5 * {v} + ep_e"


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_epilogue(batch):
    """relu(v + bias[o]) at the store; with one image the output channels are split among threads."""
    xs, ws, stride, padding = (batch, 2, 9, 8), (9, 2, 3, 3), (2, 1), (1, 1)
    x, w, bias = randn(*xs), randn(*ws), randn(ws[0])
    want = OPS["conv2d"].ref(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding)
    fn = cache.load(conv.conv2d_source(xs, ws, stride, padding, np.float32, BiasRelu()))
    out = np.full(want.size, np.nan, np.float32)
    fn(out, x.ravel(), w.ravel(), bias)
    close(out.reshape(want.shape), np.maximum(want + bias[None, :, None, None], 0), np.float32, 18)


def test_gradient_epilogues():
    """The gradient kernels take an epilogue too: index [n, c, h, w] for the input's gradient,
    [o, c, i, j] for the weight's."""
    xs, ws, stride, padding = (3, 2, 9, 8), (5, 2, 3, 2), (2, 1), (1, 1)
    x, w = randn(*xs), randn(*ws)
    out_shape = OPS["conv2d"].shape([xs, ws], {"stride": stride, "padding": padding})
    g = randn(*out_shape)
    _, want_gx, want_gw = refs(x, w, g, stride, padding)
    ex, ew = randn(*xs), randn(*ws)
    fn = cache.load(conv.conv2d_input_grad_source(out_shape, ws, stride, padding, xs, np.float32, HalfPlus(xs)))
    gx = np.full(x.size, np.nan, np.float32)
    fn(gx, g.ravel(), w.ravel(), ex.ravel())
    close(gx.reshape(xs), 0.5 * want_gx + ex, np.float32, 30)
    fn = cache.load(conv.conv2d_weight_grad_source(xs, out_shape, stride, padding, ws, np.float32, HalfPlus(ws)))
    gw = np.full(w.size, np.nan, np.float32)
    fn(gw, x.ravel(), g.ravel(), ew.ravel())
    close(gw.reshape(ws), 0.5 * want_gw + ew, np.float32, 100)


def test_engine_forward_and_gradients():
    stride, padding = (3, 1), (0, 2)
    x, w = randn(3, 2, 9, 7), randn(4, 2, 3, 3)
    check(lambda x, w: jn.conv2d(x, w, stride, padding), x, w, rtol=1e-5, atol=1e-5)

    def loss(x, w):
        return (jn.tanh(jn.conv2d(x, w, stride, padding)) ** 2).sum()

    check(jn.value_and_grad(loss, argnums=(0, 1)), x, w, rtol=1e-4, atol=1e-4)
    text = jn.compile(jn.grad(loss, argnums=(0, 1)), backend="cpu").inspect(x, w)
    for kind in ("forward", "input gradient", "weight gradient"):
        assert f"jitnet cpu conv2d {kind}" in text


def _fd_grads(fn, args, eps=1e-6):
    """Central finite differences of scalar fn at float64 args, one per argument."""
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            hi, lo = [t.copy() for t in args], [t.copy() for t in args]
            hi[i][idx] += eps
            lo[i][idx] -= eps
            g[idx] = (fn(*hi) - fn(*lo)) / (2 * eps)
        grads.append(g)
    return grads


def test_gradients_and_second_order_against_finite_differences():
    """float64 through the compiled CPU kernels: conv2d's gradient, and the gradient of a loss of
    that gradient (which runs conv2d_input_grad's and conv2d_weight_grad's own rules)."""
    stride, padding = 2, 1
    x, w = randn(2, 2, 5, 6, dtype=np.float64), randn(3, 2, 3, 2, dtype=np.float64)
    c = randn(
        *OPS["conv2d"].shape([x.shape, w.shape], {"stride": (stride,) * 2, "padding": (padding,) * 2}), dtype=np.float64
    )

    def loss(x, w):
        return jn.sum(jn.conv2d(x, w, stride, padding) * c)

    def loss_np(x, w):
        return float(np.sum(OPS["conv2d"].ref(x, w, stride=(stride,) * 2, padding=(padding,) * 2) * c))

    gx, gw = jn.compile(jn.grad(loss, argnums=(0, 1)), backend="cpu")(x, w)
    fx, fw = _fd_grads(loss_np, [x, w])
    np.testing.assert_allclose(np.asarray(gx), fx, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), fw, atol=1e-6)

    def second(x, w):  # differentiable in x and w through both gradient ops
        gx, gw = jn.grad(loss, argnums=(0, 1))(x, w)
        return jn.sum(jn.sin(gx)) + jn.sum(jn.cos(gw) * gw)

    first = jn.compile(jn.grad(loss, argnums=(0, 1)), backend="interpret")

    def second_np(x, w):
        gx, gw = (np.asarray(t) for t in first(x, w))
        return float(np.sum(np.sin(gx)) + np.sum(np.cos(gw) * gw))

    got = jn.compile(jn.grad(second, argnums=(0, 1)), backend="cpu")(x, w)
    want = _fd_grads(second_np, [x, w], eps=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)


def test_conv_pool_layer_against_torch():
    torch = pytest.importorskip("torch")
    x, w = randn(2, 3, 11, 10), randn(4, 3, 3, 3) * 0.2

    def layer(x, w):
        return jn.max_pool2d(jn.relu(jn.conv2d(x, w, stride=1, padding=1)), 2).sum()

    value, (gx, gw) = jn.compile(jn.value_and_grad(layer, argnums=(0, 1)), backend="cpu")(x, w)
    tx, tw = (torch.from_numpy(t.astype(np.float64)).requires_grad_(True) for t in (x, w))
    F = torch.nn.functional
    tv = F.max_pool2d(F.relu(F.conv2d(tx, tw, stride=1, padding=1)), 2).sum()
    tv.backward()
    np.testing.assert_allclose(float(np.asarray(value)), tv.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gw), tw.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="channels differ"):
        conv.conv2d_source((1, 3, 5, 5), (2, 4, 3, 3), (1, 1), (0, 0), np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_source((1, 3, 2, 2), (2, 3, 3, 3), (1, 1), (0, 0), np.float32)
    with pytest.raises(ValueError, match="input grad: cotangent"):
        conv.conv2d_input_grad_source((1, 2, 4, 4), (2, 3, 3, 3), (1, 1), (0, 0), (1, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="weight grad: cotangent"):
        conv.conv2d_weight_grad_source((1, 3, 5, 5), (1, 2, 4, 4), (1, 1), (0, 0), (2, 3, 3, 3), np.float32)


def test_empty_batch_weight_gradient_is_zero():
    fn = cache.load(
        conv.conv2d_weight_grad_source((0, 2, 5, 5), (0, 3, 3, 3), (1, 1), (0, 0), (3, 2, 3, 3), np.float32)
    )
    gw = np.full(3 * 2 * 3 * 3, np.nan, np.float32)
    fn(gw, np.empty(0, np.float32), np.empty(0, np.float32))
    assert not gw.any()
