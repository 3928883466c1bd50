"""Datasets: the embedded digits and their fixed split; the MNIST IDX reader and its errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from jitnet.nn import data


def test_digits_split_is_fixed_stratified_and_complete():
    (xtr, ytr), (xte, yte) = data.load_digits()
    assert xtr.shape == (1438, 1, 8, 8) and xte.shape == (359, 1, 8, 8)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64 and xtr.min() >= 0 and xtr.max() == 1.0
    assert np.all(np.abs(np.bincount(yte) / np.bincount(ytr) - 0.25) < 0.02)  # 20/80 in every class
    (again, _), _ = data.load_digits()
    np.testing.assert_array_equal(again, xtr)
    train, test = data.digits_split(np.concatenate([ytr, yte]))
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    assert data.load_digits(flatten=True)[0][0].shape == (1438, 64)


def test_digits_equal_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    images, labels = data._digits_raw()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(labels, d.target)


def _idx(array: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_mnist(folder, n_train=5, n_test=3, gz=True):
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for stem, arr, code in ((f"{part}-images-idx3-ubyte", images, 8), (f"{part}-labels-idx1-ubyte", labels, 8)):
            raw = _idx(arr, code)
            if gz:
                with gzip.open(folder / (stem + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (folder / stem).write_bytes(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    (xtr, ytr), (xte, _) = data.load(str(tmp_path))
    assert xtr.shape == (5, 1, 28, 28) and xte.shape == (3, 1, 28, 28) and ytr.dtype == np.int64
    raw = data.read_idx(str(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))))
    np.testing.assert_allclose(xtr[:, 0], raw / 255.0, rtol=1e-6)
    assert data.load_mnist(str(tmp_path), flatten=True)[1][0].shape == (3, 784)


def test_mnist_bad_files(tmp_path):
    good = _idx(np.zeros((4, 28, 28), np.uint8), 8)
    (tmp_path / "trunc").write_bytes(good[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(str(tmp_path / "trunc"))
    (tmp_path / "magic").write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(str(tmp_path / "magic"))
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read"):
        data.read_idx(str(tmp_path / "bad.gz"))
    with pytest.raises(FileNotFoundError, match="expected the four MNIST IDX files"):
        data.load_mnist(str(tmp_path))
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2, np.uint8), 8))
    with pytest.raises(ValueError, match="do not match"):
        data.load_mnist(str(tmp_path))
