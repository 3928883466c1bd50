"""Optimizers against numpy references of PyTorch's update rules over several steps (state
included), and against torch.optim where installed, on each backend: `Optimizer.step` runs where the
parameters live."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import on_device

import jitnet as jn
from jitnet import optim

RNG = np.random.default_rng(0)
P0 = {"w": RNG.standard_normal((5, 3)).astype(np.float32), "b": RNG.standard_normal(3).astype(np.float32)}
GRADS = [{k: RNG.standard_normal(v.shape).astype(np.float32) for k, v in P0.items()} for _ in range(4)]


def sgd_ref(p, g, s, t, lr, momentum=0.0, nesterov=False, wd=0.0):
    g = g + wd * p
    if momentum:
        s["buf"] = momentum * s.get("buf", 0) + g
        g = g + momentum * s["buf"] if nesterov else s["buf"]
    return p - lr * g


def adagrad_ref(p, g, s, t, lr=0.01, eps=1e-10, wd=0.0):
    g = g + wd * p
    s["sum"] = s.get("sum", 0) + g * g
    return p - lr * g / (np.sqrt(s["sum"]) + eps)


def rmsprop_ref(p, g, s, t, lr=0.01, alpha=0.99, eps=1e-8, wd=0.0):
    g = g + wd * p
    s["sq"] = alpha * s.get("sq", 0) + (1 - alpha) * g * g
    return p - lr * g / (np.sqrt(s["sq"]) + eps)


def adadelta_ref(p, g, s, t, lr=1.0, rho=0.9, eps=1e-6, wd=0.0):
    g = g + wd * p
    s["sq"] = rho * s.get("sq", 0) + (1 - rho) * g * g
    d = np.sqrt(s.get("acc", 0) + eps) / np.sqrt(s["sq"] + eps) * g
    s["acc"] = rho * s.get("acc", 0) + (1 - rho) * d * d
    return p - lr * d


def adam_ref(p, g, s, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    g = g + wd * p
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    denom = np.sqrt(s["v"]) / math.sqrt(1 - b2**t) + eps
    return p - lr / (1 - b1**t) * s["m"] / denom


def adamw_ref(p, g, s, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=1e-2, amsgrad=False):
    p = p * (1 - lr * wd)  # decoupled: the parameter shrinks, the gradient is left alone
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    v = s["vmax"] = np.maximum(s.get("vmax", 0), s["v"]) if amsgrad else s["v"]
    return p - lr / (1 - b1**t) * s["m"] / (np.sqrt(v) / math.sqrt(1 - b2**t) + eps)


CASES = [
    (lambda ps: optim.SGD(ps, lr=0.1), lambda *a: sgd_ref(*a, lr=0.1)),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda *a: sgd_ref(*a, lr=0.1, momentum=0.9)),
    (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
        lambda *a: sgd_ref(*a, lr=0.05, momentum=0.8, nesterov=True, wd=0.01),
    ),
    (lambda ps: optim.AdaGrad(ps, lr=0.1, weight_decay=0.1), lambda *a: adagrad_ref(*a, lr=0.1, wd=0.1)),
    (lambda ps: optim.RMSProp(ps, lr=0.01, alpha=0.9), lambda *a: rmsprop_ref(*a, lr=0.01, alpha=0.9)),
    (lambda ps: optim.AdaDelta(ps, weight_decay=0.05), lambda *a: adadelta_ref(*a, wd=0.05)),
    (lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99)), lambda *a: adam_ref(*a, lr=0.01, b1=0.8, b2=0.99)),
    (lambda ps: optim.Adam(ps, weight_decay=0.1), lambda *a: adam_ref(*a, wd=0.1)),
    (lambda ps: optim.AdamW(ps), adamw_ref),
    (
        lambda ps: optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True),
        lambda *a: adamw_ref(*a, lr=0.01, b1=0.8, b2=0.99, wd=0.1, amsgrad=True),
    ),
]


def fresh_params(device="cpu"):
    return {k: jn.asarray(v.copy(), device=device) for k, v in P0.items()}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_rule_over_several_steps(case, on_backend):
    make, ref = CASES[case]
    params = fresh_params(on_backend)
    opt = make(params)
    want = {k: v.astype(np.float64) for k, v in P0.items()}
    states = {k: {} for k in P0}
    for t, grads in enumerate(GRADS, start=1):
        opt.step(grads)
        for k in P0:
            want[k] = ref(want[k], grads[k].astype(np.float64), states[k], t)
            np.testing.assert_allclose(params[k].numpy(), want[k], rtol=2e-5, atol=2e-6, err_msg=f"step {t} {k}")
    assert opt.iterations == len(GRADS)
    assert opt._step_fn.traces == 1
    on_device([params, opt.state], on_backend)


def test_schedule_lr_and_gradient_clipping(on_backend):
    params = fresh_params(on_backend)
    opt = optim.SGD(params, lr=optim.schedules.step(0.1, 2, 0.5), clip_grad_norm=1.0)
    want = {k: v.astype(np.float64) for k, v in P0.items()}
    for it, grads in enumerate(GRADS):
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        scale = min(1.0, 1.0 / (norm + 1e-6))
        opt.step(grads)
        for k in P0:
            want[k] = want[k] - 0.1 * 0.5 ** (it // 2) * scale * grads[k]
            np.testing.assert_allclose(params[k].numpy(), want[k], rtol=1e-5, atol=1e-6)
    assert opt._step_fn.traces == 1  # the changing rate is a runtime scalar


def test_state_dict_round_trip_and_errors(on_backend):
    params = fresh_params(on_backend)
    opt = optim.Adam(params)
    opt.step(GRADS[0])
    state = {k: np.array(v) for k, v in opt.state_dict().items()}
    assert sorted(state) == ["b.exp_avg", "b.exp_avg_sq", "iterations", "lr", "w.exp_avg", "w.exp_avg_sq"]
    other = optim.Adam(fresh_params(on_backend), lr=0.5)
    other.load_state_dict(state)
    on_device(other.state, on_backend)
    assert other.iterations == 1 and other.lr == opt.lr  # a rate lowered during training resumes lowered
    np.testing.assert_array_equal(other.state["w"]["exp_avg"].numpy(), state["w.exp_avg"])
    with pytest.raises(ValueError, match=r"missing keys \['iterations'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "iterations"})
    with pytest.raises(ValueError, match=r"lr must be a float scalar"):
        other.load_state_dict({**state, "lr": np.array([0.1])})
    older = {k: v for k, v in state.items() if k != "lr"}  # a checkpoint from before "lr" was saved
    other.lr = 0.25
    other.load_state_dict(older)
    assert other.lr == 0.25
    scheduled = optim.Adam(fresh_params(on_backend), lr=optim.schedules.step(0.1, 2, 0.5))
    assert "lr" not in scheduled.state_dict()  # a schedule is code, not state
    scheduled.load_state_dict(state)
    assert callable(scheduled.lr)


def test_bad_arguments():
    with pytest.raises(TypeError, match="non-empty dict"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="gradients missing"):
        optim.SGD(fresh_params(), lr=0.1).step({"w": GRADS[0]["w"]})


NAN, INF = float("nan"), float("inf")
# PyTorch's ranges (NaN and inf rejected as well): (optimizer, arguments, error, message)
BAD_HYPERPARAMETERS = [
    ("SGD", {"lr": -1.0}, ValueError, r"SGD: lr must be in \[0, inf\), got -1.0"),
    ("SGD", {"lr": NAN}, ValueError, "lr must be in"),
    ("SGD", {"lr": "0.1"}, TypeError, "lr must be a number, got '0.1'"),
    ("SGD", {"lr": 0.1, "momentum": -0.9}, ValueError, "momentum must be in"),
    ("SGD", {"lr": 0.1, "weight_decay": -1e-4}, ValueError, "weight_decay must be in"),
    ("SGD", {"lr": 0.1, "nesterov": True}, ValueError, "nesterov needs a momentum"),
    ("SGD", {"lr": 0.1, "clip_grad_norm": 0.0}, ValueError, r"clip_grad_norm must be in \(0, inf\)"),
    ("Adam", {"betas": (0.9,)}, ValueError, r"Adam: betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
    ("Adam", {"betas": 0.9}, ValueError, "betas must be a pair"),
    ("Adam", {"betas": (0.9, 1.0)}, ValueError, r"betas\[1\] must be in \[0, 1\), got 1.0"),
    ("Adam", {"betas": (-0.1, 0.999)}, ValueError, r"betas\[0\] must be in"),
    ("Adam", {"eps": -1e-8}, ValueError, "eps must be in"),
    ("Adam", {"lr": INF}, ValueError, "lr must be in"),
    ("Adam", {"amsgrad": "yes"}, TypeError, "Adam: amsgrad must be True or False, got 'yes'"),
    ("AdamW", {"weight_decay": -0.01}, ValueError, r"AdamW: weight_decay must be in \[0, inf\), got -0.01"),
    ("AdamW", {"weight_decay": NAN}, ValueError, "AdamW: weight_decay must be in"),
    ("AdamW", {"weight_decay": "0.01"}, TypeError, "AdamW: weight_decay must be a number"),
    ("AdamW", {"betas": (0.9,)}, ValueError, r"AdamW: betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
    ("AdamW", {"betas": (0.9, 1.0)}, ValueError, r"AdamW: betas\[1\] must be in \[0, 1\), got 1.0"),
    ("AdamW", {"betas": (-0.1, 0.999)}, ValueError, r"AdamW: betas\[0\] must be in \[0, 1\)"),
    ("AdamW", {"eps": -1e-8}, ValueError, r"AdamW: eps must be in \[0, inf\)"),
    ("AdamW", {"eps": INF}, ValueError, "AdamW: eps must be in"),
    ("AdamW", {"lr": -1e-3}, ValueError, r"AdamW: lr must be in \[0, inf\)"),
    ("AdamW", {"amsgrad": 1}, TypeError, "AdamW: amsgrad must be True or False, got 1"),
    ("AdamW", {"clip_grad_norm": -1.0}, ValueError, r"AdamW: clip_grad_norm must be in \(0, inf\)"),
    ("AdaGrad", {"eps": -1.0}, ValueError, "AdaGrad: eps must be in"),
    ("RMSProp", {"alpha": -0.5}, ValueError, "RMSProp: alpha must be in"),
    ("RMSProp", {"eps": NAN}, ValueError, "RMSProp: eps must be in"),
    ("AdaDelta", {"rho": 1.5}, ValueError, r"AdaDelta: rho must be in \[0, 1\]"),
]


@pytest.mark.parametrize("case", BAD_HYPERPARAMETERS, ids=[f"{c[0]}-{list(c[1])[-1]}" for c in BAD_HYPERPARAMETERS])
def test_hyperparameters_are_checked_as_pytorch_does(case):
    name, kwargs, error, message = case
    with pytest.raises(error, match=message):
        getattr(optim, name)(fresh_params(), **kwargs)


def test_a_schedule_value_is_checked_at_its_step():
    opt = optim.SGD(fresh_params(), lr=lambda it: 0.1 - 0.1 * it)
    opt.step(GRADS[0])
    opt.step(GRADS[1])  # lr 0 is allowed
    with pytest.raises(ValueError, match=r"lr \(the schedule's value at iteration 2\) must be in \[0, inf\)"):
        opt.step(GRADS[2])


def test_a_failed_load_changes_nothing():
    opt = optim.Adam(fresh_params())
    opt.step(GRADS[0])
    before = {k: np.array(v) for k, v in opt.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    with pytest.raises(ValueError, match=r"b.exp_avg_sq has shape \(4,\), expected \(3,\)"):
        opt.load_state_dict({**state, "b.exp_avg_sq": np.zeros(4, np.float32)})  # the last slot loaded
    with pytest.raises(ValueError, match="iterations must be a non-negative integer"):
        opt.load_state_dict({**state, "iterations": np.array(-2)})
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


TORCH_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, "SGD", {}),
    ("AdaGrad", {"lr": 0.1, "weight_decay": 0.01}, "Adagrad", {}),
    ("RMSProp", {"lr": 0.01, "alpha": 0.95}, "RMSprop", {}),
    ("AdaDelta", {"lr": 1.0, "rho": 0.9}, "Adadelta", {}),
    ("Adam", {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.01}, "Adam", {}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True}, "Adam", {}),
    ("AdamW", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, "AdamW", {}),
]


@pytest.mark.parametrize(
    "case", TORCH_CASES, ids=[c[0] + ("-amsgrad" if c[1].get("amsgrad") else "") for c in TORCH_CASES]
)
def test_against_torch(case, on_backend):
    torch = pytest.importorskip("torch")
    ours, kwargs, theirs, _ = case
    params = fresh_params(on_backend)
    opt = getattr(optim, ours)(params, **kwargs)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in P0.items()}
    topt = getattr(torch.optim, theirs)(list(tparams.values()), **kwargs)
    for grads in GRADS:
        opt.step(grads)
        for k, tp in tparams.items():
            tp.grad = torch.from_numpy(grads[k])
        topt.step()
    for k in P0:
        np.testing.assert_allclose(params[k].numpy(), tparams[k].detach().numpy(), rtol=1e-5, atol=1e-6)
