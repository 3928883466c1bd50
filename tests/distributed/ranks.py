"""What each rank of the test MPI jobs runs: `mpiexec -n 2 python ranks.py <case> <out dir>`.

Rank 0 writes the case's findings to <out dir>/<case>.json; tests/distributed/test_distributed.py
starts the jobs and checks the findings. Run as a script, not collected by pytest."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import jitnet as jn
from jitnet import distributed as dist
from jitnet.nn.train import Trainer, TrainStep


def mlp(dtype):
    jn.manual_seed(1)
    return _cast(jn.nn.Sequential(jn.nn.Linear(12, 16), jn.nn.ReLU(), jn.nn.Linear(16, 4)), dtype)


def lenet(dtype):
    jn.manual_seed(2)
    layers = [jn.nn.Conv2d(1, 3, 3), jn.nn.MaxPool2d(2), jn.nn.Flatten(), jn.nn.Linear(27, 4)]
    return _cast(jn.nn.Sequential(*layers), dtype)


def _cast(model, dtype):
    """The model's parameters in `dtype` (float64 for the tight equality check)."""
    for name, p in model.parameters().items():
        model._set_by_name(name, jn.asarray(np.asarray(p).astype(dtype)))
    return model


SHAPES = {"mlp": (12,), "lenet": (1, 8, 8)}
OPTIMIZERS = {
    "sgd": lambda params: jn.optim.SGD(params, lr=0.1, momentum=0.9),
    "adam": lambda params: jn.optim.Adam(params, lr=0.01),
}


def data(kind: str, n: int, dtype, seed: int = 5):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, *SHAPES[kind])).astype(dtype), g.integers(0, 4, n)


def params_of(model) -> dict:
    return {k: np.asarray(v) for k, v in model.parameters().items()}


def max_rel(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(b[k]) + 1e-3))) for k in a)


def same_on_every_rank(values: dict) -> bool:
    digest = {k: v.tobytes().hex() for k, v in sorted(values.items())}
    return all(d == digest for d in dist.allgather(digest))


def equality(out: dict) -> None:
    """N data-parallel steps against one process stepping on the concatenated global batches."""
    world, rank, per_rank, steps = dist.world_size(), dist.rank(), 6, 3
    for dtype, tol in ((np.float64, 1e-6), (np.float32, 1e-5)):
        for kind, make in (("mlp", mlp), ("lenet", lenet)):
            for opt_name, make_opt in OPTIMIZERS.items():
                x, y = data(kind, per_rank * world * steps, dtype)
                model = make(dtype)
                step = TrainStep(model, jn.nn.cross_entropy, make_opt(model.parameters()), distributed=True)
                reference = make(dtype)
                single = TrainStep(reference, jn.nn.cross_entropy, make_opt(reference.parameters()))
                losses = []
                for s in range(steps):
                    glob = slice(s * per_rank * world, (s + 1) * per_rank * world)
                    mine = slice(glob.start + rank * per_rank, glob.start + (rank + 1) * per_rank)
                    loss = float(step(x[mine], y[mine]))
                    want = float(single(x[glob], y[glob]))
                    losses.append(abs(loss - want) / abs(want))
                got, want = params_of(model), params_of(reference)
                name = f"{kind}/{opt_name}/{np.dtype(dtype).name}"
                out[name] = {
                    "rel": max_rel(got, want),
                    "loss_rel": max(losses),
                    "tol": tol,
                    "identical": same_on_every_rank(got),
                }


def batchnorm(out: dict) -> None:
    """BatchNorm: per-rank batch statistics, rank 0's running statistics on every rank."""
    jn.manual_seed(3)
    model = jn.nn.Sequential(jn.nn.Linear(12, 8), jn.nn.BatchNorm1d(8), jn.nn.ReLU(), jn.nn.Linear(8, 4))
    step = TrainStep(model, jn.nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.1), distributed=True)
    x, y = data("mlp", 8, np.float32, seed=10 + dist.rank())  # different data on each rank
    for _ in range(2):
        step(x, y)
    buffers = {k: np.asarray(v) for k, v in model.buffers().items()}
    out["buffers_identical"] = same_on_every_rank(buffers)
    out["params_identical"] = same_on_every_rank(params_of(model))
    out["buffer_names"] = sorted(buffers)


def mismatch(out: dict) -> None:
    """Rank 1 passes a batch of another shape: every rank raises, naming rank 1."""
    model = mlp(np.float32)
    step = TrainStep(model, jn.nn.cross_entropy, OPTIMIZERS["sgd"](model.parameters()), distributed=True)
    x, y = data("mlp", 8 if dist.rank() == 0 else 6, np.float32)
    try:
        step(x, y)
        message = None
    except RuntimeError as e:
        message = str(e)
    out["messages"] = dist.allgather(message)


def fit(out: dict, directory: str) -> None:
    """Trainer.fit under mpiexec against one process with the global batch size; then a resume."""
    world, batch = dist.world_size(), 4
    x, y = data("mlp", 53, np.float32)  # 53 = 6 global batches of 8 and a last of 5: parts of 3 and 2
    xv, yv = data("mlp", 11, np.float32, seed=6)
    model = mlp(np.float32)
    trainer = Trainer(model, jn.nn.cross_entropy, OPTIMIZERS["sgd"](model.parameters()))
    out["distributed"] = trainer.distributed
    path = os.path.join(directory, "fit.safetensors")
    first = trainer.fit(x, y, epochs=1, batch_size=batch, validation_data=(xv, yv), checkpoint=path, verbose=1)
    resumed_model = mlp(np.float32)
    resumed = Trainer(resumed_model, jn.nn.cross_entropy, OPTIMIZERS["sgd"](resumed_model.parameters()))
    resumed.load(path)
    second = resumed.fit(x, y, epochs=1, batch_size=batch, validation_data=(xv, yv), verbose=0)
    # one process, the global batch size, two epochs straight
    ref_model = mlp(np.float32)
    reference = Trainer(ref_model, jn.nn.cross_entropy, OPTIMIZERS["sgd"](ref_model.parameters()), distributed=False)
    history = reference.fit(x, y, epochs=2, batch_size=batch * world, validation_data=(xv, yv), verbose=0)
    out["rel"] = max_rel(params_of(resumed_model), params_of(ref_model))
    out["identical"] = same_on_every_rank(params_of(resumed_model))
    out["loss"] = [first["loss"][0], second["loss"][0]]
    out["ref_loss"] = history["loss"]
    out["val_loss"] = [first["val_loss"][0], second["val_loss"][0]]
    out["ref_val_loss"] = history["val_loss"]
    out["epoch"] = resumed.epoch


def fail(out: dict, how: str) -> None:
    """Rank 1 fails (raises, is killed, or hangs) while rank 0 waits in an allreduce."""
    if dist.rank() == 1:
        time.sleep(0.5)
        if how == "raise":
            raise ValueError("rank 1 broke on purpose")
        if how == "kill":
            os.kill(os.getpid(), 9)
        time.sleep(600)  # hang
    dist.allreduce_sum(np.ones(4))
    out["finished"] = True  # never reached


def main() -> None:
    case, directory = sys.argv[1], sys.argv[2]
    dist.init()
    out: dict = {"world": dist.world_size()}
    if case == "equality":
        equality(out)
    elif case == "batchnorm":
        batchnorm(out)
    elif case == "mismatch":
        mismatch(out)
    elif case == "fit":
        fit(out, directory)
    elif case.startswith("fail-"):
        fail(out, case.removeprefix("fail-"))
    else:
        raise SystemExit(f"unknown case {case!r}")
    if dist.is_main():
        with open(os.path.join(directory, f"{case}.json"), "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
