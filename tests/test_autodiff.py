"""`jn.grad`, `jn.value_and_grad` and `jn.vjp`: how they compose with `jn.compile` and with each
other, their pytree and argnums conventions, higher derivatives, and the fusion of backward graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_same, check

import jitnet as jn

RNG = np.random.default_rng(20240611)
C = math.sqrt(2 / math.pi)


def gelu(x):
    return 0.5 * x * (1.0 + jn.tanh(C * (x + 0.044715 * x * x * x)))


def gelu_np(x):
    return 0.5 * x * (1 + np.tanh(C * (x + 0.044715 * x**3)))


def gelu_grad_np(x):
    t = np.tanh(C * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * 0.044715 * x * x)


def mlp_loss(x, w, b):
    return jn.mean(jn.tanh(x @ w + b) ** 2)


def mlp_grads_np(x, w, b):
    """(d/dx, d/dw, d/db) of mlp_loss, in float64."""
    x, w, b = (np.asarray(a, np.float64) for a in (x, w, b))
    t = np.tanh(x @ w + b)
    dz = 2 * t * (1 - t * t) / t.size
    return dz @ w.T, x.T @ dz, dz.sum(0)


X = RNG.standard_normal((4, 3)).astype(np.float32)
W = RNG.standard_normal((3, 5)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)


# ---- composition with compile, in either order, and the interpreter ----


def test_compile_of_grad_grad_of_compile_and_interpreter_agree():
    want = mlp_grads_np(X, W, B)[1:]
    g_cpu = check(jn.grad(mlp_loss, argnums=(1, 2)), X, W, B)  # compiled for the CPU == interpreted
    g_outer = jn.grad(jn.compile(mlp_loss), argnums=(1, 2))(X, W, B)
    assert_same(g_outer, g_cpu)
    for got, ref in zip(g_cpu, want):
        assert got.dtype == np.float32
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


def test_grad_of_compiled_function_with_compiled_inner_call():
    inner = jn.compile(lambda z: jn.sigmoid(z) * z)

    def loss(x):
        return jn.sum(inner(x) * 3.0)

    x = RNG.standard_normal(6).astype(np.float32)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    want = 3.0 * (s + x * s * (1 - s))
    got = check(jn.grad(loss), x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_eager_grad_matches_compiled_and_is_cached():
    f = jn.grad(lambda x: jn.sum(jn.exp(x) * x))
    x = np.linspace(-1, 1, 5).astype(np.float32)
    first = np.asarray(f(x))
    np.testing.assert_allclose(first, np.exp(x) * (1 + x), rtol=1e-6)
    x2 = x * 2
    np.testing.assert_allclose(np.asarray(f(x2)), np.exp(x2) * (1 + x2), rtol=1e-6)  # new values, same shape


# ---- value_and_grad, has_aux, argnums ----


def test_value_and_grad_with_aux():
    def loss(w, x):
        pred = x @ w
        return jn.sum(pred**2), {"pred": pred, "n": jn.sum(x > 0)}

    (value, aux), g = jn.value_and_grad(loss, has_aux=True)(W, X)
    pred = X.astype(np.float64) @ W
    np.testing.assert_allclose(np.asarray(value), (pred**2).sum(), rtol=1e-5)
    assert set(aux) == {"pred", "n"}
    np.testing.assert_allclose(np.asarray(aux["pred"]), pred, rtol=1e-5, atol=1e-6)
    assert int(np.asarray(aux["n"])) == int((X > 0).sum())
    np.testing.assert_allclose(np.asarray(g), X.T @ (2 * pred), rtol=1e-5, atol=1e-5)
    # grad with has_aux: (grads, aux)
    g2, aux2 = jn.grad(loss, has_aux=True)(W, X)
    assert_same(g2, g)
    assert_same(aux2, aux)


def test_value_and_grad_compiled_as_one_program():
    vg = jn.compile(jn.value_and_grad(mlp_loss, argnums=(0, 1, 2)))
    value, grads = vg(X, W, B)
    want_value = np.mean(np.tanh(X.astype(np.float64) @ W + B) ** 2)
    np.testing.assert_allclose(np.asarray(value), want_value, rtol=1e-5)
    assert isinstance(grads, tuple) and len(grads) == 3
    gx, gw, gb = mlp_grads_np(X, W, B)
    np.testing.assert_allclose(np.asarray(grads[0]), gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads[1]), gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads[2]), gb, rtol=1e-5, atol=1e-6)
    assert vg.traces == 1
    vg(X + 1, W, B)
    assert vg.traces == 1  # same signature: no retrace


def test_has_aux_requires_a_pair():
    with pytest.raises(jn.TraceError, match="has_aux"):
        jn.value_and_grad(lambda x: jn.sum(x), has_aux=True)(X)


@pytest.mark.parametrize("argnums", [0, 1, 2, -1, (1,), (2, 0), (0, 1, 2)])
def test_argnums(argnums):
    full = mlp_grads_np(X, W, B)
    got = jn.grad(mlp_loss, argnums=argnums)(X, W, B)
    if isinstance(argnums, int):
        assert isinstance(got, jn.Array)
        np.testing.assert_allclose(np.asarray(got), full[argnums], rtol=1e-5, atol=1e-6)
    else:
        assert isinstance(got, tuple) and len(got) == len(argnums)
        for i, g in zip(argnums, got):
            np.testing.assert_allclose(np.asarray(g), full[i], rtol=1e-5, atol=1e-6)


def test_argnums_out_of_range():
    with pytest.raises(jn.TraceError, match="argnums"):
        jn.grad(mlp_loss, argnums=3)(X, W, B)


def test_grad_of_unused_argument_is_zero():
    g = jn.grad(lambda a, b: jn.sum(a * 2.0), argnums=(0, 1))(X, W)
    np.testing.assert_array_equal(np.asarray(g[0]), np.full_like(X, 2.0))
    assert np.asarray(g[1]).shape == W.shape and not np.asarray(g[1]).any()


def test_grad_of_python_scalar_argument():
    g = jn.grad(lambda x: x * x * x)(1.5)
    assert np.asarray(g).shape == ()
    np.testing.assert_allclose(float(np.asarray(g)), 3 * 1.5**2, rtol=1e-6)


# ---- pytrees of parameters ----


def linear_loss(params, x, y):
    pred = x @ params["w"] + params["b"]
    return jn.mean((pred - y) ** 2)


def linear_grads_np(w, b, x, y):
    r = 2 * (x @ w + b - y) / y.size
    return x.T @ r, r.sum(0)


Y = RNG.standard_normal((4, 5)).astype(np.float32)


def test_dict_params_grads_mirror_structure():
    params = {"w": W, "b": B}
    g = jn.grad(linear_loss)(params, X, Y)
    assert isinstance(g, dict) and set(g) == {"w", "b"}
    gw, gb = linear_grads_np(W.astype(np.float64), B, X, Y)
    np.testing.assert_allclose(np.asarray(g["w"]), gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g["b"]), gb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("container", [tuple, list])
def test_sequence_params_grads_mirror_structure(container):
    def loss(params, x):
        (w, b), scale = params[0], params[1]
        return jn.sum(jn.tanh(x @ w + b) * scale)

    params = container([container([W, B]), np.float32(0.5) * np.ones(5, np.float32)])
    g = jn.grad(loss)(params, X)
    assert type(g) is container and len(g) == 2 and type(g[0]) is container and len(g[0]) == 2
    t = np.tanh(X.astype(np.float64) @ W + B)
    dz = 0.5 * (1 - t * t)
    np.testing.assert_allclose(np.asarray(g[0][0]), X.T @ dz, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g[0][1]), dz.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g[1]), t.sum(0), rtol=1e-5, atol=1e-6)


def test_nested_pytree_with_argnums_tuple():
    params = {"layers": [{"w": W, "b": B}], "scale": np.float32(2.0)}

    def loss(p, x):
        layer = p["layers"][0]
        return p["scale"] * jn.sum(x @ layer["w"] + layer["b"])

    gp, gx = jn.grad(loss, argnums=(0, 1))(params, X)
    assert set(gp) == {"layers", "scale"} and isinstance(gp["layers"], list) and set(gp["layers"][0]) == {"w", "b"}
    np.testing.assert_allclose(np.asarray(gp["layers"][0]["w"]), 2 * X.T @ np.ones((4, 5)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gp["layers"][0]["b"]), np.full(5, 8.0), rtol=1e-6)
    np.testing.assert_allclose(float(np.asarray(gp["scale"])), (X @ W + B).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), 2 * np.ones((4, 5)) @ W.T, rtol=1e-6)


# ---- vjp ----


def test_vjp_tensorflow_gradients_example():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    w = RNG.standard_normal((4, 2)).astype(np.float32)
    out, vjp_fn = jn.vjp(lambda X, W: X @ W, x, w)
    ones = np.ones((3, 2), np.float32)
    gx, gw = vjp_fn(ones)
    np.testing.assert_allclose(np.asarray(out), x @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gx), ones @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), x.T @ ones, rtol=1e-5, atol=1e-6)


def test_vjp_with_cotangent_pytree():
    x = RNG.standard_normal((2, 3))
    y = RNG.standard_normal(3)

    def fn(x, y):
        return {"prod": jn.sin(x) * y, "total": jn.sum(x * x)}

    out, vjp_fn = jn.vjp(fn, x, y)
    np.testing.assert_allclose(np.asarray(out["prod"]), np.sin(x) * y, rtol=1e-12)
    ct = {"prod": RNG.standard_normal((2, 3)), "total": np.array(3.0)}
    gx, gy = vjp_fn(ct)
    np.testing.assert_allclose(np.asarray(gx), ct["prod"] * np.cos(x) * y + 3.0 * 2 * x, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(gy), (ct["prod"] * np.sin(x)).sum(0), rtol=1e-12)
    # a second cotangent through the same vjp_fn
    ct2 = {"prod": np.ones((2, 3)), "total": np.array(0.0)}
    gx2, _ = vjp_fn(ct2)
    np.testing.assert_allclose(np.asarray(gx2), np.cos(x) * y, rtol=1e-12)


def test_vjp_inside_compile():
    @jn.compile
    def f(x, ct):
        out, vjp_fn = jn.vjp(lambda a: jn.exp(a) * a, x)
        (g,) = vjp_fn(ct)
        return out, g

    x = RNG.standard_normal(5).astype(np.float32)
    ct = RNG.standard_normal(5).astype(np.float32)
    out, g = f(x, ct)
    np.testing.assert_allclose(np.asarray(out), np.exp(x) * x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g), ct * np.exp(x) * (1 + x), rtol=1e-5, atol=1e-6)


def test_vjp_cotangent_of_wrong_shape_raises():
    _, vjp_fn = jn.vjp(lambda x: x * 2.0, X)
    with pytest.raises(jn.TraceError, match="cotangent"):
        vjp_fn(np.ones((4, 4), np.float32))


# ---- the same value passed twice ----


def test_same_argument_twice_gets_separate_gradients():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    ga, gb = jn.grad(lambda a, b: jn.sum(a * b), argnums=(0, 1))(x, x)
    assert_same(ga, jn.asarray(x))
    assert_same(gb, jn.asarray(x))
    xa = jn.asarray(x)  # one Array object in both places
    ga, gb = jn.grad(lambda a, b: jn.sum(a * b * b), argnums=(0, 1))(xa, xa)
    np.testing.assert_allclose(np.asarray(ga), x * x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), 2 * x * x, rtol=1e-6)
    _, vjp_fn = jn.vjp(lambda a, b: a - b, x, x)
    ga, gb = vjp_fn(np.ones_like(x))
    np.testing.assert_array_equal(np.asarray(ga), np.ones_like(x))
    np.testing.assert_array_equal(np.asarray(gb), -np.ones_like(x))


def test_same_traced_value_twice_gets_separate_gradients():
    """Inside a trace both arguments are one node: only the differentiation tags tell them apart."""

    @jn.compile
    def f(x):
        ga, gb = jn.grad(lambda a, b: jn.sum(a * b * b), argnums=(0, 1))(x, x)
        _, vjp_fn = jn.vjp(lambda a, b: a - b, x, x)
        return ga, gb, vjp_fn(jn.ones_like(x))

    x = RNG.standard_normal((2, 3)).astype(np.float32)
    ga, gb, (va, vb) = f(x)
    np.testing.assert_allclose(np.asarray(ga), x * x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), 2 * x * x, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(va), np.ones_like(x))
    np.testing.assert_array_equal(np.asarray(vb), -np.ones_like(x))


# ---- higher derivatives ----


def _sig(x):
    return 1 / (1 + np.exp(-x))


SECOND = {  # f, f'' in closed form
    "tanh": (jn.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    "sigmoid": (jn.sigmoid, lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))),
    "exp": (jn.exp, np.exp),
    "sin": (jn.sin, lambda x: -np.sin(x)),
    "exp-sin": (lambda x: jn.exp(jn.sin(x)), lambda x: (np.cos(x) ** 2 - np.sin(x)) * np.exp(np.sin(x))),
    "tanh-sigmoid": (
        lambda x: jn.tanh(jn.sigmoid(x)),
        lambda x: (
            -2 * np.tanh(_sig(x)) * (1 - np.tanh(_sig(x)) ** 2) * (_sig(x) * (1 - _sig(x))) ** 2
            + (1 - np.tanh(_sig(x)) ** 2) * _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))
        ),
    ),
    "sin-times-x": (lambda x: jn.sin(x) * x, lambda x: 2 * np.cos(x) - x * np.sin(x)),
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_second_derivative(name):
    fn, d2 = SECOND[name]
    second = jn.grad(jn.grad(lambda x: jn.sum(fn(x))))
    for x in (-1.3, 0.4, 2.1):
        got = np.asarray(second(np.float64(x)))
        assert got.shape == () and got.dtype == np.float64
        np.testing.assert_allclose(float(got), d2(x), rtol=1e-10, atol=1e-12)


def test_third_derivative_and_compiled_second_derivative():
    third = jn.grad(jn.grad(jn.grad(lambda x: jn.sum(jn.sin(x)))))
    np.testing.assert_allclose(float(np.asarray(third(np.float64(0.7)))), -math.cos(0.7), rtol=1e-12)
    second = check(jn.grad(jn.grad(lambda x: jn.sum(jn.tanh(x)))), np.float32(0.3))
    np.testing.assert_allclose(float(np.asarray(second)), -2 * math.tanh(0.3) * (1 - math.tanh(0.3) ** 2), rtol=1e-5)


def test_hessian_vector_product_via_vjp_of_grad():
    a = RNG.standard_normal((3, 3))
    sym = a + a.T
    v = RNG.standard_normal(3)
    x = RNG.standard_normal(3)
    grad_f = jn.grad(lambda x: 0.5 * jn.sum(x * (sym @ x)) + jn.sum(x**3))
    _, vjp_fn = jn.vjp(grad_f, x)
    (hv,) = vjp_fn(v)
    np.testing.assert_allclose(np.asarray(hv), sym @ v + 6 * x * v, rtol=1e-10)


# ---- fusion of the backward pass ----


def test_value_and_grad_of_gelu_fuses_into_two_kernels():
    x = np.linspace(-4, 4, 1001).astype(np.float32)
    vg = jn.compile(jn.value_and_grad(lambda x: jn.sum(gelu(x))))
    kernels = vg.lower(x).schedule.kernels
    assert len(kernels) <= 2, vg.inspect(x)
    value, g = vg(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(float(np.asarray(value)), gelu_np(x64).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), gelu_grad_np(x64), rtol=1e-5, atol=1e-6)


def test_backward_of_an_elementwise_chain_is_one_kernel():
    x = np.linspace(-3, 3, 257).astype(np.float32)
    ct = RNG.standard_normal(257).astype(np.float32)
    back = jn.compile(lambda x, ct: jn.vjp(gelu, x)[1](ct))
    kernels = back.lower(x, ct).schedule.kernels
    assert len(kernels) == 1, back.inspect(x, ct)
    (g,) = back(x, ct)
    np.testing.assert_allclose(np.asarray(g), ct * gelu_grad_np(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
