"""Training-step workloads: one SGD-with-momentum step of an MLP and of LeNet, beside torch eager.

LeNet is Caffe's (the layers of `conv_lenet`): conv 1->20 5x5, max-pool 2, conv 20->50 5x5,
max-pool 2, fully connected 800->500, relu, 500->10.

`python -m bench --only mlp_train_step,lenet_train_step` times them with the suite (the table shows
ms per step; samples/s = batch / time). `python -m bench.training` prints samples/s directly, and
with `--compile` the cold compile time of the LeNet step (fresh JITNET_CACHE_DIR) and of a second
process (warm disk cache).

The step runs with lr = 0 so that every timed call computes the same loss (checked against a
float64 numpy forward): the work is that of a real step (forward, backward, momentum update, the
parameters rewritten), only the values stay put. Parameters are initialised once with a fixed
seed and shared by every implementation.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import peers
from bench.workloads import Impl, Workload, register

MLP = (784, 512, 512, 10)
MLP_BATCH, LENET_BATCH = 128, 64


def _jitnet_nn():
    from jitnet import nn

    return nn


# The models are written once for jitnet's nn and torch.nn alike (same layer names and arguments).
def _mlp_model(nn=None):
    nn = nn or _jitnet_nn()
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def _lenet_model(nn=None):
    nn = nn or _jitnet_nn()
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


def _params(make_model) -> dict[str, np.ndarray]:
    import jitnet as jn

    jn.manual_seed(0)
    return {k: np.array(v) for k, v in make_model().state_dict().items()}


def _inputs(shape: tuple, batch: int):
    rng = np.random.default_rng(0)
    return {
        "x": rng.random((batch, *shape), dtype=np.float32),
        "y": rng.integers(0, 10, batch).astype(np.int64),
    }


def _jitnet_step(make_model):
    def make(inputs):
        import jitnet as jn

        params = _params(make_model)
        model = make_model()
        model.load_state_dict(params)
        step = jn.nn.train_step(model, jn.nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.0, momentum=0.9))
        x, y = jn.asarray(inputs["x"]), jn.asarray(inputs["y"])
        t0 = time.perf_counter()
        step(x, y)
        compile_s = time.perf_counter() - t0

        def run():
            return step(x, y)

        run.info = {"compile_s": compile_s, "kernels": len(step.lower(x, y).schedule.kernels)}
        run.after = lambda: {"traces": step._compiled.traces}
        return run

    return make


def _torch_model(torch, make_model):
    model = make_model(torch.nn)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _params(make_model).items()})
    return model


def _torch_step(make_model):
    def make(inputs):
        torch = peers.torch()
        model = _torch_model(torch, make_model)
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        x, y = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"])

        def run():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()

        return run

    return make


def _reference(make_model):
    """float64 forward of the initial parameters: the loss every step returns (lr = 0)."""

    def ref(inputs):
        p = {k: v.astype(np.float64) for k, v in _params(make_model).items()}
        h = inputs["x"].astype(np.float64)
        if make_model is _lenet_model:
            from jitnet.ir.opdefs import OPS

            conv, pool = OPS["conv2d"].ref, OPS["max_pool2d"].ref
            h = pool(conv(h, p["0.weight"], (1, 1), (0, 0)) + p["0.bias"][:, None, None], (2, 2), (2, 2), (0, 0))
            h = pool(conv(h, p["2.weight"], (1, 1), (0, 0)) + p["2.bias"][:, None, None], (2, 2), (2, 2), (0, 0))
            h = h.reshape(len(h), -1)
            names = ["5", "7"]
        else:
            names = ["0", "2", "4"]
        for i, n in enumerate(names):
            h = h @ p[f"{n}.weight"].T + p[f"{n}.bias"]
            if i < len(names) - 1:
                h = np.maximum(h, 0)
        z = h - h.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return np.array(-logp[np.arange(len(h)), inputs["y"]].mean())

    return ref


def _mlp_flops(inputs) -> float:
    b = len(inputs["x"])
    macs = sum(a * c for a, c in itertools.pairwise(MLP))
    return 3 * 2 * b * macs  # forward, input gradient, weight gradient


def _lenet_flops(inputs) -> float:
    b = len(inputs["x"])
    macs = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10
    return 3 * 2 * b * macs


def _bytes(make_model):
    def count(inputs) -> float:
        n_params = sum(v.size for k, v in _params(make_model).items())
        return inputs["x"].nbytes + inputs["y"].nbytes + 4 * n_params * 4  # params and momentum, read and written

    return count


class TrainingWorkload(Workload):
    """A workload whose jitnet row is a `jn.nn.train_step` (parameters updated in place), not a
    pure compiled function."""

    make_step: object = None

    @property
    def impls(self) -> list[Impl]:
        return [Impl("jitnet", self.make_step, note="jn.nn.train_step: one program, in-place update")] + self.peers


def _workload(name, description, make_model, shape, batch, flops) -> None:
    w = TrainingWorkload(
        name=name,
        description=description,
        make_inputs=lambda quick: _inputs(shape, batch),
        flops=flops,
        bytes=_bytes(make_model),
        reference=_reference(make_model),
        jitnet_fn=None,
        peers=[Impl("torch", _torch_step(make_model), "torch", note="eager: zero_grad, forward, backward, SGD step")],
        tol=1e-4,
        error_kind="rel",
        max_samples=30,
        quick_samples=5,
        targets={"beats": ["torch"]},
    )
    w.make_step = _jitnet_step(make_model)
    register(w)


_workload(
    "mlp_train_step",
    f"one SGD-momentum training step of a 784-512-512-10 ReLU MLP, batch {MLP_BATCH} (samples/s = {MLP_BATCH} / time)",
    _mlp_model,
    (784,),
    MLP_BATCH,
    _mlp_flops,
)
_workload(
    "lenet_train_step",
    f"one SGD-momentum training step of Caffe's LeNet on 1x28x28, batch {LENET_BATCH} (samples/s = {LENET_BATCH} / time)",
    _lenet_model,
    (1, 28, 28),
    LENET_BATCH,
    _lenet_flops,
)


# ---- python -m bench.training: samples/s and compile times ---------------------------------------


def _samples_per_s(run, batch: int, seconds: float = 3.0) -> float:
    for _ in range(3):
        float(run())
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        float(run())  # float(): wait for the result (a GPU step is asynchronous)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def _compile_once() -> None:
    """Child process: build the LeNet train step and take one step; print the seconds."""
    import jitnet as jn

    inputs = _inputs((1, 28, 28), LENET_BATCH)
    t0 = time.perf_counter()
    jn.manual_seed(0)
    model = _lenet_model()
    step = jn.nn.train_step(model, jn.nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    float(step(inputs["x"], inputs["y"]))
    print(f"{time.perf_counter() - t0:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description="training-step samples/s beside torch eager; compile times")
    p.add_argument("--compile", action="store_true", help="also time a cold and a warm-cache LeNet compile")
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    for name, make_model, shape, batch in (
        ("mlp_train_step", _mlp_model, (784,), MLP_BATCH),
        ("lenet_train_step", _lenet_model, (1, 28, 28), LENET_BATCH),
    ):
        inputs = _inputs(shape, batch)
        rows = {"jitnet": _jitnet_step(make_model)(inputs)}
        if peers.torch() is not None:
            rows["torch eager"] = _torch_step(make_model)(inputs)
        ref = float(_reference(make_model)(inputs))
        for impl, run in rows.items():
            err = abs(float(run()) - ref) / abs(ref)
            print(
                f"{name:18s} {impl:12s} {_samples_per_s(run, batch, args.seconds):9.0f} samples/s  (rel. error {err:.1e})"
            )
    if args.compile:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JITNET_CACHE_DIR=cache)
            cmd = [sys.executable, "-c", "from bench.training import _compile_once; _compile_once()"]
            for label in ("cold (empty cache)", "second process (disk cache)"):
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
                print(f"lenet_train_step compile + first step, {label}: {float(out):.2f} s")


if __name__ == "__main__":
    main()
