"""The transformer pieces (jn.erf/gelu/tril/triu/layer_norm/scaled_dot_product_attention, nn.GELU,
nn.LayerNorm, nn.MultiheadAttention) on each backend against the reference interpreter, and their
values and gradients against PyTorch (skipped where torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn
from jitnet import nn

RNG = np.random.default_rng(3)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def torch_or_skip():
    return pytest.importorskip("torch")


def test_tril_triu(backend):
    x = rand(2, 4, 6)
    for k in (-2, 0, 1, 5):
        lo, up = check(lambda a, k=k: (jn.tril(a, k), jn.triu(a, k)), x, backend=backend)
        np.testing.assert_array_equal(lo.numpy(), np.tril(x, k))
        np.testing.assert_array_equal(up.numpy(), np.triu(x, k))
    with pytest.raises(jn.TraceError, match="at least 2 dimensions"):
        jn.tril(np.ones(3, np.float32))


def test_erf_and_gelu_against_torch(backend):
    torch = torch_or_skip()
    x = np.concatenate([rand(200) * 4, np.array([0.0, -0.0, 6.0, -9.0, np.inf, -np.inf, np.nan], np.float32)])
    erf, exact, tanh = check(lambda a: (jn.erf(a), jn.gelu(a), jn.gelu(a, approximate="tanh")), x, backend=backend)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(erf.numpy(), torch.erf(t).numpy(), rtol=2e-7, atol=1e-7)
    # x * (1 + erf(x / sqrt 2)) / 2, as torch computes it: for x < -2, 1 + erf cancels, so an ulp of
    # erf is ~1e-7 absolute in the result (and ~1e-3 relative): the comparison is absolute there
    np.testing.assert_allclose(exact.numpy(), torch.nn.functional.gelu(t).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        tanh.numpy(), torch.nn.functional.gelu(t, approximate="tanh").numpy(), rtol=1e-6, atol=1e-6
    )
    finite = x[np.isfinite(x)]
    grad = check(jn.grad(lambda a: jn.sum(jn.gelu(a))), finite, backend=backend)
    tt = torch.from_numpy(finite).requires_grad_(True)
    torch.nn.functional.gelu(tt).sum().backward()
    np.testing.assert_allclose(grad.numpy(), tt.grad.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(jn.TraceError, match="approximate must be 'none' or 'tanh'"):
        jn.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("erf")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_against_torch(backend, dtype):
    torch = torch_or_skip()
    x, w, b = rand(3, 4, 10, dtype=dtype) * 3 + 1, rand(4, 10, dtype=dtype), rand(4, 10, dtype=dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12

    def loss(a, w, b):
        return jn.sum(jn.layer_norm(a, (4, 10), w, b, eps=1e-3) * jn.cos(a))

    y = check(lambda a, w, b: jn.layer_norm(a, (4, 10), w, b, eps=1e-3), x, w, b, backend=backend, rtol=tol)
    grads = check(jn.grad(loss, argnums=(0, 1, 2)), x, w, b, backend=backend, rtol=tol * 10, atol=tol)
    tx, tw, tb = (torch.from_numpy(v).requires_grad_(True) for v in (x, w, b))
    ty = torch.nn.functional.layer_norm(tx, (4, 10), tw, tb, eps=1e-3)
    (ty * torch.cos(tx)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=tol, atol=tol)
    for got, want in zip(grads, (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tol * 10, atol=tol * 10)
    with pytest.raises(jn.TraceError, match="not the trailing shape"):
        jn.layer_norm(x, (5,))


def test_layer_norm_float32_statistics_hold_a_large_mean(backend):
    """float32 rows take E[x] and E[x^2] in one pass, in float64: rows whose mean is 1e4 times their
    spread (E[x^2] - E[x]^2 would lose every digit in float32) still normalise to float32 accuracy,
    against float64 torch; and the gradient too."""
    torch = torch_or_skip()
    x = (rand(6, 64, dtype=np.float64) + 1e4).astype(np.float32)
    cos = np.cos(np.arange(64, dtype=np.float32))
    y, dx = check(
        lambda a: (jn.layer_norm(a, 64), jn.grad(lambda a: jn.sum(jn.layer_norm(a, 64) * cos))(a)),
        x,
        backend=backend,
        rtol=1e-5,
        atol=1e-5,
    )
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = torch.nn.functional.layer_norm(tx, (64,))
    (ty * torch.from_numpy(cos.astype(np.float64))).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "float"])
def test_attention_against_torch(backend, mask_kind):
    torch = torch_or_skip()
    q, k, v = rand(2, 3, 5, 8), rand(2, 3, 7, 8), rand(2, 3, 7, 4)
    if mask_kind == "causal":
        k, v = rand(2, 3, 5, 8), rand(2, 3, 5, 4)
    mask = {"bool": RNG.random((5, 7)) > 0.3, "float": rand(5, 7)}.get(mask_kind)
    if mask_kind == "bool":
        mask[:, 0] = True  # every row attends somewhere
    causal = mask_kind == "causal"

    def attend(q, k, v):
        return jn.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)

    out = check(attend, q, k, v, backend=backend, rtol=1e-5, atol=1e-6)
    grads = check(jn.grad(lambda *a: jn.sum(attend(*a) ** 2), argnums=(0, 1, 2)), q, k, v, backend=backend, rtol=1e-4)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    tmask = None if mask is None else torch.from_numpy(mask)
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, is_causal=causal)
    (to**2).sum().backward()
    np.testing.assert_allclose(out.numpy(), to.detach().numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, (tq.grad, tk.grad, tv.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_attention_shape_errors():
    with pytest.raises(jn.TraceError, match=r"expected q \(\.\.\., L, E\)"):
        jn.scaled_dot_product_attention(rand(2, 5, 8), rand(2, 7, 6), rand(2, 7, 4))


def test_layer_norm_module(backend):
    torch = torch_or_skip()
    layer = nn.LayerNorm(6)
    assert sorted(layer.state_dict()) == ["bias", "weight"] and np.all(layer.state_dict()["weight"].numpy() == 1)
    reference = torch.nn.LayerNorm(6)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(rand(6)))
        reference.bias.copy_(torch.from_numpy(rand(6)))
    layer.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    x = rand(4, 6)
    y = check(lambda a: layer(a), x, backend=backend)
    np.testing.assert_allclose(y.numpy(), reference(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert list(nn.LayerNorm(3, elementwise_affine=False).state_dict()) == []
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_torch_and_round_trips(backend, batch_first):
    torch = torch_or_skip()
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    layer = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    assert sorted(layer.state_dict()) == sorted(reference.state_dict())
    assert all(layer.state_dict()[k].shape == tuple(v.shape) for k, v in reference.state_dict().items())
    layer.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = rand(2, 5, 8) if batch_first else rand(5, 2, 8)
    for causal in (False, True):
        out, weights = check(lambda a, c=causal: layer(a, a, a, is_causal=c), x, backend=backend, rtol=1e-5)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(5) if causal else None
        t = torch.from_numpy(x)
        want, want_weights = reference(t, t, t, attn_mask=mask, is_causal=causal)
        np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(weights.numpy(), want_weights.detach().numpy(), rtol=1e-5, atol=1e-5)
    back = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    back.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in layer.state_dict().items()})
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiheadAttention(8, 3)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mask_kind", ["bool_per_head", "float"])
def test_multihead_cross_attention_and_gradients_match_torch(backend, batch_first, mask_kind):
    """Query, key and value all different (the self-attention path packs q, k, v into one product;
    this one projects each on its own), a key length unlike the query's, a mask, and the gradients
    of the projection weights and of the query."""
    torch = torch_or_skip()
    torch.manual_seed(1)
    reference = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    layer = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    layer.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    shape = (lambda n: (2, n, 8)) if batch_first else (lambda n: (n, 2, 8))
    q, k, v = rand(*shape(5)), rand(*shape(7)), rand(*shape(7))
    if mask_kind == "float":
        mask = (np.random.default_rng(2).standard_normal((5, 7)) * 2).astype(np.float32)
    else:
        mask = np.random.default_rng(2).random((2 * 2, 5, 7)) > 0.3
        mask[..., 0] = True  # every row keeps a position

    def loss(params, q, k, v):
        (out, weights), _ = layer.functional_call(params, {}, q, k, v, mask)
        return jn.sum(out * out) + jn.sum(weights)

    params = layer.parameters()
    value, grads = jn.compile(jn.value_and_grad(loss, argnums=(0, 1)), backend=backend)(params, q, k, v)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    tmask = torch.from_numpy(mask if mask_kind == "float" else ~mask)  # torch: True = masked out
    out, weights = reference(tq, tk, tv, attn_mask=tmask)
    want = (out * out).sum() + weights.sum()
    want.backward()
    np.testing.assert_allclose(float(value), want.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[1]), tq.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name in ("in_proj_weight", "out_proj.weight", "in_proj_bias"):
        want_grad = dict(reference.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(np.asarray(grads[0][name]), want_grad, rtol=1e-4, atol=1e-5)
