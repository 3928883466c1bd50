"""Losses, each the mean over samples, written with the public ops (so they fuse and differentiate).

Class labels outside [0, num_classes) are an error, as in PyTorch. Concrete labels (numpy, lists,
Arrays called eagerly) raise an IndexError at the call. Traced labels cannot be read without a host
round trip, so there the loss and its gradients come out NaN for such a label; `train_step` and the
Trainer check their host batches before running (see `traced_labels`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np

import jitnet as jn
from jitnet.ir.trace import Tracer

# While a program is traced under `traced_labels`: (labels tracer, number of classes) per class-index loss.
_TRACED_LABELS: ContextVar[list | None] = ContextVar("jitnet_traced_labels", default=None)


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


def check_labels(loss: str, labels, num_classes: int) -> None:
    """Raise PyTorch's IndexError if a concrete label is outside [0, num_classes)."""
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        i = int(np.flatnonzero((lab < 0) | (lab >= num_classes))[0])
        raise IndexError(f"{loss}: label {lab.flat[i]} (sample {i}) is out of bounds for {num_classes} classes")


@contextlib.contextmanager
def traced_labels() -> Iterator[list]:
    """Collect (labels tracer, number of classes) of the class-index losses traced in this block, so a
    caller that traces a program can check the host labels it feeds the program before each run."""
    uses: list = []
    token = _TRACED_LABELS.set(uses)
    try:
        yield uses
    finally:
        _TRACED_LABELS.reset(token)


def _class_one_hot(loss: str, labels, num_classes: int):
    """one_hot(labels), checked: concrete labels on the host; traced ones get NaN rows where out of
    range, so a loss built on it and its gradients are NaN rather than a plausible number."""
    if not isinstance(labels, Tracer):
        check_labels(loss, labels, num_classes)
        return jn.one_hot(labels, num_classes)
    uses = _TRACED_LABELS.get()
    if uses is not None:
        uses.append((labels, num_classes))
    column = jn.expand_dims(labels, -1)  # a view: the test runs inside the loss's kernel
    return jn.where(column < 0, math.nan, jn.where(column < num_classes, jn.one_hot(labels, num_classes), math.nan))


def cross_entropy(logits, labels):
    """mean over samples of -log softmax(logits)[label]: the fused, max-shifted log_softmax keeps it
    finite for large logits."""
    _check_int_labels("cross_entropy", logits, labels)
    onehot = _class_one_hot("cross_entropy", labels, _shape(logits)[1])
    picked = jn.sum(jn.log_softmax(logits, -1) * onehot, -1)
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
    onehot = _class_one_hot("multiclass_hinge_loss", labels, _shape(scores)[1])
    true = jn.sum(scores * onehot, -1, keepdims=True)
    return jn.mean(jn.sum(jn.relu(scores - true + margin) * (1 - onehot), -1))


def binary_cross_entropy_with_logits(logits, targets):
    """mean(max(x, 0) - x * t + log(1 + exp(-|x|))): stable for logits of any size."""
    _check_same("binary_cross_entropy_with_logits", logits, targets)
    return jn.mean(jn.relu(logits) - logits * targets + jn.log1p(jn.exp(-jn.abs(logits))))


def accuracy(logits, labels):
    """Fraction of samples whose largest score is the label."""
    return jn.mean(jn.astype(jn.argmax(logits, -1) == labels, jn.float32))
