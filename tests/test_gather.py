"""Gather and scatter (jn.take, take_along_axis, x[int array], scatter_add / index_add) on each
backend against the reference interpreter and numpy, their gradients (a scatter-add, repeated
indices accumulating) against torch, and what out-of-range indices do."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn

RNG = np.random.default_rng(11)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_take_every_axis(backend, axis):
    x = rand(5, 4, 3)
    n = x.shape[axis]
    indices = np.array([[0, n - 1, n - 1], [1, -1, 0]])  # repeated and negative
    got = check(lambda a, i: jn.take(a, i, axis) * 2.0 + 1.0, x, indices, backend=backend)
    np.testing.assert_array_equal(got.numpy(), np.take(x, indices, axis) * 2 + 1)
    fused = check(lambda a, i: jn.take(jn.exp(a) - a, i, axis), x, indices, backend=backend)  # a fused producer
    np.testing.assert_allclose(fused.numpy(), np.take(np.exp(x) - x, indices, axis), rtol=1e-6)
    flat = check(lambda a, i: jn.take(a, i), x, np.array([0, 59, 7]), backend=backend)
    np.testing.assert_array_equal(flat.numpy(), x.reshape(-1)[[0, 59, 7]])


@pytest.mark.parametrize("axis", [0, 1])
def test_take_gradient_accumulates_repeated_indices(backend, axis):
    torch = pytest.importorskip("torch")
    x, indices = rand(6, 6), np.array([2, 2, 0, 5, 2, -1])

    def loss(a):
        return jn.sum(jn.cos(jn.take(a, indices, axis)) * jn.arange(6.0).reshape((-1, 1) if axis == 0 else (1, -1)))

    grad = check(jn.grad(loss), x, backend=backend, rtol=1e-5)
    t = torch.from_numpy(x).requires_grad_(True)
    weights = torch.arange(6.0).reshape((-1, 1) if axis == 0 else (1, -1))
    (torch.cos(torch.index_select(t, axis, torch.from_numpy(indices % x.shape[axis]))) * weights).sum().backward()
    np.testing.assert_allclose(grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_take_along_axis_and_array_indexing(backend):
    x = rand(5, 4, 3)
    idx = RNG.integers(-4, 4, (5, 2, 3))
    got = check(lambda a, i: jn.take_along_axis(a, i, 1), x, idx, backend=backend)
    np.testing.assert_array_equal(got.numpy(), np.take_along_axis(x, idx % 4, 1))
    broadcast = RNG.integers(0, 3, (1, 4, 2))  # broadcasts against x's first axis
    got = check(lambda a, i: jn.take_along_axis(a, i, 2), x, broadcast, backend=backend)
    np.testing.assert_array_equal(got.numpy(), np.take_along_axis(x, np.broadcast_to(broadcast, (5, 4, 2)), 2))
    rows = check(lambda a, i: a[i], x, np.array([3, 0, 3]), backend=backend)
    np.testing.assert_array_equal(rows.numpy(), x[[3, 0, 3]])
    cols = check(lambda a, i: a[1:, i, ::2], x, np.array([3, 0]), backend=backend)
    np.testing.assert_array_equal(cols.numpy(), x[1:, [3, 0], ::2])
    picked = check(lambda a, i: a[2, i], x, np.array([1, 1]), backend=backend)
    np.testing.assert_array_equal(picked.numpy(), x[2, [1, 1]])


def test_scatter_add_and_index_add(backend):
    torch = pytest.importorskip("torch")
    x, values = rand(5, 3), rand(4, 3)
    indices = np.array([1, 4, 1, 1])
    got = check(lambda a, i, v: jn.scatter_add(a, i, v), x, indices, values, backend=backend)
    want = torch.from_numpy(x).index_add(0, torch.from_numpy(indices), torch.from_numpy(values))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    cols = check(lambda a, i, v: jn.index_add(a, 1, i, v), x, np.array([2, 0]), rand(5, 2), backend=backend)
    assert cols.shape == (5, 3)
    grads = check(jn.grad(lambda v: jn.sum(jn.scatter_add(x, indices, v) ** 2)), values, backend=backend)
    np.testing.assert_allclose(grads.numpy(), 2 * (want.numpy()[indices]), rtol=1e-5)


def test_out_of_range_indices():
    """Host indices are checked at the call; indices that exist only at run time are clamped."""
    x = rand(5, 3)
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 0 with size 5"):
        jn.take(x, np.array([0, 5]), 0)
    with pytest.raises(IndexError, match="index -4 is out of bounds for axis 1 with size 3"):
        jn.take_along_axis(x, np.full((5, 1), -4), 1)
    with pytest.raises(IndexError, match="out of bounds"):
        jn.scatter_add(x, [7], rand(1, 3))
    with pytest.raises(jn.TraceError, match="indices must be integers"):
        jn.take(x, np.array([0.5]), 0)
    with pytest.raises(jn.TraceError, match="values have shape"):
        jn.scatter_add(x, [1], rand(2, 3))
    runtime = jn.asarray(np.array([9, -9, 2]))
    np.testing.assert_array_equal(jn.take(x, runtime, 0).numpy(), x[[4, 0, 2]])


def test_embedding_matches_torch(backend):
    torch = pytest.importorskip("torch")
    layer = jn.nn.Embedding(7, 4)
    reference = torch.nn.Embedding(7, 4)
    layer.load_state_dict({"weight": reference.weight.detach().numpy()})
    tokens = np.array([[1, 6, 1], [0, 1, 3]])
    out = check(lambda i: layer(i), tokens, backend=backend)
    np.testing.assert_allclose(out.numpy(), reference(torch.from_numpy(tokens)).detach().numpy())
    weights = {"weight": jn.asarray(reference.weight.detach().numpy())}

    def loss(p):
        out, _ = layer.functional_call(p, {}, tokens)
        return jn.sum(jn.tanh(out))

    grad = check(jn.grad(loss), weights, backend=backend, rtol=1e-5)["weight"]
    torch.tanh(reference(torch.from_numpy(tokens))).sum().backward()
    np.testing.assert_allclose(grad.numpy(), reference.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="out of bounds"):
        layer(np.array([7]))
