"""Keras-style callbacks (jitnet/nn/callbacks.py) on real short trainings of a tiny MLP: the hook
order, EarlyStopping, ModelCheckpoint (atomic), ReduceLROnPlateau (no recompile), TerminateOnNaN,
CSVLogger, and clear errors for bad arguments. The callbacks only read the logs and the trainer, so
the tests whose point is the step itself (the hooks around it, a rate changed without a retrace) run
on every backend, and the rest on the CPU: under the CUDA simulator each training takes minutes."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import jitnet as jn
from jitnet import nn, optim
from jitnet.nn.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 40).astype(np.int64)
# a noisy copy of half the training set: its loss falls, then rises as the model overfits
XV = (X[:20] + 0.5 * RNG.standard_normal((20, 6))).astype(np.float32)
YV = Y[:20]


def make_trainer(lr=0.2, seed=0) -> nn.Trainer:
    jn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=lr, momentum=0.9))


def weights(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


class Recorder(Callback):
    """Every hook call, and the model's weights at each epoch's end."""

    def __init__(self):
        self.calls, self.weights, self.batch_logs, self.epoch_logs = [], [], [], []

    def on_train_begin(self, logs):
        self.calls.append(("train_begin",))

    def on_train_end(self, logs):
        self.calls.append(("train_end",))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch))
        self.weights.append(weights(self.trainer.model))
        self.epoch_logs.append(dict(logs))

    def on_batch_end(self, batch, logs):
        self.calls.append(("batch_end", batch))
        self.batch_logs.append(dict(logs))


class Script(Callback):
    """Puts scripted values under `key` in the epoch logs: a monitored value chosen by the test."""

    def __init__(self, values, key="score"):
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch]


def test_hooks_are_called_in_keras_order_with_the_logs(on_backend):
    trainer = make_trainer()
    rec = Recorder()
    history = trainer.fit(X, Y, epochs=2, batch_size=20, validation_data=(XV, YV), verbose=0, callbacks=[rec])
    epoch = [("batch_end", 0), ("batch_end", 1)]
    assert rec.calls == [
        ("train_begin",),
        ("epoch_begin", 0),
        *epoch,
        ("epoch_end", 0),
        ("epoch_begin", 1),
        *epoch,
        ("epoch_end", 1),
        ("train_end",),
    ]
    assert rec.trainer is trainer
    assert set(rec.batch_logs[0]) == {"loss", "accuracy", "samples_per_s"}
    for i, logs in enumerate(rec.epoch_logs):
        assert logs == {k: v[i] for k, v in history.items()}
    rec.calls.clear()
    trainer.fit(X, Y, epochs=1, batch_size=40, verbose=0, callbacks=[rec])  # a second fit counts on
    assert rec.calls == [("train_begin",), ("epoch_begin", 2), ("batch_end", 0), ("epoch_end", 2), ("train_end",)]


def test_a_callback_stops_training_and_bad_callbacks_are_refused():
    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs):
            self.trainer.stop_training = True

    trainer = make_trainer()
    history = trainer.fit(X, Y, epochs=5, batch_size=20, verbose=0, callbacks=[StopAfterFirstEpoch()])
    assert len(history["loss"]) == 1 and trainer.epoch == 1
    history = trainer.fit(X, Y, epochs=1, batch_size=20, verbose=0)  # the next fit starts afresh
    assert len(history["loss"]) == 1 and trainer.epoch == 2
    with pytest.raises(TypeError, match=r"callbacks must be jn\.nn\.callbacks\.Callback objects"):
        trainer.fit(X, Y, verbose=0, callbacks=[lambda logs: None])
    assert trainer.epoch == 2


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    trainer = make_trainer()
    rec = Recorder()
    # no later epoch's loss beats the first by 100: the count starts at epoch 1, patience 2 stops at 2
    stop = EarlyStopping(monitor="loss", min_delta=100, patience=2, restore_best_weights=True)
    history = trainer.fit(X, Y, epochs=10, batch_size=20, verbose=0, callbacks=[rec, stop])
    assert len(history["loss"]) == 3 and stop.stopped_epoch == 2 and trainer.epoch == 3
    assert stop.best_epoch == 0 and stop.best == history["loss"][0]
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(v, rec.weights[0][k], err_msg=k)


def expected_stop(values, patience):
    """(stopped epoch, best epoch) by Keras's rule for a minimised value."""
    best, best_epoch, wait = None, None, 0
    for epoch, v in enumerate(values):
        wait += 1
        if best is None or v < best:
            best, best_epoch, wait = v, epoch, 0
        elif wait >= patience:
            return epoch, best_epoch
    return None, best_epoch


def test_early_stopping_on_val_loss_restores_the_best_epochs_weights_exactly():
    trainer = make_trainer()
    rec = Recorder()
    stop = EarlyStopping(patience=3, restore_best_weights=True)  # monitor val_loss, mode min
    history = trainer.fit(X, Y, epochs=15, batch_size=10, validation_data=(XV, YV), verbose=0, callbacks=[rec, stop])
    # Keras's rule on the values seen stops exactly at the last epoch run (not before, and not later)
    stopped, best = expected_stop(history["val_loss"], patience=3)
    assert stopped == len(history["val_loss"]) - 1 < 14 and best > 0, history["val_loss"]  # it overfit
    assert (stop.stopped_epoch, stop.best_epoch) == (stopped, best)
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(v, rec.weights[best][k], err_msg=k)
    assert not np.array_equal(rec.weights[best]["0.weight"], rec.weights[-1]["0.weight"])


def test_early_stopping_baseline_and_start_from_epoch():
    trainer = make_trainer()
    # the baseline 0.5 is never beaten: improvements do not restart the count, the first miss stops
    stop = EarlyStopping(monitor="score", patience=2, baseline=0.5)
    history = trainer.fit(
        X, Y, epochs=8, batch_size=40, verbose=0, callbacks=[Script([5, 4, 3, 3.5, 2, 1, 0, 0]), stop]
    )
    assert len(history["score"]) == 4 and stop.stopped_epoch == 3
    # epochs (counted over fits) before start_from_epoch do not count; "score" is minimised (mode auto)
    stop = EarlyStopping(monitor="score", patience=1, start_from_epoch=8)
    scores = Script([0] * 8 + [3, 4, 5, 6])
    trainer.fit(X, Y, epochs=4, batch_size=40, verbose=0, callbacks=[scores, stop])
    assert trainer.epoch == 8 and stop.best is None and stop.stopped_epoch is None  # epochs 4..7
    trainer.fit(X, Y, epochs=4, batch_size=40, verbose=0, callbacks=[scores, stop])
    assert trainer.epoch == 10 and stop.best_epoch == 8 and stop.stopped_epoch == 9
    # accuracy-like names are maximised: 0.7 improves on 0.5, 0.6 misses
    stop = EarlyStopping(monitor="val_accuracy", patience=1)
    accuracies = Script(dict(enumerate([0.5, 0.7, 0.6, 0.9, 1.0], start=10)), key="val_accuracy")
    trainer.fit(X, Y, epochs=5, batch_size=40, verbose=0, callbacks=[accuracies, stop])
    assert stop.best_epoch == 11 and stop.stopped_epoch == 12 and trainer.epoch == 13


def test_model_checkpoint_saves_only_improvements_and_loads_back(tmp_path):
    trainer = make_trainer()
    path = tmp_path / "best-{epoch:02d}-{score:.1f}.safetensors"
    scores = [3.0, 2.0, 2.5, 1.0, 1.0]
    save = ModelCheckpoint(path, monitor="score", save_best_only=True, save_weights_only=True)
    rec = Recorder()
    trainer.fit(X, Y, epochs=5, batch_size=20, verbose=0, callbacks=[Script(scores), rec, save])
    assert sorted(os.listdir(tmp_path)) == [
        "best-01-3.0.safetensors",
        "best-02-2.0.safetensors",
        "best-04-1.0.safetensors",
    ]
    assert save.best == 1.0
    model = make_trainer(seed=5).model
    model.load_state_dict(jn.load(tmp_path / "best-02-2.0.safetensors"))
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, rec.weights[1][k], err_msg=k)
    # the whole trainer (save_weights_only=False): it resumes where the best epoch left off
    latest = ModelCheckpoint(tmp_path / "run" / "latest.safetensors", monitor="val_loss", mode="min")
    trainer.fit(X, Y, epochs=1, batch_size=20, validation_data=(XV, YV), verbose=0, callbacks=[latest])
    resumed = make_trainer(seed=7)
    resumed.load(tmp_path / "run" / "latest.safetensors")
    assert resumed.epoch == trainer.epoch == 6
    assert resumed.optimizer.iterations == trainer.optimizer.iterations
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(v, weights(resumed.model)[k], err_msg=k)


def test_model_checkpoint_writes_atomically(tmp_path, monkeypatch):
    trainer = make_trainer()
    path = tmp_path / "ckpt.safetensors"
    trainer.fit(X, Y, epochs=1, batch_size=20, verbose=0, callbacks=[ModelCheckpoint(path)])
    before = path.read_bytes()

    def fail(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)  # the write fails after the data went into the temporary file
    with pytest.raises(OSError, match=r"jn\.save: cannot write"):
        trainer.fit(X, Y, epochs=1, batch_size=20, verbose=0, callbacks=[ModelCheckpoint(path)])
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no partial file, no temporary left behind
    assert path.read_bytes() == before


def test_reduce_lr_on_plateau_lowers_the_rate_without_recompiling(on_backend):
    trainer = make_trainer(lr=0.1)
    # improvements at epochs 0 and 2; misses at 3, 4: reduce; at 5 the cooldown epoch ends (Keras
    # counts that epoch's miss), 6: reduce again, to min_lr
    scores = [5, 6, 4, 4, 4.5, 4.2, 4.1, 4.0]
    reduce = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1, min_delta=0.01, min_lr=0.03)
    history = trainer.fit(X, Y, epochs=8, batch_size=20, verbose=0, callbacks=[Script(scores), reduce])
    assert history["lr"] == pytest.approx([0.1] * 5 + [0.05, 0.05, 0.03])  # the rate each epoch trained with
    assert trainer.optimizer.lr == pytest.approx(0.03)  # 0.025, clipped to min_lr
    assert trainer.step._compiled.traces == 1  # the rate is a runtime scalar of the one compiled step
    # the reduced rate is the one the updates use: the same as setting it by hand between fits
    by_hand = make_trainer(lr=0.1)
    for lr, epochs in [(0.1, 5), (0.05, 2), (0.03, 1)]:
        by_hand.optimizer.lr = lr
        by_hand.fit(X, Y, epochs=epochs, batch_size=20, verbose=0)
    for k, v in weights(by_hand.model).items():
        np.testing.assert_array_equal(v, weights(trainer.model)[k], err_msg=k)
    resumed = make_trainer(lr=0.1)
    resumed.load_state_dict(trainer.state_dict())  # a checkpoint keeps the lowered rate
    assert resumed.optimizer.lr == pytest.approx(0.03)


def test_reduce_lr_on_plateau_refuses_a_schedule():
    jn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    opt = optim.SGD(model.parameters(), lr=optim.schedules.exp(0.1, 0.9))
    trainer = nn.Trainer(model, nn.cross_entropy, opt)
    with pytest.raises(TypeError, match="ReduceLROnPlateau: the optimizer's lr is a schedule"):
        trainer.fit(X, Y, verbose=0, callbacks=[ReduceLROnPlateau(monitor="loss")])
    assert opt.iterations == 0


def test_terminate_on_nan_stops_at_the_first_bad_batch():
    trainer = make_trainer()
    x = X.copy()
    x[25, 3] = np.nan  # the third batch of 10 (no shuffling)
    rec = Recorder()
    history = trainer.fit(x, Y, epochs=3, batch_size=10, shuffle=False, verbose=0, callbacks=[TerminateOnNaN(), rec])
    assert [c for c in rec.calls if c[0] == "batch_end"] == [("batch_end", 0), ("batch_end", 1), ("batch_end", 2)]
    assert np.isnan(rec.batch_logs[-1]["loss"]) and np.isfinite(rec.batch_logs[1]["loss"])
    assert len(history["loss"]) == 1 and np.isnan(history["loss"][0])
    assert trainer.optimizer.iterations == 3


def test_csv_logger_rows_match_the_history(tmp_path):
    trainer = make_trainer()
    path = tmp_path / "logs" / "run.csv"
    history = trainer.fit(
        X, Y, epochs=3, batch_size=20, validation_data=(XV, YV), verbose=0, callbacks=[CSVLogger(path)]
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "samples_per_s", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for k, v in history.items():
        assert [float(r[k]) for r in rows] == v, k
    more = trainer.fit(
        X, Y, epochs=2, batch_size=20, verbose=0, callbacks=[CSVLogger(path, separator=";", append=True)]
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 3 + 2 and lines[4].split(";")[0] == "3"  # appended, the header kept
    assert lines[5].split(";") == ["4", *(repr(more[k][1]) for k in ["accuracy", "loss", "samples_per_s"])]


def test_csv_logger_appending_new_keys_widens_the_header(tmp_path):
    """fit(log_dir=) appends: a fit with validation after one without gets a header with both."""
    trainer = make_trainer()
    path = tmp_path / "run.csv"
    trainer.fit(X, Y, epochs=1, batch_size=40, verbose=0, callbacks=CSVLogger(path, append=True))
    history = trainer.fit(
        X, Y, epochs=1, batch_size=40, validation_data=(XV, YV), verbose=0, callbacks=CSVLogger(path, append=True)
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "samples_per_s", "val_accuracy", "val_loss"]
    assert [r["val_loss"] for r in rows] == ["NA", repr(history["val_loss"][0])]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: EarlyStopping(mode="maximum"), ValueError, "EarlyStopping: mode must be one of 'auto', 'min', 'max'"),
        (lambda: EarlyStopping(patience=-1), ValueError, "EarlyStopping: patience must be an integer >= 0"),
        (lambda: EarlyStopping(monitor=None), TypeError, "EarlyStopping: monitor must be the name"),
        (lambda: EarlyStopping(min_delta=float("nan")), ValueError, "min_delta must be a finite number, got nan"),
        (lambda: ModelCheckpoint("x", mode="best"), ValueError, "ModelCheckpoint: mode must be one of"),
        (lambda: ReduceLROnPlateau(factor=1.0), ValueError, r"ReduceLROnPlateau: factor must be in \(0, 1\)"),
        (lambda: ReduceLROnPlateau(factor=0), ValueError, r"factor must be in \(0, 1\)"),
        (lambda: ReduceLROnPlateau(min_lr=-1), ValueError, "ReduceLROnPlateau: min_lr must be a finite number >= 0"),
        (lambda: ReduceLROnPlateau(cooldown=1.5), ValueError, "cooldown must be an integer >= 0"),
    ],
    ids=["mode", "patience", "monitor", "min_delta", "checkpoint mode", "factor 1", "factor 0", "min_lr", "cooldown"],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_keras_habits_one_callback_its_model_and_train_batch_end(tmp_path):
    class Counter(Callback):
        def __init__(self):
            self.batches, self.models = 0, set()

        def on_train_batch_end(self, batch, logs):  # Keras's name for on_batch_end
            self.batches += 1
            self.models.add(id(self.model))

    trainer, counter = make_trainer(), Counter()
    trainer.fit(X, Y, epochs=2, batch_size=20, verbose=0, callbacks=counter)  # one callback, not a list
    assert counter.batches == 4 and counter.models == {id(trainer.model)}
    with pytest.raises(ValueError, match=r"ModelCheckpoint: filepath '.*m-\{\}' has a field without a name"):
        trainer.fit(X, Y, verbose=0, callbacks=ModelCheckpoint(str(tmp_path / "m-{}"), monitor="loss"))


def test_an_unknown_monitor_warns_naming_the_available_keys(tmp_path):
    trainer = make_trainer()
    callbacks = [
        ReduceLROnPlateau(monitor="accuracy_score"),  # first: it adds "lr" to the logs the others see
        EarlyStopping(patience=0),
        ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_acc", save_best_only=True),
    ]
    with pytest.warns(RuntimeWarning) as caught:
        history = trainer.fit(X, Y, epochs=2, batch_size=20, verbose=0, callbacks=callbacks)
    messages = {str(w.message) for w in caught}
    available = "available: ['accuracy', 'loss', 'lr', 'samples_per_s']"
    assert any(
        m.startswith(
            "EarlyStopping: monitor 'val_loss' is not in the logs (val_ entries need fit(validation_data=...))"
        )
        for m in messages
    )
    assert any(m.startswith("ModelCheckpoint: monitor 'val_acc'") and m.endswith(available) for m in messages), messages
    assert any(m.startswith("ReduceLROnPlateau: monitor 'accuracy_score'") for m in messages), messages
    assert len(history["loss"]) == 2 and not os.listdir(tmp_path)  # nothing stopped, nothing saved
    with pytest.raises(
        ValueError,
        match=r"ModelCheckpoint: filepath '.*\{val_loss\}' names 'val_loss', which is not in the logs; available: epoch, ",
    ):
        trainer.fit(X, Y, epochs=1, batch_size=20, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "{val_loss}"))])
