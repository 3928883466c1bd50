"""jn.save / jn.load: safetensors round trip, compatibility with the safetensors package, atomic
writes (an interrupted save keeps the previous file), clear errors on bad files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

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


def _file(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


F12 = np.arange(12, dtype=np.float32).tobytes()  # 48 bytes
MALFORMED = {
    # a (3, 4) array read from bytes 0..48 of 96 (jn.load used to return it)
    "negative shape and end": ({"a": _tensor("F32", [-3, 4], 0, -48)}, F12 * 2, "'a' has shape"),
    "overlap": ({"a": _tensor("F32", [12], 0, 48), "b": _tensor("F32", [6], 24, 48)}, F12, "'b' starts at byte 24"),
    "gap": ({"a": _tensor("F32", [6], 0, 24), "b": _tensor("F32", [3], 36, 48)}, F12, "'b' starts at byte 36"),
    "trailing junk": ({"a": _tensor("F32", [12], 0, 48)}, F12 + b"junk", "cover 48 bytes of data, but 52"),
    "size mismatch": ({"a": _tensor("F32", [3, 3], 0, 48)}, F12, "'a' (F32, shape [3, 3]) needs 36 bytes"),
    "absurd shape": ({"a": _tensor("F32", [2**40, 2**40], 0, 48)}, F12, "'a' (F32, shape"),
    "huge empty shape": ({"a": _tensor("F32", [0, 2**62], 0, 0)}, b"", "'a' of shape"),
    "unknown dtype": ({"a": _tensor("F33", [12], 0, 48)}, F12, "'a' has dtype 'F33'"),
    "offsets not a pair": ({"a": _tensor("F32", [12], 0, 48) | {"data_offsets": [0]}}, F12, "'a' has data_offsets"),
    "float shape": ({"a": _tensor("F32", [12.0], 0, 48)}, F12, "'a' has shape"),
    "metadata not str": ({"__metadata__": {"epoch": 3}, "a": _tensor("F32", [12], 0, 48)}, F12, "__metadata__"),
    "entry not an object": ({"a": [1, 2]}, F12, "'a': header entry"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_load_rejects_malformed_files_as_safetensors_does(tmp_path, case):
    header, data, problem = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_file(header, data))
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        jn.load(path)
    assert str(path) in str(err.value) and problem in str(err.value)
    st = pytest.importorskip("safetensors.numpy")
    with pytest.raises(Exception):  # noqa: B017 (the package raises its own error types)
        st.load_file(str(path))


def test_load_rejects_duplicate_names_and_non_utf8_headers(tmp_path):
    text = (
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    )
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        jn.load(path)
    text = '{"\u00e9":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.encode("utf-16")
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(ValueError, match="malformed header"):
        jn.load(path)


def test_load_accepts_valid_edge_cases(tmp_path):
    header = {
        "__metadata__": {"format": "np"},
        "empty": _tensor("F32", [0, 5], 0, 0),
        "a": _tensor("U16", [2], 0, 4),
        "scalar": _tensor("I64", [], 4, 12),
    }
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_file(header, np.array([1, 2], "<u2").tobytes() + np.array(-3, "<i8").tobytes()))
    got = jn.load(path)
    assert got["empty"].shape == (0, 5) and got["a"].tolist() == [1, 2] and got["scalar"] == -3


def _temp_name(target: str, host: str, pid: int) -> str:
    return f"{target}.{host}-{pid}.abc_123.tmp"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    jn.save(path, STATE)
    # a process that dies (os._exit) while writing: its temporary file stays behind
    script = (
        "import importlib.util, os, sys\n"
        "spec = importlib.util.spec_from_file_location('ckpt', sys.argv[1])\n"
        "ckpt = importlib.util.module_from_spec(spec); spec.loader.exec_module(ckpt)\n"
        "ckpt.os.fsync = lambda fd: os._exit(3)\n"
        "ckpt.save(sys.argv[2], {'x': __import__('numpy').ones(1000)})\n"
    )
    run = subprocess.run([sys.executable, "-c", script, checkpoint.__file__, str(path)])
    assert run.returncode == 3
    leftover = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftover) == 1
    jn.save(path, STATE)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(jn.load(path)["count"], STATE["count"])


def test_the_next_save_keeps_temp_files_that_may_still_be_written(tmp_path):
    host, dead = checkpoint._HOST, _dead_pid()
    keep = [
        _temp_name("ckpt.safetensors", host, os.getpid()),  # a live writer (another thread of this process)
        _temp_name("ckpt.safetensors", "otherhost", dead),  # another machine's writer on a shared disk
        _temp_name("other.safetensors", host, dead),  # another target's
    ]
    stale = _temp_name("ckpt.safetensors", host, dead)
    for name in [*keep, stale]:
        (tmp_path / name).write_bytes(b"partial")
    jn.save(tmp_path / "ckpt.safetensors", STATE)
    assert sorted(os.listdir(tmp_path)) == sorted([*keep, "ckpt.safetensors"])


def test_save_into_a_missing_directory_names_the_target(tmp_path):
    path = tmp_path / "no" / "such" / "ckpt.safetensors"
    with pytest.raises(FileNotFoundError, match=r"jn\.save: cannot write .*ckpt\.safetensors \(in .*such\)") as err:
        jn.save(path, STATE)
    assert ".tmp" not in str(err.value)
    with pytest.raises(IsADirectoryError, match=r"jn\.save: cannot write"):
        jn.save(tmp_path, STATE)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
