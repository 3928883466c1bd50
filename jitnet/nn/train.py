"""One-program training: `train_step` and the `Trainer` built on it.

`train_step` traces forward, loss, backward and the optimizer update into ONE compiled program
`(params, buffers, state, hyper, seed, x, y) -> (loss, metrics, new params, new buffers, new state)`.
Parameters, buffers and optimizer state are device Arrays passed in place (no copies); the results
are moved into them with `Array.assign(..., move=True)`. Per step only the batch goes in and the
loss (a 0-d Array) comes out; the learning rate, Adam's bias corrections and the dropout seed are
runtime scalars, so nothing recompiles while they change.

Labels: when the step's loss is a class-index loss on the batch's labels (cross_entropy,
multiclass_hinge_loss), the trace records the number of classes and every later call checks host
labels (numpy) against it before running, an IndexError as in PyTorch; labels already on the device
are not read back, and a bad one makes the loss and the updated parameters NaN.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

import jitnet as jn
from jitnet.ir import pytree
from jitnet.nn import init
from jitnet.nn.callbacks import Callback, CallbackList, CSVLogger, TensorBoard
from jitnet.nn.losses import accuracy, check_labels, traced_labels
from jitnet.nn.module import Module
from jitnet.optim.optimizers import Optimizer

METRICS: dict[str, Callable] = {"accuracy": accuracy}


def _metric_fns(metrics: Sequence[str]) -> dict[str, Callable]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    return {m: METRICS[m] for m in metrics}


class TrainStep:
    """`loss = step(x, y)`: one update of `model` by `optimizer` on the batch (see the module doc).

    distributed=True (under `mpiexec`, see jitnet/distributed.py): each rank passes its own part of
    the global batch. The step is then two programs with an allreduce between them: the gradients
    (each rank's mean loss, metrics and gradients weighted by its sample count), summed over ranks
    in a few flat buckets and divided by the global count, then the optimizer's compiled update
    (optimizer.step), which every rank applies to the same numbers: the replicas stay bit-identical
    and equal to one process stepping on the concatenated global batch. Construction broadcasts
    rank 0's parameters, buffers, optimizer state and seed. Buffers (BatchNorm's running statistics)
    are computed per rank from its own part, as DDP does by default, and rank 0's are broadcast
    after every step (DDP's broadcast_buffers). The first step of each batch signature checks that
    every rank traced the same program, and raises on all of them, naming the rank that differs."""

    def __init__(
        self,
        model: Module,
        loss_fn: Callable,
        optimizer: Optimizer,
        metrics: Sequence[str] = (),
        distributed: bool = False,
    ):
        if not isinstance(model, Module):
            raise TypeError(f"train_step: model must be a jn.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"train_step: optimizer must be a jn.optim optimizer, got {type(optimizer).__name__}")
        params = model.parameters()
        if set(params) != set(optimizer.params) or any(params[k] is not optimizer.params[k] for k in params):
            raise ValueError("train_step: the optimizer must be built on this model's parameters (model.parameters())")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.metrics = _metric_fns(metrics)
        self.seed = int(init.generator().integers(0, 2**31))
        self.num_classes: int | None = None  # what a class-index loss on y needs (known once traced)
        self._compiled = jn.compile(self._program, static_argnums=(6,))
        self.distributed = bool(distributed)
        if self.distributed:
            self._grads = jn.compile(self._grad_program, static_argnums=(5,))
            self._agreed: set = set()  # batch signatures every rank is known to have traced alike
            self.sync()

    def _gradients(self, params, buffers, seed, batch, training) -> tuple:
        """(loss, metrics, gradients, new buffers) of the batch: the traced forward and backward."""
        x, y = batch

        def loss_of(p):
            out, new_buffers = self.model.functional_call(p, buffers, x, seed=seed if training else None)
            return self.loss_fn(out, y), (out, new_buffers)

        with traced_labels() as uses:
            (loss, (out, new_buffers)), grads = jn.value_and_grad(loss_of, has_aux=True)(params)
        self.num_classes = _classes_of(y, uses)
        return loss, {name: fn(out, y) for name, fn in self.metrics.items()}, grads, new_buffers

    def _program(self, params, buffers, state, hyper, seed, batch, training):
        loss, metrics, grads, new_buffers = self._gradients(params, buffers, seed, batch, training)
        new_params, new_state = self.optimizer.update(params, grads, state, hyper)
        return loss, metrics, new_params, new_buffers, new_state

    def _grad_program(self, params, buffers, seed, batch, count, training):
        """(loss, metrics, gradients) times this rank's sample count, and the new buffers."""
        loss, metrics, grads, new_buffers = self._gradients(params, buffers, seed, batch, training)
        scaled = lambda t: {k: v * count for k, v in t.items()}
        return loss * count, scaled(metrics), scaled(grads), new_buffers

    def sync(self) -> None:
        """Every rank takes rank 0's parameters, buffers, optimizer state and seed (a no-op in one process)."""
        from jitnet import distributed

        model, opt = self.model, self.optimizer
        ours = {"params": model.parameters(), "buffers": model.buffers(), "state": opt.state}
        theirs = distributed.broadcast(ours)
        for table in ("params", "buffers"):
            for k, v in ours[table].items():
                v.assign(theirs[table][k])
        for k, slots in opt.state.items():
            for name, v in slots.items():
                v.assign(theirs["state"][k][name])
        opt.iterations, self.seed = distributed.allgather((opt.iterations, self.seed))[0]

    def _args(self, x, y) -> tuple:
        model, opt = self.model, self.optimizer
        _check_batch(x, y)
        seed = (self.seed + 1_000_003 * opt.iterations) % 2**31
        return model.parameters(), model.buffers(), opt.state, opt.hyper(opt.iterations), seed, (x, y), model.training

    def lower(self, x, y):
        """The traced graph, fusion schedule and kernel sources of the step for this batch's shapes."""
        return self._compiled.lower(*self._args(x, y))

    def inspect(self, x, y) -> str:
        """The step's IR, fused kernels and their generated source, as `CompiledFunction.inspect`."""
        return self._compiled.inspect(*self._args(x, y))

    def label_classes(self, x, y) -> int | None:
        """The number of classes the step's loss needs the labels to index (None: no such loss on y),
        tracing the step for this batch's shapes if it never was."""
        if self.distributed:
            if self._grads.traces == 0:
                self._grads.lower(*self._grad_args(x, y, len(x)))
        elif self._compiled.traces == 0:
            self.lower(x, y)
        return self.num_classes

    def run(self, x, y) -> tuple:
        """(loss, {metric: value}) as 0-d Arrays, after updating the model in place."""
        if self.distributed:
            return self._run_distributed(x, y)
        _check_labels("train_step", y, self.label_classes(x, y))
        args = self._args(x, y)
        buffers = args[1]
        loss, metrics, new_params, new_buffers, new_state = self._compiled(*args)
        for k, v in new_buffers.items():
            buffers[k].assign(v, move=True)
        self.optimizer.commit(new_params, new_state)
        return loss, metrics

    def __call__(self, x, y):
        return self.run(x, y)[0]

    # ---- data parallel (distributed=True) ----

    def _grad_args(self, x, y, count: int) -> tuple:
        model, opt = self.model, self.optimizer
        from jitnet import distributed

        seed = (self.seed + 1_000_003 * opt.iterations + 7919 * distributed.rank()) % 2**31  # own dropout masks
        return model.parameters(), model.buffers(), seed, (x, y), float(count), model.training

    def _run_distributed(self, x, y, uneven: bool = False, like: tuple = ()) -> tuple:
        """One data-parallel step on this rank's part (x, y); `uneven`: ranks' parts may differ in
        size, an empty part included (Trainer.fit's last batch of an epoch; `like`, one sample of
        the data, gives an empty part the shapes of what the others send)."""
        from jitnet import distributed

        if uneven and len(x) == 0:
            summed = distributed.allreduce_sum(self._nothing(*like), host=True)
        else:
            _check_batch(x, y)
            args = self._grad_args(x, y, len(x))
            if not uneven:  # the parts of an uneven step differ in size by design: the full steps were checked
                self._agree(args)
            _check_labels("train_step", y, self.label_classes(x, y))
            loss, metrics, grads, new_buffers = self._grads(*args)
            for k, v in new_buffers.items():
                self.model.buffers()[k].assign(v, move=True)
            summed = distributed.allreduce_sum((loss, metrics, grads, np.array(len(x), np.int64)), host=True)
        loss, metrics, grads, total = summed
        total = int(total)
        scale = lambda v: np.asarray(v) * np.asarray(v).dtype.type(1.0 / total)
        self.optimizer.step({k: scale(g) for k, g in grads.items()})
        buffers = self.model.buffers()
        if buffers:
            for k, v in distributed.broadcast(buffers).items():
                buffers[k].assign(v)
        return jn.asarray(scale(loss)), {k: jn.asarray(scale(v)) for k, v in metrics.items()}

    def _nothing(self, x1, y1) -> tuple:
        """What a rank without samples adds to a step: zeros shaped and typed as the gradient
        program's outputs (those of a one-sample batch like x1, y1), and a count of 0."""
        entry = self._grads.lower(*self._grad_args(x1, y1, 1))
        zeros = [np.zeros(n.shape, n.dtype) for n in entry.graph.outputs]
        loss, metrics, grads, _ = pytree.unflatten(entry.out_treedef, zeros)
        return loss, metrics, grads, np.array(0, np.int64)

    def _agree(self, args: tuple) -> None:
        """At a batch signature's first step: every rank traced the same program, or all raise."""
        from jitnet import distributed

        (x, y) = args[3]
        key = (np.shape(x), str(np.asarray(x).dtype if not isinstance(x, jn.Array) else x.dtype), np.shape(y))
        if key in self._agreed:
            return
        shapes = lambda t: {k: (tuple(v.shape), str(v.dtype)) for k, v in t.items()}
        graph = self._grads.lower(*args).graph
        mine = {
            "inputs x, y": key,
            "parameters": shapes(args[0]),
            "buffers": shapes(args[1]),
            "program": _fingerprint(str(graph)),
        }
        everyone = distributed.allgather(mine)
        for r, theirs in enumerate(everyone):
            differ = [k for k in mine if theirs[k] != everyone[0][k]]
            if differ:
                what = differ[0]
                raise RuntimeError(
                    f"jn.distributed: rank {r} traced a different training step than rank 0: its {what} "
                    f"{theirs[what]} vs rank 0's {everyone[0][what]} (every rank must run the same model on "
                    "batches of the same shape)"
                )
        self._agreed.add(key)


def _fingerprint(graph_text: str) -> str:
    """A traced graph's digest, its node numbers (a per-process counter) renumbered by first use."""
    numbers: dict[str, str] = {}
    text = re.sub(r"%\d+", lambda m: numbers.setdefault(m.group(), f"%{len(numbers)}"), graph_text)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_step(model: Module, loss_fn: Callable, optimizer: Optimizer, distributed: bool = False) -> TrainStep:
    """`step(x, y) -> loss`: forward, backward and update compiled into one program (see TrainStep);
    `distributed=True`: data parallel across the ranks of an MPI job, each passing its own part of
    the batch (jitnet/distributed.py)."""
    return TrainStep(model, loss_fn, optimizer, distributed=distributed)


def _check_batch(x, y) -> None:
    nx, ny = np.shape(x)[:1], np.shape(y)[:1]
    if not nx or not ny or nx != ny:
        raise ValueError(f"inputs and targets must have one batch size, got shapes {np.shape(x)} and {np.shape(y)}")
    if nx[0] == 0:
        raise ValueError(f"inputs and targets are empty (shapes {np.shape(x)} and {np.shape(y)})")


def _classes_of(y, uses: list) -> int | None:
    """The class count that the class-index losses traced on the labels input `y` need."""
    return min((c for t, c in uses if t.node is y.node), default=None)


def _check_labels(where: str, y, num_classes: int | None) -> None:
    """Host labels against the class count (device Arrays are not read back: see the module doc)."""
    if num_classes is not None and not isinstance(y, jn.Array):
        check_labels(where, y, num_classes)


def _check_count(where: str, name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _batches(n: int, batch_size: int, order=None, drop_last: bool = False):
    idx = np.arange(n) if order is None else order
    end = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, end, batch_size):
        yield idx[start : start + batch_size]


def _shards(n: int, batch_size: int, order, drop_last: bool, world: int, rank: int):
    """(this rank's indices, uneven, the global batch's size) of each global batch of
    batch_size * world samples: rank r takes part r, so the global batch is the ranks' parts in
    rank order. The last, smaller global batch is split as evenly as it goes (rank 0's part never
    empty); drop_last skips it. Every sample is used once per epoch."""
    idx = np.arange(n) if order is None else order
    for chunk in _batches(n, batch_size * world, idx, drop_last):
        if len(chunk) == batch_size * world:
            yield chunk[rank * batch_size : (rank + 1) * batch_size], False, len(chunk)
        else:
            yield np.array_split(chunk, world)[rank], True, len(chunk)


class Trainer:
    """fit / evaluate / predict around a `TrainStep`, with a progress bar, a history and checkpoints.

    Shuffling draws epoch e's order from a generator seeded by (the trainer's seed, e), and dropout
    seeds come from the optimizer's iteration count, so training resumed from a checkpoint (model,
    optimizer state, epoch, seed) continues exactly as if it had not stopped.

    Under `mpiexec -n N` (distributed=None: whenever the MPI job has more than one rank) fit trains
    data-parallel: `batch_size` is per rank, each global batch of batch_size * N samples of the
    shared shuffled order is split among the ranks (TrainStep's distributed step), validation is
    sharded and averaged over ranks, the progress bar and printing happen on rank 0 only, and rank 0
    writes the checkpoints (atomically) while the others wait; `load` reads them on every rank.
    Callbacks run on every rank and see the same logs (the global batch's loss, the allreduced
    validation), so their decisions agree; only rank 0 writes logs and checkpoints."""

    def __init__(
        self,
        model: Module,
        loss_fn: Callable,
        optimizer: Optimizer,
        metrics: Sequence[str] = ("accuracy",),
        distributed: bool | None = None,
    ):
        from jitnet import distributed as dist

        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.metrics = _metric_fns(metrics)
        self.distributed = dist.world_size() > 1 if distributed is None else bool(distributed)
        self.step = TrainStep(model, loss_fn, optimizer, metrics, distributed=self.distributed)
        self.seed = self.step.seed
        self.epoch = 0
        self.stop_training = False  # set by a callback to end fit (Keras's model.stop_training)
        self._eval = jn.compile(self._eval_program)
        self._eval_classes: int | None = None
        self._predict = jn.compile(lambda x: self.model(x))

    def _eval_program(self, x, y):
        out = self.model(x)
        with traced_labels() as uses:
            loss = self.loss_fn(out, y)
        self._eval_classes = _classes_of(y, uses)
        return loss, {name: fn(out, y) for name, fn in self.metrics.items()}

    def fit(
        self,
        x,
        y,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data: tuple | None = None,
        verbose: int = 1,
        shuffle: bool = True,
        checkpoint: str | None = None,
        drop_last: bool = False,
        callbacks: Sequence[Callback] | Callback | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> dict[str, list[float]]:
        """Train `epochs` more epochs; returns the history {"loss", metrics, "val_loss", "val_<metric>",
        "samples_per_s"} with one entry per epoch, plus what callbacks add to the epoch logs (as
        Keras's History: "lr" where one logs or changes the rate). `checkpoint`: a path saved after
        every epoch. `drop_last`: skip an epoch's last, smaller batch (a new shape would compile a
        second step). `callbacks`: jn.nn.callbacks objects, called in order; one that sets
        `trainer.stop_training` ends training with the current epoch (set after a batch: cut short
        there, the partial epoch still validated and recorded, as Keras does). `log_dir`: also write
        TensorBoard scalars (per step and per epoch, `log_dir/train` and `log_dir/validation`) and
        `log_dir/log.csv` (appended to by later fits), by callbacks added after the user's."""
        x, y = np.asarray(x), np.asarray(y)
        _check_batch(x, y)
        epochs = _check_count("fit", "epochs", epochs, 0)
        batch_size = _check_count("fit", "batch_size", batch_size, 1)
        if validation_data is not None and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2
        ):
            raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
        callbacks = self._callbacks(callbacks, log_dir)
        # all labels checked once, before the first update (the class count is known once the step traced)
        self.model.train()
        classes = self.step.label_classes(x[:batch_size], y[:batch_size])
        _check_labels("fit", y, classes)
        if validation_data is not None:
            _check_labels("fit: validation_data", np.asarray(validation_data[1]), classes)
        keys = ["loss", *self.metrics]
        if validation_data is not None:
            keys += [f"val_{k}" for k in ["loss", *self.metrics]]
        history = {k: [] for k in [*keys, "samples_per_s"]}
        total = self.epoch + epochs
        verbose = verbose if self._world()[1] == 0 else 0
        self.stop_training = False
        logs: dict[str, float] = {}
        callbacks.on_train_begin(logs)
        while self.epoch < total and not self.stop_training:
            epoch = self.epoch
            callbacks.on_epoch_begin(epoch, {})
            logs = self._train_epoch(
                x, y, batch_size, shuffle, drop_last, f"epoch {epoch + 1}/{total}", verbose, callbacks
            )
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(*validation_data).items()})
            self.epoch += 1
            if verbose:
                line = "  ".join(f"{k} {logs[k]:.4f}" for k in keys)
                print(f"epoch {self.epoch}/{total}  {line}  {logs['samples_per_s']:.0f} samples/s")
            if checkpoint:
                self.save(checkpoint)
            callbacks.on_epoch_end(epoch, logs)
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
        callbacks.on_train_end(logs)
        return history

    def _callbacks(
        self, callbacks: Sequence[Callback] | Callback | None, log_dir: str | os.PathLike | None
    ) -> CallbackList:
        """The user's callbacks, then (with log_dir) the logging ones, all pointed at this trainer."""
        callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
        if log_dir is not None:
            callbacks += [TensorBoard(log_dir, update_freq=1), CSVLogger(os.path.join(log_dir, "log.csv"), append=True)]
        return CallbackList(callbacks, self)

    def _train_epoch(
        self, x, y, batch_size: int, shuffle: bool, drop_last: bool, desc: str, verbose: int, callbacks: CallbackList
    ) -> dict[str, float]:
        """One epoch's updates (cut short when a callback sets stop_training): the mean loss and
        metrics over its samples, and samples/s. Each batch's logs go to `callbacks.on_batch_end`."""
        n = len(x)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if shuffle else None
        sums = dict.fromkeys(["loss", *self.metrics], 0.0)
        bar = _progress(n, desc, verbose)
        start = time.perf_counter()
        self.model.train()
        seen = 0
        for i, (idx, uneven, size) in enumerate(self._epoch_batches(n, batch_size, order, drop_last)):
            begin = time.perf_counter()
            if self.distributed:  # loss and metrics: the global batch's
                loss, metrics = self.step._run_distributed(x[idx], y[idx], uneven, like=(x[:1], y[:1]))
            else:
                loss, metrics = self.step.run(x[idx], y[idx])
            batch = {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}
            batch["samples_per_s"] = size / (time.perf_counter() - begin)
            seen += size
            for k in sums:
                sums[k] += batch[k] * size
            if bar is not None:
                bar.update(size)
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{batch['loss']:.4f}", **{k: f"{batch[k]:.3f}" for k in self.metrics})
            callbacks.on_batch_end(i, batch)
            if self.stop_training:
                break
        logs = {k: v / seen for k, v in sums.items()}
        logs["samples_per_s"] = seen / (time.perf_counter() - start)
        if bar is not None:
            bar.set_postfix({k: f"{logs[k]:.4f}" for k in sums})
            bar.close()
        return logs

    def _epoch_batches(self, n: int, batch_size: int, order, drop_last: bool):
        """(this rank's indices, uneven, the global batch's size) of each step of an epoch."""
        if self.distributed:
            world, rank = self._world()
            return _shards(n, batch_size, order, drop_last, world, rank)
        return ((idx, False, len(idx)) for idx in _batches(n, batch_size, order, drop_last))

    def _world(self) -> tuple[int, int]:
        """(ranks, this rank) of the data-parallel job; (1, 0) when not distributed."""
        if not self.distributed:
            return 1, 0
        from jitnet import distributed

        return distributed.world_size(), distributed.rank()

    def evaluate(self, x, y, batch_size: int = 1024) -> dict[str, float]:
        """Mean loss and metrics over (x, y) with the model in eval mode (distributed: each rank
        evaluates its share, the sums are added over ranks)."""
        x, y = np.asarray(x), np.asarray(y)
        _check_batch(x, y)
        batch_size = _check_count("evaluate", "batch_size", batch_size, 1)
        world, rank = self._world()
        n = len(x)
        if world > 1:
            x, y = (np.array_split(a, world)[rank] for a in (x, y))
        was_training = self.model.training
        self.model.eval()
        try:
            if self._eval.traces == 0 and len(x):
                self._eval.lower(x[:batch_size], y[:batch_size])
            _check_labels("evaluate", y, self._eval_classes)
            sums = dict.fromkeys(["loss", *self.metrics], 0.0)
            for idx in _batches(len(x), batch_size):
                loss, metrics = self._eval(x[idx], y[idx])
                sums["loss"] += float(loss) * len(idx)
                for k, v in metrics.items():
                    sums[k] += float(v) * len(idx)
        finally:
            self.model.train(was_training)
        if world > 1:
            from jitnet import distributed

            sums = distributed.allreduce_sum(sums)
        return {k: float(v) / n for k, v in sums.items()}

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs for x (eval mode), as one numpy array."""
        x = np.asarray(x)
        batch_size = _check_count("predict", "batch_size", batch_size, 1)
        if not len(x):
            raise ValueError(f"predict: x is empty (shape {x.shape})")
        was_training = self.model.training
        self.model.eval()
        try:
            return np.concatenate([np.array(self._predict(x[idx])) for idx in _batches(len(x), batch_size)])
        finally:
            self.model.train(was_training)

    def state_dict(self) -> dict:
        """Model, optimizer state and the trainer's position: everything a resume needs."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"optimizer.{k}": v for k, v in self.optimizer.state_dict().items()})
        out["trainer.epoch"] = np.array(self.epoch, np.int64)
        out["trainer.seed"] = np.array(self.seed, np.int64)
        return out

    def load_state_dict(self, state: dict) -> None:
        def part(prefix):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        missing = [k for k in ("trainer.epoch", "trainer.seed") if k not in state]
        if missing:
            raise ValueError(f"Trainer.load_state_dict: missing keys {missing}: not a Trainer checkpoint")
        epoch, seed = (np.asarray(state[f"trainer.{k}"]) for k in ("epoch", "seed"))
        if any(v.shape != () or v.dtype.kind not in "iu" or v < 0 for v in (epoch, seed)):
            raise ValueError(
                f"Trainer.load_state_dict: trainer.epoch and trainer.seed must be non-negative integers, got {epoch!r} and {seed!r}"
            )
        # everything is checked before anything changes: a bad optimizer entry leaves the model as it was
        load_model = self.model._prepare_load(part("model."))
        load_optimizer = self.optimizer._prepare_load(part("optimizer."))
        load_model()
        load_optimizer()
        self.epoch = int(epoch)
        self.seed = self.step.seed = int(seed)

    def save(self, path: str | os.PathLike, weights_only: bool = False) -> None:
        """Write a checkpoint, or with weights_only the model's state_dict alone (distributed: rank 0
        writes; every rank returns once it is written)."""
        if self._world()[1] == 0:
            jn.save(path, self.model.state_dict() if weights_only else self.state_dict())
        if self.distributed:
            from jitnet import distributed

            distributed.barrier()

    def load(self, path: str) -> None:
        """Resume from a checkpoint (distributed: every rank reads it, then takes rank 0's values)."""
        self.load_state_dict(jn.load(path))
        if self.distributed:
            self.step.sync()


def _progress(total: int, desc: str, verbose: int):
    if not verbose:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, leave=False, dynamic_ncols=True)
