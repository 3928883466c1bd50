"""Training-step workloads: one SGD-with-momentum step of an MLP (784-512-512-10, batch 128) and of
Caffe's LeNet (conv_lenet's layers, then fully connected 800->500, relu, 500->10; batch 64), beside
torch eager and torch.compile (the model wrapped by torch.compile, inductor's default mode). The step
runs with lr = 0 so that every timed call computes the same loss (checked against a float64 numpy
forward): the work is a real step's (forward, backward, momentum update, the parameters rewritten),
only the values stay put. Parameters: one fixed seed, shared by every row, on the device the inputs
live on. Both also run on the GPU, which adds batch 1024 (MLP) and 512 (LeNet): GPU_WORKLOADS."""

import time
from functools import partial

import numpy as np

import jitnet as jn
from bench.workload import Impl, Workload, rng, torch


# The models are written once for jitnet's nn and torch.nn alike (the same layer names and arguments).
def mlp_model(nn):
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def lenet_model(nn):
    layers = [nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))


def _params(make_model) -> dict[str, np.ndarray]:
    jn.manual_seed(0)
    return {k: np.array(v) for k, v in make_model(jn.nn).state_dict().items()}


def _inputs(shape: tuple, batch: int, quick: bool) -> dict:
    g = rng()
    return {"x": g.random((batch, *shape), dtype=np.float32), "y": g.integers(0, 10, batch)}


def _jitnet_step(make_model, inputs):
    """jn.nn.train_step of the model, its parameters moved to the inputs' device before the optimizer is built."""
    x, y = jn.asarray(inputs["x"]), jn.asarray(inputs["y"])
    model = make_model(jn.nn)
    model.load_state_dict(_params(make_model))
    model.to(x.device.kind)
    step = jn.nn.train_step(model, jn.nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.0, momentum=0.9))
    t0 = time.perf_counter()
    step(x, y).numpy()  # trace, compile and one step; reading the loss back waits for a GPU
    run = partial(step, x, y)
    run.info = {"compile_s": time.perf_counter() - t0, "kernels": len(step.lower(x, y).schedule.kernels)}
    run.after = lambda: {"traces": step._compiled.traces}
    return run


def _torch_step(make_model, inputs, compiled: bool = False):
    """torch's step on the inputs' device: zero_grad, forward, cross entropy, backward, SGD step; with
    `compiled` the model is torch.compile(model) (inductor, default mode; compiled on a first step here)."""
    x, y = inputs["x"], inputs["y"]
    model = make_model(torch.nn)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _params(make_model).items()})
    model.to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    forward = torch.compile(model) if compiled else model

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    if compiled:
        run()  # dynamo traces, inductor compiles forward and backward
    return run


def _reference(make_model, inputs):
    """float64 forward of the initial parameters: the loss every step returns (lr = 0)."""
    p = {k: v.astype(np.float64) for k, v in _params(make_model).items()}
    h, names = inputs["x"].astype(np.float64), ["0", "2", "4"]
    if make_model is lenet_model:
        from jitnet.ir.opdefs import OPS

        conv, pool = OPS["conv2d"].ref, OPS["max_pool2d"].ref
        for c in ("0", "2"):
            h = conv(h, p[f"{c}.weight"], (1, 1), (0, 0)) + p[f"{c}.bias"][:, None, None]
            h = pool(h, (2, 2), (2, 2), (0, 0))
        h, names = h.reshape(len(h), -1), ["5", "7"]
    for i, n in enumerate(names):
        h = h @ p[f"{n}.weight"].T + p[f"{n}.bias"]
        if i < len(names) - 1:
            h = np.maximum(h, 0)
    z = h - h.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return np.array(-logp[np.arange(len(h)), inputs["y"]].mean())


def _workload(name: str, what: str, make_model, shape: tuple, batch: int, macs: int) -> Workload:
    return Workload(
        name,
        f"one SGD-momentum training step of {what}, batch {batch} (samples/s = {batch} / time)",
        partial(_inputs, shape, batch),
        lambda inputs: 3 * 2 * len(inputs["x"]) * macs,  # forward, input gradient, weight gradient
        partial(_reference, make_model),
        [
            Impl("jitnet", partial(_jitnet_step, make_model), note="jn.nn.train_step: one program, in-place update"),
            Impl(
                "torch", partial(_torch_step, make_model), "torch", note="eager: zero_grad, forward, backward, SGD step"
            ),
            Impl(
                "torch.compile",
                partial(_torch_step, make_model, compiled=True),
                "torch.compile",
                note="torch.compile(model), inductor default mode: compiled forward and backward, eager SGD step",
                cold=True,
            ),
        ],
        # parameters and momentum, read and written
        bytes=lambda inputs: (
            inputs["x"].nbytes + inputs["y"].nbytes + 16 * sum(p.size for p in _params(make_model).values())
        ),
        tol=1e-4,
        error_kind="rel",
        max_samples=30,
        quick_samples=5,
        targets={"beats": ["torch"]},
        gpu={},  # on the GPU too, with its defaults (batches of calls sized to the suite's batch_s)
    )


MLP_MACS = 784 * 512 + 512 * 512 + 512 * 10
LENET_MACS = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10
MLP, LENET = ("a 784-512-512-10 ReLU MLP", mlp_model, (784,)), ("Caffe's LeNet on 1x28x28", lenet_model, (1, 28, 28))
MLP_TRAIN_STEP = _workload("mlp_train_step", *MLP, 128, MLP_MACS)
LENET_TRAIN_STEP = _workload("lenet_train_step", *LENET, 64, LENET_MACS)
WORKLOADS = [MLP_TRAIN_STEP, LENET_TRAIN_STEP]  # on the CPU and the GPU
# the larger batches: on the GPU only (bench.__main__.default("cuda")), the CPU run's time unchanged
GPU_WORKLOADS = [
    _workload("mlp_train_step_b1024", *MLP, 1024, MLP_MACS),
    _workload("lenet_train_step_b512", *LENET, 512, LENET_MACS),
]
