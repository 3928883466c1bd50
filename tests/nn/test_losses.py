"""Losses against numpy references (and PyTorch where installed), compiled for each backend and
checked against the numpy reference interpreter too; bad inputs raise clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import jitnet as jn
from jitnet import nn

RNG = np.random.default_rng(0)
LOGITS = (RNG.standard_normal((6, 4)) * 3).astype(np.float32)
LABELS = np.array([0, 3, 1, 1, 2, 3], np.int64)


def value_and_grad(loss, *args, backend):
    """The loss and its gradient compiled for `backend`, checked against the interpreter."""
    got, grad = check(jn.value_and_grad(loss), *args, backend=backend)
    return float(got), grad.numpy()


def value(loss, *args, backend):
    return float(check(loss, *args, backend=backend))


def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


def test_cross_entropy_value_gradient_and_large_logits(backend):
    loss, grad = value_and_grad(nn.cross_entropy, LOGITS, LABELS, backend=backend)
    onehot = np.eye(4)[LABELS]
    assert loss == pytest.approx(-np.mean(log_softmax(LOGITS)[np.arange(6), LABELS]), rel=1e-5)
    np.testing.assert_allclose(grad, (np.exp(log_softmax(LOGITS)) - onehot) / 6, rtol=1e-4, atol=1e-6)
    big = np.array([[1000.0, -1000.0, 0.0], [-5e4, 5e4, 0.0]], np.float32)
    loss, grad = value_and_grad(nn.cross_entropy, big, np.array([1, 1]), backend=backend)
    assert loss == pytest.approx(1000.0, rel=1e-6) and np.isfinite(grad).all()
    assert value(nn.cross_entropy, LOGITS, LABELS.astype(np.int32), backend=backend) == pytest.approx(
        -np.mean(log_softmax(LOGITS)[np.arange(6), LABELS]), rel=1e-5
    )


def test_mse_hinge_multiclass_hinge_bce(backend):
    pred, target = LOGITS, RNG.standard_normal((6, 4)).astype(np.float32)
    loss, grad = value_and_grad(nn.mse_loss, pred, target, backend=backend)
    assert loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-5)
    np.testing.assert_allclose(grad, 2 * (pred - target) / pred.size, rtol=1e-5)

    s = LOGITS[:, 0]
    y = np.where(RNG.random(6) < 0.5, -1.0, 1.0).astype(np.float32)
    loss, grad = value_and_grad(nn.hinge_loss, s, y, backend=backend)
    assert loss == pytest.approx(np.mean(np.maximum(0, 1 - y * s)), rel=1e-5)
    np.testing.assert_allclose(grad, np.where(1 - y * s > 0, -y, 0) / 6, rtol=1e-6)

    def svm(scores, labels, margin):
        true = scores[np.arange(len(labels)), labels][:, None]
        terms = np.maximum(0, scores - true + margin)
        terms[np.arange(len(labels)), labels] = 0
        return terms.sum(1).mean()

    for margin in (1.0, 2.5):
        got = value(lambda s, y, m=margin: nn.multiclass_hinge_loss(s, y, m), LOGITS, LABELS, backend=backend)
        assert got == pytest.approx(svm(LOGITS.astype(np.float64), LABELS, margin), rel=1e-5)

    t = (RNG.random((6, 4)) < 0.5).astype(np.float32)
    x = LOGITS * 10  # large logits stay finite
    loss, grad = value_and_grad(nn.binary_cross_entropy_with_logits, x, t, backend=backend)
    x64 = x.astype(np.float64)
    want = np.mean(np.maximum(x64, 0) - x64 * t + np.log1p(np.exp(-np.abs(x64))))
    assert loss == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-x64)) - t) / x.size, rtol=1e-4, atol=1e-7)


def test_against_torch(backend):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits, labels = torch.from_numpy(LOGITS), torch.from_numpy(LABELS)
    t = torch.from_numpy((RNG.random((6, 4)) < 0.5).astype(np.float32))
    for ours, theirs, args in [
        (nn.cross_entropy, F.cross_entropy(logits, labels), (LOGITS, LABELS)),
        (nn.multiclass_hinge_loss, F.multi_margin_loss(logits, labels) * 4, (LOGITS, LABELS)),
        (nn.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits(logits, t), (LOGITS, t.numpy())),
        (nn.mse_loss, F.mse_loss(logits, t), (LOGITS, t.numpy())),
    ]:
        assert value(ours, *args, backend=backend) == pytest.approx(float(theirs), rel=1e-5)


def test_bad_inputs():
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        nn.cross_entropy(LOGITS, LABELS.astype(np.float32))
    with pytest.raises(ValueError, match="batch sizes differ"):
        nn.cross_entropy(LOGITS, LABELS[:4])
    with pytest.raises(ValueError, match=r"expected scores \(N, C\) and labels \(N,\)"):
        nn.multiclass_hinge_loss(LOGITS, LABELS[:, None])
    with pytest.raises(ValueError, match="batch sizes differ"):
        nn.mse_loss(LOGITS, LOGITS[:3])
    with pytest.raises(ValueError, match="must have one shape"):
        nn.hinge_loss(LOGITS, LOGITS[:, :1])


@pytest.mark.parametrize("loss", [nn.cross_entropy, nn.multiclass_hinge_loss])
def test_out_of_range_labels_raise_on_concrete_labels(loss):
    name = loss.__name__
    with pytest.raises(IndexError, match=f"{name}: label 7 \\(sample 1\\) is out of bounds for 3 classes"):
        loss(np.zeros((2, 3), np.float32), [0, 7])
    with pytest.raises(IndexError, match=f"{name}: label -1 \\(sample 0\\) is out of bounds for 4 classes"):
        loss(LOGITS, np.array([-1, 0, 1, 2, 3, 3]))
    with pytest.raises(IndexError, match="label 4 \\(sample 5\\)"):  # Arrays called eagerly too
        loss(jn.asarray(LOGITS), jn.asarray(np.array([0, 1, 2, 3, 0, 4])))
    torch = pytest.importorskip("torch")
    with pytest.raises(IndexError, match="out of bounds"):  # what PyTorch does
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 7]))


@pytest.mark.parametrize("loss", [nn.cross_entropy, nn.multiclass_hinge_loss])
def test_out_of_range_traced_labels_give_nan_loss_and_gradient(loss, backend):
    """Compiled code cannot read the labels without a host round trip: a bad label makes the loss and
    its sample's gradient NaN, never a plausible number; the other samples' gradients stay finite."""
    labels = np.array([0, 3, 4, 1, -2, 2])
    got, grad = check(jn.value_and_grad(loss), LOGITS, labels, backend=backend)
    grad = grad.numpy()
    assert np.isnan(float(got))
    assert np.isnan(grad[[2, 4]]).all() and np.isfinite(grad[[0, 1, 3, 5]]).all()
    assert np.isfinite(float(check(loss, LOGITS, LABELS, backend=backend)))
