"""`Trainer.fit(log_dir=...)`: TensorBoard scalars (read back from the event files) and log.csv,
per step and per epoch; tensorboardX or torch's writer, a clear ImportError without either; only
rank 0 writes."""

from __future__ import annotations

import csv
import os
import struct
import sys
import types
from collections import defaultdict

import numpy as np
import pytest

import jitnet as jn
from jitnet import nn, optim
from jitnet.nn.callbacks import Callback, ModelCheckpoint, TensorBoard

RNG = np.random.default_rng(1)
X = RNG.standard_normal((40, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 40).astype(np.int64)
XV, YV = X[:16], Y[:16]


def make_trainer(lr=0.1) -> nn.Trainer:
    jn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=lr, momentum=0.9))


class BatchLogs(Callback):
    def __init__(self):
        self.logs = []

    def on_batch_end(self, batch, logs):
        self.logs.append(dict(logs))


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] sorted by step, from every event file in `folder`: TFRecords (a length,
    its CRC, the data, its CRC) of tensorboardX's Event protos."""
    from tensorboardX.proto import event_pb2

    scalars = defaultdict(list)
    for name in os.listdir(folder):
        data = (folder / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars[value.tag].append((event.step, value.simple_value))
    return {tag: sorted(values) for tag, values in scalars.items()}


def as_float32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]


def test_fit_log_dir_writes_tensorboard_scalars_and_a_csv_log(on_backend, tmp_path):
    trainer = make_trainer()
    trainer.optimizer.lr = optim.schedules.step(0.1, step_size=3, gamma=0.5)  # a rate that changes per step
    batches = BatchLogs()
    log_dir = tmp_path / "run"
    history = trainer.fit(
        X, Y, epochs=3, batch_size=20, validation_data=(XV, YV), verbose=0, callbacks=[batches], log_dir=log_dir
    )
    assert sorted(history) == ["accuracy", "loss", "lr", "samples_per_s", "val_accuracy", "val_loss"]
    assert history["lr"] == [0.1, 0.05, 0.05]  # the rate of each epoch's last update (updates 2, 4, 6)
    train = read_scalars(log_dir / "train")
    assert sorted(train) == [
        "batch_accuracy",
        "batch_loss",
        "batch_lr",
        "batch_samples_per_s",
        "epoch_accuracy",
        "epoch_loss",
        "epoch_lr",
        "epoch_samples_per_s",
    ]
    steps = list(range(1, 7))
    assert train["batch_loss"] == list(zip(steps, as_float32(b["loss"] for b in batches.logs)))
    assert train["batch_accuracy"] == list(zip(steps, as_float32(b["accuracy"] for b in batches.logs)))
    assert train["batch_lr"] == list(zip(steps, as_float32([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])))
    assert [s for s, v in train["batch_samples_per_s"] if v > 0] == steps
    for name in ["loss", "accuracy", "lr", "samples_per_s"]:
        assert train[f"epoch_{name}"] == list(zip([0, 1, 2], as_float32(history[name]))), name
    validation = read_scalars(log_dir / "validation")
    assert sorted(validation) == ["epoch_accuracy", "epoch_loss"]
    assert validation["epoch_loss"] == list(zip([0, 1, 2], as_float32(history["val_loss"])))
    with open(log_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for k, v in history.items():
        assert [float(r[k]) for r in rows] == v, k
    # a second fit continues the logs: new event files (none overwritten), rows appended
    more = trainer.fit(X, Y, epochs=2, batch_size=20, validation_data=(XV, YV), verbose=0, log_dir=log_dir)
    assert len(os.listdir(log_dir / "train")) == 2 and len(os.listdir(log_dir / "validation")) == 2
    train = read_scalars(log_dir / "train")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2, 3, 4]
    assert [s for s, _ in train["batch_loss"]] == list(range(1, 11))
    assert train["epoch_loss"][3:] == list(zip([3, 4], as_float32(more["loss"])))
    rows = (log_dir / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and rows[-1].startswith("4,")


def test_tensorboard_update_freq(tmp_path):
    trainer = make_trainer()
    trainer.fit(X, Y, epochs=2, batch_size=10, verbose=0, callbacks=[TensorBoard(tmp_path / "a", update_freq=3)])
    assert [s for s, _ in read_scalars(tmp_path / "a" / "train")["batch_loss"]] == [3, 6]
    trainer.fit(X, Y, epochs=1, batch_size=10, verbose=0, callbacks=[TensorBoard(tmp_path / "b")])  # "epoch"
    assert sorted(read_scalars(tmp_path / "b" / "train")) == [
        "epoch_accuracy",
        "epoch_loss",
        "epoch_lr",
        "epoch_samples_per_s",
    ]
    with pytest.raises(ValueError, match='TensorBoard: update_freq must be "epoch" or an integer >= 1, got 0'):
        TensorBoard(tmp_path, update_freq=0)


def test_torch_writer_when_tensorboardx_is_missing(tmp_path, monkeypatch):
    written = []

    class SummaryWriter:
        def __init__(self, log_dir, filename_suffix=""):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((os.path.basename(self.log_dir), tag, step))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    trainer = make_trainer()
    trainer.fit(X, Y, epochs=1, batch_size=40, verbose=0, log_dir=tmp_path)
    assert ("train", "batch_loss", 1) in written and ("train", "epoch_lr", 0) in written


def test_a_clear_import_error_without_a_tensorboard_writer(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install jitnet\[tensorboard\]"):
        TensorBoard(tmp_path)
    trainer = make_trainer()
    with pytest.raises(ImportError, match="TensorBoard logging needs tensorboardX"):
        trainer.fit(X, Y, verbose=0, log_dir=tmp_path / "logs")
    assert trainer.optimizer.iterations == 0 and not os.listdir(tmp_path)  # refused before training


def test_only_rank_0_writes(tmp_path, monkeypatch, capsys):
    """Another rank of a data-parallel job: same logs and history, no files (its _world says rank 1)."""
    trainer = make_trainer()
    monkeypatch.setattr(trainer, "_world", lambda: (2, 1))
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch}.safetensors", monitor="loss", verbose=1)
    history = trainer.fit(X, Y, epochs=2, batch_size=20, verbose=0, callbacks=[checkpoint], log_dir=tmp_path / "logs")
    assert history["lr"] == [0.1, 0.1] and trainer.epoch == 2
    assert os.listdir(tmp_path) == [] and capsys.readouterr().out == ""  # nor prints
