"""Keras-style callbacks for `Trainer.fit`: early stopping, checkpoints, plateaus, NaN guards, logs.

`Trainer.fit(callbacks=[...])` sets each callback's `trainer` and calls, in list order,
`on_train_begin(logs)`, then per epoch `on_epoch_begin(epoch, logs)`, `on_batch_end(batch, logs)`
after every update, and `on_epoch_end(epoch, logs)` (once validation and `fit(checkpoint=...)` are
done), and `on_train_end(logs)` when training ends without an error. `epoch` counts the trainer's
epochs from 0 (a resumed run continues the count), `batch` the updates of the epoch. Batch logs
hold the batch's loss, metrics and samples/s; epoch logs what `fit`'s history records, and what a
callback adds to them there (as "lr") is recorded too, as Keras's History does. A callback sets
`trainer.stop_training = True` to end training after the current update's epoch.

Distributed runs: every rank runs the callbacks with the same logs, so their decisions agree (each
rank stops, restores or reduces alike); only rank 0 writes files or prints.
"""

from __future__ import annotations

import csv
import itertools
import math
import numbers
import os
import warnings
from collections.abc import Sequence

import numpy as np

_MODES = ("auto", "min", "max")
_MAX_HINTS = ("acc", "auc", "fmeasure")  # mode="auto": names Keras maximises, all others are minimised
_EVENT_FILES = itertools.count()  # event file names carry only the second: two writers in one must differ


class Callback:
    """Base class: override the hooks you need (they do nothing here). `trainer` is the Trainer
    whose fit calls them (set by fit), `model` its model. Keras's `on_train_batch_end` is called
    with `on_batch_end`, as Keras calls both."""

    trainer = None

    @property
    def model(self):
        return None if self.trainer is None else self.trainer.model

    def on_train_begin(self, logs: dict) -> None:
        pass

    def on_train_end(self, logs: dict) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict) -> None:
        pass

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        pass


class CallbackList(Callback):
    """Callbacks called in order as one (what fit calls)."""

    def __init__(self, callbacks: Sequence[Callback], trainer) -> None:
        bad = [c for c in callbacks if not isinstance(c, Callback)]
        if bad:
            raise TypeError(f"fit: callbacks must be jn.nn.callbacks.Callback objects, got {bad!r}")
        self.callbacks = list(callbacks)
        self.trainer = trainer
        for c in self.callbacks:
            c.trainer = trainer

    def on_train_begin(self, logs: dict) -> None:
        for c in self.callbacks:
            c.on_train_begin(logs)

    def on_train_end(self, logs: dict) -> None:
        for c in self.callbacks:
            c.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        for c in self.callbacks:
            c.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_batch_end(self, batch: int, logs: dict) -> None:
        for c in self.callbacks:
            c.on_batch_end(batch, logs)
            c.on_train_batch_end(batch, logs)


def _chief(trainer) -> bool:
    """Whether this process writes files and prints: rank 0 (always, outside an MPI job)."""
    return trainer._world()[1] == 0


def _say(trainer, verbose: int, text: str) -> None:
    if verbose and _chief(trainer):
        print(text)


def _count(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{owner}: {name} must be an integer >= 0, got {value!r}")
    return int(value)


def _real(owner: str, name: str, value, low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < math.inf:
        bound = f" >= {low:g}" if low > -math.inf else ""
        raise ValueError(f"{owner}: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


class _Monitor:
    """One entry of the epoch logs and what counts as its improvement (Keras's rules: mode "auto"
    maximises accuracy-like names, minimises the rest; min_delta is the margin to beat)."""

    def __init__(self, owner: str, key: str, mode: str, min_delta: float = 0.0) -> None:
        if not isinstance(key, str):
            raise TypeError(f"{owner}: monitor must be the name of a logged value, got {key!r}")
        if mode not in _MODES:
            raise ValueError(f"{owner}: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
        if mode == "auto":
            mode = "max" if any(h in key.removeprefix("val_") for h in _MAX_HINTS) else "min"
        self.owner, self.key, self.mode = owner, key, mode
        self.min_delta = abs(_real(owner, "min_delta", min_delta))

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, current: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def value(self, logs: dict) -> float | None:
        """The monitored value, or None with a warning naming what the logs hold (as Keras)."""
        if self.key in logs:
            return float(logs[self.key])
        hint = " (val_ entries need fit(validation_data=...))" if self.key.startswith("val_") else ""
        warnings.warn(
            f"{self.owner}: monitor {self.key!r} is not in the logs{hint}; available: {sorted(logs)}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved (by more than min_delta) for `patience` epochs (Keras's
    EarlyStopping). baseline: the value to beat, or patience runs out; restore_best_weights: at the
    end of training, the model (parameters and buffers) goes back to the best epoch's values;
    start_from_epoch: epochs before it are not counted (warm-up)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = _count("EarlyStopping", "patience", patience)
        self.start_from_epoch = _count("EarlyStopping", "start_from_epoch", start_from_epoch)
        self.baseline = None if baseline is None else _real("EarlyStopping", "baseline", baseline)
        self.verbose, self.restore_best_weights = verbose, bool(restore_best_weights)

    def on_train_begin(self, logs: dict) -> None:
        self.wait, self.stopped_epoch, self.best, self.best_epoch = 0, None, None, None
        self.best_weights: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        current = self._monitor.value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._monitor.improved(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = {k: np.array(v) for k, v in self.trainer.model.state_dict().items()}
            if self.baseline is None or self._monitor.improved(current, self.baseline):
                self.wait = 0  # only beating both the baseline and the best so far restarts the count
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict) -> None:
        if self.stopped_epoch is not None:
            _say(self.trainer, self.verbose, f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.best_weights is not None:
            _say(self.trainer, self.verbose, f"Restoring the weights of the best epoch, {self.best_epoch + 1}")
            self.trainer.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save after every epoch, or with save_best_only only when `monitor` improved (Keras's
    ModelCheckpoint), through `Trainer.save`: an atomic safetensors write, by rank 0. The file holds
    the trainer's checkpoint (model, optimizer, epoch: `trainer.load` resumes from it), or with
    save_weights_only the model's state_dict (`model.load_state_dict(jn.load(path))`). `filepath` may
    hold `{epoch}` (from 1) and fields of the epoch logs, formatted as Keras does: "ckpt-{epoch:02d}-
    {val_loss:.4f}.safetensors". The best value is kept across fits, as Keras keeps it."""

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
    ) -> None:
        self.filepath = os.fspath(filepath)
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.verbose = verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        self.best = self._monitor.worst

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        path = self._path(epoch, logs)
        if self.save_best_only:
            current = self._monitor.value(logs)
            if current is None:
                return
            key = self._monitor.key
            if not self._monitor.improved(current, self.best):
                _say(self.trainer, self.verbose, f"Epoch {epoch + 1}: {key} did not improve from {self.best:.5f}")
                return
            _say(
                self.trainer,
                self.verbose,
                f"Epoch {epoch + 1}: {key} improved from {self.best:.5f} to {current:.5f}, saving to {path}",
            )
            self.best = current
        self._save(path)

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError) as e:
            field = f"names {e}, which is not in the logs" if isinstance(e, KeyError) else "has a field without a name"
            raise ValueError(
                f"ModelCheckpoint: filepath {self.filepath!r} {field}; available: epoch, {', '.join(sorted(logs))}"
            ) from None

    def _save(self, path: str) -> None:
        folder = os.path.dirname(path)
        if folder and _chief(self.trainer):
            os.makedirs(folder, exist_ok=True)
        self.trainer.save(path, weights_only=self.save_weights_only)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` has not improved (by more than
    min_delta) for `patience` epochs, then wait `cooldown` epochs before counting again, never below
    min_lr (Keras's ReduceLROnPlateau). The rate is a runtime scalar of the compiled step: changing
    it never recompiles. Adds "lr" (the rate the epoch trained with) to the epoch logs. A schedule
    (an lr that is a function of the iteration) is refused, as Keras refuses to set one."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        factor = _real("ReduceLROnPlateau", "factor", factor, 0.0)
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1) (it multiplies the rate), got {factor!r}")
        self._monitor = _Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.min_lr = factor, _real("ReduceLROnPlateau", "min_lr", min_lr, 0.0)
        self.patience = _count("ReduceLROnPlateau", "patience", patience)
        self.cooldown = _count("ReduceLROnPlateau", "cooldown", cooldown)
        self.verbose = verbose

    def on_train_begin(self, logs: dict) -> None:
        lr = self.trainer.optimizer.lr
        if callable(lr):
            raise TypeError(
                f"ReduceLROnPlateau: the optimizer's lr is a schedule ({lr!r}), whose rate it cannot set; "
                "give the optimizer a float lr, or use the schedule alone"
            )
        self.best, self.wait, self.cooldown_counter = self._monitor.worst, 0, 0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        optimizer = self.trainer.optimizer
        logs["lr"] = float(optimizer.lr)
        current = self._monitor.value(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.improved(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and optimizer.lr > np.float32(self.min_lr):
                optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0
                _say(
                    self.trainer,
                    self.verbose,
                    f"Epoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate to {optimizer.lr}",
                )


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (Keras's TerminateOnNaN)."""

    def on_batch_end(self, batch: int, logs: dict) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            _say(self.trainer, 1, f"Batch {batch}: invalid loss {loss}, terminating training")
            self.trainer.stop_training = True


class CSVLogger(Callback):
    """One CSV row per epoch: "epoch" (from 0) and the epoch logs in sorted order (Keras's
    CSVLogger; "NA" where an entry is missing). append: add to an existing file, its header kept."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        self.filename, self.separator, self.append = os.fspath(filename), separator, bool(append)
        self._file = self._writer = None

    def on_train_begin(self, logs: dict) -> None:
        self._file = self._writer = None
        if not _chief(self.trainer):
            return
        folder = os.path.dirname(self.filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._header = not (self.append and os.path.isfile(self.filename) and os.path.getsize(self.filename) > 0)
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115 (closed at train end)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self._file is None:
            return
        if self._writer is None:
            fields = ["epoch", *sorted(logs)]
            if not self._header:
                fields = self._widen(fields)
            self._writer = csv.DictWriter(self._file, fields, restval="NA", delimiter=self.separator)
            if self._header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: v for k, v in logs.items() if k in self._writer.fieldnames}})
        self._file.flush()

    def _widen(self, fields: list[str]) -> list[str]:
        """Appending rows with other keys than the file's header (a fit with validation after one
        without): the file is rewritten under the union of both, "NA" where a row has no value."""
        self._file.close()
        with open(self.filename, newline="") as f:
            reader = csv.DictReader(f, delimiter=self.separator)
            old, rows = list(reader.fieldnames or []), list(reader)
        if old[:1] != ["epoch"]:  # not a log this separator reads: append as Keras does
            old = fields
        union = old + [k for k in fields if k not in old]
        self._file = open(self.filename, "w" if union != old else "a", newline="")  # noqa: SIM115 (closed at train end)
        if union != old:
            writer = csv.DictWriter(self._file, union, restval="NA", delimiter=self.separator)
            writer.writeheader()
            writer.writerows(rows)
        return union

    def on_train_end(self, logs: dict) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


def _summary_writer():
    """tensorboardX's SummaryWriter, else torch's (which needs the tensorboard package)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoard logging needs tensorboardX (or torch with tensorboard): pip install jitnet[tensorboard]"
            ) from None
    return SummaryWriter


class TensorBoard(Callback):
    """TensorBoard scalars as Keras writes them: `log_dir/train` gets "epoch_<name>" for the epoch
    logs (loss, metrics, samples_per_s, lr) at step `epoch`, and every `update_freq` updates
    "batch_<name>" for the batch logs and the rate the update used, at the update's number (from 1);
    `log_dir/validation` gets the val_ entries as "epoch_<name>". update_freq="epoch": no batch
    scalars. Adds "lr" (the rate of the epoch's last update) to the epoch logs if none is there."""

    def __init__(self, log_dir: str | os.PathLike = "logs", update_freq: int | str = "epoch") -> None:
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(f'TensorBoard: update_freq must be "epoch" or an integer >= 1, got {update_freq!r}')
        self.log_dir, self.update_freq = os.fspath(log_dir), update_freq
        self._summary_writer = _summary_writer()
        self._writers: dict = {}

    def on_train_begin(self, logs: dict) -> None:
        self._writers = {}

    def on_batch_end(self, batch: int, logs: dict) -> None:
        step = self.trainer.optimizer.iterations
        if self.update_freq == "epoch" or step % self.update_freq or not _chief(self.trainer):
            return
        self._write("train", "batch_", {**logs, "lr": self.trainer.optimizer.lr_at(step - 1)}, step)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        optimizer = self.trainer.optimizer
        logs.setdefault("lr", optimizer.lr_at(max(optimizer.iterations - 1, 0)))
        if not _chief(self.trainer):
            return
        self._write("train", "epoch_", {k: v for k, v in logs.items() if not k.startswith("val_")}, epoch)
        validation = {k.removeprefix("val_"): v for k, v in logs.items() if k.startswith("val_")}
        if validation:
            self._write("validation", "epoch_", validation, epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _write(self, run: str, prefix: str, scalars: dict, step: int) -> None:
        if run not in self._writers:
            suffix = f".{os.getpid()}.{next(_EVENT_FILES)}"
            self._writers[run] = self._summary_writer(os.path.join(self.log_dir, run), filename_suffix=suffix)
        for name, value in scalars.items():
            self._writers[run].add_scalar(prefix + name, value, step)
