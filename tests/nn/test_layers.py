"""Layers against numpy references of their formulas (and PyTorch where installed), on each backend:
the forward compiled for it must also agree with the numpy reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check, on_device

import jitnet as jn
from jitnet import nn

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def run(model, x, backend):
    """The model's forward compiled for `backend` (parameters are captured Arrays), checked against
    the interpreter."""
    return check(lambda x: model(x), x, backend=backend).numpy()


def p(model, name):
    return model.state_dict()[name].numpy()


def test_linear_shapes_init_and_forward(on_backend):
    jn.manual_seed(1)
    layer = nn.Linear(20, 7)
    w, b = p(layer, "weight"), p(layer, "bias")
    assert w.shape == (7, 20) and b.shape == (7,) and w.dtype == np.float32
    bound = 1 / np.sqrt(20)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    x = rand(5, 20)
    np.testing.assert_allclose(run(layer, x, on_backend), x @ w.T + b, rtol=1e-5, atol=1e-6)
    assert list(nn.Linear(3, 2, bias=False).parameters()) == ["weight"]


def test_manual_seed_repeats_initialisation():
    jn.manual_seed(5)
    a = p(nn.Conv2d(3, 4, 3), "weight")
    jn.manual_seed(5)
    b = p(nn.Conv2d(3, 4, 3), "weight")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, p(nn.Conv2d(3, 4, 3), "weight"))


def test_conv2d_and_pools(on_backend):
    layer = nn.Conv2d(2, 3, 3, stride=1, padding=1)
    w, b = p(layer, "weight"), p(layer, "bias")
    assert w.shape == (3, 2, 3, 3)
    x = rand(2, 2, 5, 5)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 3, 5, 5), np.float32)
    for i in range(5):
        for j in range(5):
            want[:, :, i, j] = np.einsum("ncij,ocij->no", xp[:, :, i : i + 3, j : j + 3], w)
    np.testing.assert_allclose(run(layer, x, on_backend), want + b[None, :, None, None], rtol=1e-4, atol=1e-5)
    x = rand(2, 3, 4, 6)
    blocks = x.reshape(2, 3, 2, 2, 3, 2)
    np.testing.assert_allclose(run(nn.MaxPool2d(2), x, on_backend), blocks.max(axis=(3, 5)))
    np.testing.assert_allclose(run(nn.AvgPool2d(2), x, on_backend), blocks.mean(axis=(3, 5)), rtol=1e-6, atol=1e-7)
    assert run(nn.Flatten(), x, on_backend).shape == (2, 72)


@pytest.mark.parametrize(
    ("layer", "ref"),
    [
        (nn.ReLU(), lambda x: np.maximum(x, 0)),
        (nn.LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
        (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
        (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
        (nn.Tanh(), np.tanh),
    ],
)
def test_activations(layer, ref, on_backend):
    x = rand(4, 9) * 3
    np.testing.assert_allclose(run(layer, x, on_backend), ref(x), rtol=1e-5, atol=1e-6)


def test_dropout_layer_train_and_eval():
    layer = nn.Dropout(0.5)
    x = np.ones((100, 100), np.float32)
    y = np.asarray(layer(x))
    assert abs((y == 0).mean() - 0.5) < 0.03 and set(np.unique(y)) == {0.0, 2.0}
    assert not np.array_equal(y, np.asarray(layer(x)))  # a fresh mask per call
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def _bn_reference(x, axes, n):
    mean = x.mean(axes)
    var = x.var(axes)
    return mean, var, var * n / (n - 1)


@pytest.mark.parametrize("two_d", [False, True])
def test_batchnorm_train_updates_running_stats_and_eval_uses_them(two_d, on_backend):
    c = 3
    layer = nn.BatchNorm2d(c) if two_d else nn.BatchNorm1d(c)
    assert list(layer.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    x = rand(6, c, 4, 4) * 2 + 1 if two_d else rand(8, c) * 2 + 1
    axes = (0, 2, 3) if two_d else (0,)
    shape = (1, c, 1, 1) if two_d else (1, c)
    n = x.size // c
    mean, var, unbiased = _bn_reference(x, axes, n)
    y = layer(x)  # eager, training, on the layer's device: running statistics are updated in place
    on_device([y, layer.state_dict()], on_backend)
    y = np.asarray(y)
    np.testing.assert_allclose(y, (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p(layer, "running_mean"), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p(layer, "running_var"), 0.9 + 0.1 * unbiased, rtol=1e-5)
    assert int(p(layer, "num_batches_tracked")) == 1
    layer.eval()
    rm, rv = p(layer, "running_mean").reshape(shape), p(layer, "running_var").reshape(shape)
    np.testing.assert_allclose(run(layer, x, on_backend), (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)


def test_sequential_names_and_errors():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert list(model.parameters()) == ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"]
    assert "2.running_var" in model.state_dict() and len(model) == 4 and isinstance(model[1], nn.ReLU)
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    with pytest.raises(ValueError, match="Linear: expected input"):
        model(np.ones((2, 5), np.float32))


def test_state_dict_strictness():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    state = {k: np.asarray(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing keys \['1.bias'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "1.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"0.weight: expected \(3, 4\), got \(4, 3\)"):
        model.load_state_dict({**state, "0.weight": np.zeros((4, 3), np.float32)})
    weight = model.parameters()["0.weight"]
    state["0.weight"] = np.full((3, 4), 0.5, np.float32)
    model.load_state_dict(state)
    assert model.parameters()["0.weight"] is weight  # values copied in, identity kept
    np.testing.assert_array_equal(weight.numpy(), 0.5)


def test_torch_state_dict_loads_and_gives_torch_outputs(on_backend):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),
        torch.nn.BatchNorm1d(5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 3),
    )
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5),
        nn.BatchNorm1d(5),
        nn.Tanh(),
        nn.Linear(5, 3),
    )
    x = rand(6, 1, 4, 4)
    tmodel(torch.from_numpy(x))  # one training step of the running statistics
    model.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})
    tmodel.eval()
    model.eval()
    np.testing.assert_allclose(
        run(model, x, on_backend), tmodel(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5
    )
    tmodel.train()
    model.train()
    np.testing.assert_allclose(np.asarray(model(x)), tmodel(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
    on_device(model.state_dict(), on_backend)
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(p(model, k), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


# Sizes PyTorch rejects (at construction or at the first forward), each a ValueError at construction here.
BAD_LAYERS = {
    "conv kernel 0": (
        lambda: nn.Conv2d(1, 6, 0),
        "Conv2d: kernel_size must be an integer >= 1 or a pair of them, got 0",
    ),
    "conv kernel pair": (lambda: nn.Conv2d(1, 6, (3, 0)), r"kernel_size must be .*, got \(3, 0\)"),
    "conv kernel 1-tuple": (lambda: nn.Conv2d(1, 6, (3,)), "kernel_size must be"),
    "conv stride 0": (lambda: nn.Conv2d(1, 6, 3, stride=0), "Conv2d: stride must be an integer >= 1"),
    "conv padding -1": (lambda: nn.Conv2d(1, 6, 3, padding=-1), "Conv2d: padding must be an integer >= 0"),
    "conv channels 0": (lambda: nn.Conv2d(0, 6, 3), "in_channels must be a positive integer, got 0"),
    "linear in 0": (lambda: nn.Linear(0, 3), "Linear: in_features must be a positive integer, got 0"),
    "linear out -2": (lambda: nn.Linear(3, -2), "out_features must be a positive integer, got -2"),
    "linear in 2.5": (lambda: nn.Linear(2.5, 3), "in_features must be a positive integer, got 2.5"),
    "maxpool kernel 0": (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be an integer >= 1"),
    "maxpool stride 0": (lambda: nn.MaxPool2d(2, stride=0), "MaxPool2d: stride must be"),
    "maxpool padding -1": (lambda: nn.MaxPool2d(3, padding=-1), "padding must be an integer >= 0"),
    "avgpool padding > k/2": (lambda: nn.AvgPool2d(2, padding=2), "AvgPool2d: padding 2 must be at most half"),
    "dropout -0.1": (lambda: nn.Dropout(-0.1), r"Dropout: p must be in \[0, 1\], got -0.1"),
    "dropout nan": (lambda: nn.Dropout(float("nan")), "p must be in"),
    "dropout str": (lambda: nn.Dropout("0.5"), "p must be in"),
    "batchnorm 0": (lambda: nn.BatchNorm1d(0), "BatchNorm1d: num_features must be a positive integer"),
}


@pytest.mark.parametrize("case", BAD_LAYERS, ids=list(BAD_LAYERS))
def test_bad_layer_sizes(case):
    make, message = BAD_LAYERS[case]
    with pytest.raises(ValueError, match=message):
        make()


def test_edge_sizes_that_pytorch_accepts():
    conv = nn.Conv2d(1, 2, (3, 1), stride=(1, 2), padding=(1, 0))
    assert conv.weight.shape == (2, 1, 3, 1) and conv.stride == (1, 2)
    assert np.asarray(nn.MaxPool2d(3, stride=1, padding=1)(rand(1, 1, 4, 4))).shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(np.asarray(nn.Dropout(1.0)(np.ones((2, 3), np.float32))), 0.0)  # as PyTorch


def test_a_failed_load_state_dict_changes_nothing():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["1.bias"] = np.array(["a", "b"])  # the last key cannot be converted
    with pytest.raises(ValueError, match=r"load_state_dict: 1.bias: cannot convert .* to float32"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
