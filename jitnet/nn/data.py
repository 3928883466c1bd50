"""Datasets: the handwritten digits embedded in the package, and an MNIST IDX reader.

Digits: the 1,797 8x8 images (16 grey levels) that scikit-learn bundles as `load_digits`, a copy of
the test set of the UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin and
C. Kaynak, 1998; UCI Machine Learning Repository, CC BY 4.0; scikit-learn, BSD-3-Clause). Stored
in `digits.npz` (45 KB) so the examples run on a fresh machine without scikit-learn.

The split is fixed: per class, the samples are shuffled with numpy's default_rng(0) and the first
20% (rounded) go to the test set, so train and test keep the class balance (1,438 / 359 images).
"""

from __future__ import annotations

import gzip
import os
import struct
from importlib import resources

import numpy as np

DIGITS_FILE = "digits.npz"


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("jitnet.nn").joinpath(DIGITS_FILE).open("rb") as f:
        npz = np.load(f)
        return npz["images"], npz["labels"]


def digits_split(labels: np.ndarray, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): stratified, shuffled per class by default_rng(0)."""
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(flatten: bool = False):
    """((x_train, y_train), (x_test, y_test)): float32 images in [0, 1] of shape (N, 1, 8, 8)
    ((N, 64) with flatten) and int64 labels 0..9."""
    images, labels = _digits_raw()
    x = (images.astype(np.float32) / 16.0).reshape(len(images), 1, 8, 8)
    if flatten:
        x = x.reshape(len(x), -1)
    y = labels.astype(np.int64)
    tr, te = digits_split(y)
    return (x[tr], y[tr]), (x[te], y[te])


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """One IDX file (MNIST's format), raw or gzip-compressed; bad or truncated files raise a
    ValueError naming the file and the problem."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise ValueError(f"{path}: truncated or corrupt: shape {shape} needs {need} bytes of data, found {len(body)}")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {stem}[.gz] in {folder} (expected the four MNIST IDX files)")


def load_mnist(folder: str, flatten: bool = False):
    """((x_train, y_train), (x_test, y_test)) from MNIST's four IDX files in `folder` (raw or .gz):
    float32 images in [0, 1] of shape (N, 1, 28, 28) ((N, 784) with flatten), int64 labels."""
    out = []
    for part in ("train", "t10k"):
        images = read_idx(_find(folder, f"{part}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{part}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
        x = (images.astype(np.float32) / 255.0)[:, None]
        out.append((x.reshape(len(x), -1) if flatten else x, labels.astype(np.int64)))
    return tuple(out)


def load(data_dir: str | None = None, flatten: bool = False):
    """The digits by default, MNIST from `data_dir` when given."""
    return load_mnist(data_dir, flatten) if data_dir else load_digits(flatten)
