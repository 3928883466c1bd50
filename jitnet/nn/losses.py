"""Losses, each the mean over samples, written with the public ops (so they fuse and differentiate)."""

from __future__ import annotations

import numpy as np

import jitnet as jn


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def _dtype(x) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def _check_batch(loss: str, a, b) -> None:
    sa, sb = _shape(a), _shape(b)
    if not sa or not sb or sa[0] != sb[0]:
        raise ValueError(f"{loss}: batch sizes differ: predictions {sa}, targets {sb}")


def _check_int_labels(loss: str, scores, labels) -> None:
    if _dtype(labels).kind not in "iu":
        raise TypeError(f"{loss}: labels must be integer class indices (int32/int64), got {_dtype(labels).name}")
    s, lab = _shape(scores), _shape(labels)
    if len(s) != 2 or len(lab) != 1:
        raise ValueError(f"{loss}: expected scores (N, C) and labels (N,), got {s} and {lab}")
    _check_batch(loss, scores, labels)


def _check_same(loss: str, a, b) -> None:
    _check_batch(loss, a, b)
    if _shape(a) != _shape(b):
        raise ValueError(f"{loss}: predictions {_shape(a)} and targets {_shape(b)} must have one shape")


def cross_entropy(logits, labels):
    """mean over samples of -log softmax(logits)[label]: the fused, max-shifted log_softmax keeps it
    finite for large logits."""
    _check_int_labels("cross_entropy", logits, labels)
    picked = jn.sum(jn.log_softmax(logits, -1) * jn.one_hot(labels, _shape(logits)[1]), -1)
    return -jn.mean(picked)


def mse_loss(pred, target):
    """mean((pred - target)**2) over all elements, as PyTorch's."""
    _check_same("mse_loss", pred, target)
    return jn.mean(jn.square(pred - target))


def hinge_loss(scores, labels_pm1):
    """mean(max(0, 1 - y * s)) with labels in {-1, +1}."""
    _check_same("hinge_loss", scores, labels_pm1)
    return jn.mean(jn.relu(1 - labels_pm1 * scores))


def multiclass_hinge_loss(scores, labels, margin: float = 1.0):
    """The multiclass SVM loss: mean over samples of sum over wrong classes j of
    max(0, s_j - s_label + margin)."""
    _check_int_labels("multiclass_hinge_loss", scores, labels)
    onehot = jn.one_hot(labels, _shape(scores)[1])
    true = jn.sum(scores * onehot, -1, keepdims=True)
    return jn.mean(jn.sum(jn.relu(scores - true + margin) * (1 - onehot), -1))


def binary_cross_entropy_with_logits(logits, targets):
    """mean(max(x, 0) - x * t + log(1 + exp(-|x|))): stable for logits of any size."""
    _check_same("binary_cross_entropy_with_logits", logits, targets)
    return jn.mean(jn.relu(logits) - logits * targets + jn.log1p(jn.exp(-jn.abs(logits))))


def accuracy(logits, labels):
    """Fraction of samples whose largest score is the label."""
    return jn.mean(jn.astype(jn.argmax(logits, -1) == labels, jn.float32))
