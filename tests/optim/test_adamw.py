"""AdamW (decoupled weight decay) against torch.optim.AdamW step by step, in float32 and float64, on
each backend; the decay kept out of the moments; state_dict round trip; train_step with AdamW."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import on_device

import jitnet as jn
from jitnet import optim

RNG = np.random.default_rng(7)
SHAPES = {"w": (6, 4), "b": (4,)}
P0 = {k: RNG.standard_normal(s) for k, s in SHAPES.items()}
# Five steps of gradients whose scale changes by orders of magnitude from step to step (so that eps,
# the bias corrections and amsgrad's running maximum all matter).
GRADS = [{k: RNG.standard_normal(s) * 10 ** RNG.uniform(-3, 1) for k, s in SHAPES.items()} for _ in range(5)]

# (id, AdamW arguments; lr may be a schedule, clip_grad_norm is applied with torch's clip_grad_norm_)
SETTINGS = [
    ("default", {}),
    ("wd0.1-betas-eps", {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("cosine-lr", {"lr": optim.schedules.cosine(0.05, 4, min_lr=0.005), "weight_decay": 0.05}),
    ("step-lr", {"lr": optim.schedules.step(0.02, 2, 0.5), "weight_decay": 0.2}),
    ("amsgrad", {"lr": 0.02, "weight_decay": 0.05, "amsgrad": True}),
    ("no-decay", {"lr": 0.01, "weight_decay": 0.0}),
    ("clip", {"lr": 0.01, "weight_decay": 0.1, "clip_grad_norm": 1.0}),
]
TOLERANCES = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-6, "atol": 1e-12}}


def params_of(dtype, device=None):
    return {k: jn.asarray(v.astype(dtype), device=device) for k, v in P0.items()}


def grads_of(step, dtype):
    return {k: g.astype(dtype) for k, g in GRADS[step].items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_against_torch_every_step(setting, dtype, on_backend):
    torch = pytest.importorskip("torch", reason="torch.optim.AdamW is the oracle")
    _, kwargs = setting
    params = params_of(dtype, on_backend)
    opt = optim.AdamW(params, **kwargs)
    schedule = kwargs["lr"] if callable(kwargs.get("lr")) else None
    clip = kwargs.get("clip_grad_norm")
    tkwargs = {k: v for k, v in kwargs.items() if k != "clip_grad_norm"}
    if schedule:
        tkwargs["lr"] = schedule(0)
    tparams = {k: torch.tensor(v.astype(dtype), requires_grad=True) for k, v in P0.items()}
    topt = torch.optim.AdamW(list(tparams.values()), foreach=False, **tkwargs)
    for it in range(len(GRADS)):
        grads = grads_of(it, dtype)
        opt.step(grads)
        for k, tp in tparams.items():
            tp.grad = torch.from_numpy(grads[k].copy())
        if clip:
            torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)
        if schedule:
            topt.param_groups[0]["lr"] = schedule(it)  # the rate of this update, as LambdaLR would set it
        topt.step()
        for k, tp in tparams.items():
            got = params[k].numpy()
            assert got.dtype == dtype
            np.testing.assert_allclose(got, tp.detach().numpy(), **TOLERANCES[dtype], err_msg=f"step {it + 1} {k}")
            tstate = topt.state[tp]
            for slot, arr in opt.state[k].items():
                np.testing.assert_allclose(
                    arr.numpy(), tstate[slot].numpy(), **TOLERANCES[dtype], err_msg=f"step {it + 1} {k}.{slot}"
                )
    assert opt._step_fn.traces == 1  # the scheduled rate, the corrections and the decay are runtime scalars
    on_device([params, opt.state], on_backend)


def test_decay_is_decoupled_from_the_moments(on_backend):
    """With zero gradients Adam's step is 0: AdamW only shrinks p by (1 - lr_t * wd) with the
    scheduled rate of each step, and its moments stay 0; Adam's L2 decay moves them."""
    lr, wd = optim.schedules.step(0.1, 1, 0.5), 0.3
    params = params_of(np.float64, on_backend)
    opt = optim.AdamW(params, lr=lr, weight_decay=wd)
    l2 = optim.Adam(params_of(np.float64, on_backend), lr=lr, weight_decay=wd)
    zeros = {k: np.zeros(s) for k, s in SHAPES.items()}
    want = dict(P0)
    for it in range(3):
        opt.step(zeros)
        l2.step(zeros)
        want = {k: v * (1 - lr(it) * wd) for k, v in want.items()}
        for k in P0:
            np.testing.assert_allclose(params[k].numpy(), want[k], rtol=1e-14)
            assert not opt.state[k]["exp_avg"].numpy().any() and not opt.state[k]["exp_avg_sq"].numpy().any()
            assert l2.state[k]["exp_avg"].numpy().any()
    assert isinstance(opt, optim.Adam) and opt.weight_decay == wd


def test_defaults_are_pytorchs():
    opt = optim.AdamW(params_of(np.float32))
    assert (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, opt.amsgrad) == (
        1e-3,
        0.9,
        0.999,
        1e-8,
        1e-2,
        False,
    )
    assert opt.clip_grad_norm is None


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_state_dict_round_trip(amsgrad, on_backend):
    """Resuming from a state_dict gives the same parameters as never stopping."""
    kwargs = {"lr": optim.schedules.cosine(0.05, 5), "weight_decay": 0.1, "amsgrad": amsgrad}
    params = params_of(np.float32, on_backend)
    opt = optim.AdamW(params, **kwargs)
    for it in range(2):
        opt.step(grads_of(it, np.float32))
    saved = {k: np.array(v) for k, v in opt.state_dict().items()}
    slots = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    assert sorted(saved) == sorted([f"{k}.{s}" for k in SHAPES for s in slots] + ["iterations"])

    resumed_params = {k: jn.asarray(v.numpy(), device=on_backend) for k, v in params.items()}
    resumed = optim.AdamW(resumed_params, **kwargs)
    resumed.load_state_dict(saved)
    on_device(resumed.state, on_backend)
    assert resumed.iterations == 2
    for it in range(2, len(GRADS)):
        opt.step(grads_of(it, np.float32))
        resumed.step(grads_of(it, np.float32))
    for k in SHAPES:
        np.testing.assert_array_equal(resumed_params[k].numpy(), params[k].numpy(), err_msg=k)
    with pytest.raises(ValueError, match="missing keys"):
        optim.AdamW(params_of(np.float32), amsgrad=not amsgrad).load_state_dict(saved)
