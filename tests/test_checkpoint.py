"""jn.save / jn.load: safetensors round trip, compatibility with the safetensors package, atomic
writes (an interrupted save keeps the previous file), clear errors on bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import jitnet as jn
from jitnet import checkpoint

STATE = {
    "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "layer.bias": np.array([1.5, -2.0], np.float64),
    "count": np.array(7, np.int64),
    "labels": np.array([1, 2, 3], np.int32),
    "mask": np.array([True, False]),
    "empty": np.zeros((0, 3), np.float32),
}


def test_round_trip_with_arrays_and_numpy(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    jn.save(path, {**STATE, "device": jn.asarray(np.ones((2, 2), np.float32))})
    got = jn.load(path)
    assert sorted(got) == sorted([*STATE, "device"])
    for k, v in STATE.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)
    np.testing.assert_array_equal(got["device"], np.ones((2, 2), np.float32))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left behind


def test_compatible_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    ours = tmp_path / "ours.safetensors"
    jn.save(ours, STATE)
    theirs = st.load_file(str(ours))
    for k, v in STATE.items():
        np.testing.assert_array_equal(theirs[k], v)
    path = tmp_path / "theirs.safetensors"
    st.save_file(STATE, str(path), metadata={"format": "np"})
    for k, v in jn.load(path).items():
        np.testing.assert_array_equal(v, STATE[k])


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    jn.save(path, STATE)
    before = path.read_bytes()

    def crash(*args):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        jn.save(path, {"other": np.ones(1000, np.float32)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_module_state_dict_round_trip(tmp_path):
    jn.manual_seed(0)
    model = jn.nn.Sequential(jn.nn.Linear(3, 4), jn.nn.BatchNorm1d(4))
    jn.save(tmp_path / "m.safetensors", model.state_dict())
    jn.manual_seed(1)
    other = jn.nn.Sequential(jn.nn.Linear(3, 4), jn.nn.BatchNorm1d(4))
    other.load_state_dict(jn.load(tmp_path / "m.safetensors"))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy())


def test_bad_files_and_values(tmp_path):
    path = tmp_path / "x.safetensors"
    jn.save(path, STATE)
    raw = path.read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        jn.load(tmp_path / "short")
    (tmp_path / "tiny").write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a safetensors file"):
        jn.load(tmp_path / "tiny")
    (tmp_path / "garbage").write_bytes((10).to_bytes(8, "little") + b"{not json!")
    with pytest.raises(ValueError, match="malformed header"):
        jn.load(tmp_path / "garbage")
    with pytest.raises(TypeError, match="cannot store"):
        jn.save(path, {"c": np.zeros(2, np.complex64)})
    with pytest.raises(TypeError, match="dict of arrays"):
        jn.save(path, [np.zeros(2)])
