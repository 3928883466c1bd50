"""Optimizers with PyTorch's update rules, written as pure functions of traced values.

`update(params, grads, state, hyper)` returns new parameters and state: `train_step` traces it into
the same program as the forward and backward, so the update of the whole model fuses into a few
kernels. Per-step scalars (the learning rate from a schedule, Adam's bias corrections, AdamW's decay
factor) come from `hyper(it)`, computed on the host in float64 and passed as runtime scalars: they
never recompile.
`step(grads)` applies one update eagerly (one compiled program) to the parameters in place.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

import jitnet as jn
from jitnet.runtime.array import Array

# The ranges PyTorch's optimizers accept (NaN and inf fail every check).
_RANGES = {
    "[0, inf)": lambda v: 0 <= v < math.inf,
    "(0, inf)": lambda v: 0 < v < math.inf,
    "[0, 1)": lambda v: 0 <= v < 1,
    "[0, 1]": lambda v: 0 <= v <= 1,
}


def _number(owner: str, name: str, value, interval: str = "[0, inf)") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    if not _RANGES[interval](value):
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return float(value)


class Optimizer:
    """Parameters (name -> Array, usually `model.parameters()`), per-parameter state Arrays, an
    iteration counter, and the learning rate (a float or a schedule `it -> lr`)."""

    slots: tuple[str, ...] = ()

    def __init__(self, params: dict, lr, weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        name = type(self).__name__
        if not isinstance(params, dict) or not params:
            raise TypeError(f"{name}: params must be a non-empty dict name -> Array (model.parameters())")
        bad = [k for k, v in params.items() if not isinstance(v, Array) or v.dtype.kind != "f"]
        if bad:
            raise TypeError(f"{name}: parameters {bad} are not float jn.Arrays")
        if not callable(lr):
            _number(name, "lr", lr)
        self.params = dict(params)
        self.lr = lr
        self.weight_decay = _number(name, "weight_decay", weight_decay)
        self.clip_grad_norm = (
            None if clip_grad_norm is None else _number(name, "clip_grad_norm", clip_grad_norm, "(0, inf)")
        )
        self.iterations = 0
        self.state = {
            k: {s: jn.asarray(np.zeros(p.shape, p.dtype), device=p.device) for s in self.slots}
            for k, p in self.params.items()
        }
        self._step_fn = None

    def lr_at(self, it: int) -> float:
        """The rate of update `it`; a schedule's value is checked like a fixed rate's."""
        if callable(self.lr):
            return _number(type(self).__name__, f"lr (the schedule's value at iteration {it})", self.lr(it))
        return float(self.lr)

    def hyper(self, it: int) -> dict[str, float]:
        """The runtime scalars of update number `it` (0-based)."""
        return {"lr": self.lr_at(it)}

    def update(self, params: dict, grads: dict, state: dict, hyper: dict) -> tuple[dict, dict]:
        """(new params, new state); the rule per parameter is `_rule`."""
        grads = self._clip(grads)
        new_params, new_state = {}, {}
        for k, p in params.items():
            p, g = self._decay(p, grads[k], hyper)
            new_params[k], new_state[k] = self._rule(p, g, state[k], hyper)
        return new_params, new_state

    def _decay(self, p, g, hyper: dict) -> tuple:
        """(parameter, gradient) that `_rule` gets: weight decay as L2, added to the gradient
        (PyTorch's `weight_decay` of every optimizer but AdamW, which overrides this)."""
        if self.weight_decay:
            g = g + self.weight_decay * p
        return p, g

    def _clip(self, grads: dict) -> dict:
        """PyTorch's clip_grad_norm_: scale all gradients by min(1, max_norm / (total 2-norm + 1e-6))."""
        if self.clip_grad_norm is None:
            return grads
        total = jn.sqrt(sum(jn.sum(jn.square(g)) for g in grads.values()))
        scale = jn.minimum(self.clip_grad_norm / (total + 1e-6), 1.0)
        return {k: g * scale for k, g in grads.items()}

    def _rule(self, p, g, state: dict, hyper: dict) -> tuple:
        raise NotImplementedError

    def step(self, grads: dict) -> None:
        """Apply one update with these gradients (name -> array), in place."""
        missing = [k for k in self.params if k not in grads]
        if missing or len(grads) != len(self.params):
            raise ValueError(f"{type(self).__name__}.step: gradients missing for {missing} or given for unknown names")
        if self._step_fn is None:
            self._step_fn = jn.compile(self.update)
        new_params, new_state = self._step_fn(self.params, grads, self.state, self.hyper(self.iterations))
        self.commit(new_params, new_state)

    def commit(self, new_params: dict, new_state: dict) -> None:
        """Move freshly computed parameters and state into the existing Arrays (no copies)."""
        for k, p in self.params.items():
            p.assign(new_params[k], move=True)
            for s, arr in self.state[k].items():
                arr.assign(new_state[k][s], move=True)
        self.iterations += 1

    def state_dict(self) -> dict:
        """Per-parameter state, the iteration count, and a fixed learning rate ("lr"; a schedule is
        code, not state): a rate a callback lowered resumes lowered, as in PyTorch and Keras."""
        out = {f"{k}.{s}": arr for k, slots in self.state.items() for s, arr in slots.items()}
        out["iterations"] = np.array(self.iterations, np.int64)
        if not callable(self.lr):
            out["lr"] = np.array(self.lr, np.float64)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore state and iteration count saved by `state_dict` (strict, like Module's); a bad key
        raises before anything is changed."""
        self._prepare_load(state)()

    def _prepare_load(self, state: dict) -> Callable[[], None]:
        """Check and convert every value of `state`; return the function that copies them in."""
        name = f"{type(self).__name__}.load_state_dict"
        own = self.state_dict()
        missing = [k for k in own if k not in state and k != "lr"]  # "lr": absent in older checkpoints
        unexpected = [k for k in state if k not in own and k != "lr"]  # a schedule keeps its own rates
        if missing or unexpected:
            raise ValueError(f"{name}: missing keys {missing}, unexpected keys {unexpected}")
        values = []
        for k, slots in self.state.items():
            for s, arr in slots.items():
                value = np.asarray(state[f"{k}.{s}"])
                if value.shape != arr.shape:
                    raise ValueError(f"{name}: {k}.{s} has shape {value.shape}, expected {arr.shape}")
                values.append((arr, value.astype(arr.dtype)))
        iterations = np.asarray(state["iterations"])
        if iterations.shape != () or iterations.dtype.kind not in "iu" or iterations < 0:
            raise ValueError(f"{name}: iterations must be a non-negative integer, got {state['iterations']!r}")
        lr = self.lr
        if "lr" in state and not callable(lr):
            lr = np.asarray(state["lr"])
            if lr.shape != () or lr.dtype.kind != "f":
                raise ValueError(f"{name}: lr must be a float scalar, got {state['lr']!r}")
            lr = _number(name, "lr", float(lr))

        def commit() -> None:
            for arr, value in values:
                arr.assign(value)
            self.iterations = int(iterations)
            self.lr = lr

        return commit


class SGD(Optimizer):
    """p -= lr * g, or with momentum: buf = momentum * buf + g; p -= lr * (g + momentum * buf if
    nesterov else buf) (PyTorch's SGD, dampening 0)."""

    def __init__(self, params, lr, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, **kw):
        self.momentum = _number("SGD", "momentum", momentum)
        if nesterov and not self.momentum:
            raise ValueError("SGD: nesterov needs a momentum > 0")
        self.nesterov = bool(nesterov)
        self.slots = ("momentum_buffer",) if self.momentum else ()
        super().__init__(params, lr, weight_decay, **kw)

    def _rule(self, p, g, state, hyper):
        if not self.momentum:
            return p - hyper["lr"] * g, {}
        buf = self.momentum * state["momentum_buffer"] + g
        d = g + self.momentum * buf if self.nesterov else buf
        return p - hyper["lr"] * d, {"momentum_buffer": buf}


class AdaGrad(Optimizer):
    """sum += g**2; p -= lr * g / (sqrt(sum) + eps) (PyTorch's Adagrad)."""

    slots = ("sum",)

    def __init__(self, params, lr=0.01, eps: float = 1e-10, weight_decay: float = 0.0, **kw):
        self.eps = _number("AdaGrad", "eps", eps)
        super().__init__(params, lr, weight_decay, **kw)

    def _rule(self, p, g, state, hyper):
        s = state["sum"] + g * g
        return p - hyper["lr"] * g / (jn.sqrt(s) + self.eps), {"sum": s}


class RMSProp(Optimizer):
    """sq = alpha * sq + (1 - alpha) * g**2; p -= lr * g / (sqrt(sq) + eps) (PyTorch's RMSprop)."""

    slots = ("square_avg",)

    def __init__(self, params, lr=0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, **kw):
        self.alpha, self.eps = _number("RMSProp", "alpha", alpha), _number("RMSProp", "eps", eps)
        super().__init__(params, lr, weight_decay, **kw)

    def _rule(self, p, g, state, hyper):
        sq = self.alpha * state["square_avg"] + (1 - self.alpha) * g * g
        return p - hyper["lr"] * g / (jn.sqrt(sq) + self.eps), {"square_avg": sq}


class AdaDelta(Optimizer):
    """sq = rho * sq + (1 - rho) * g**2; d = sqrt(acc + eps) / sqrt(sq + eps) * g;
    acc = rho * acc + (1 - rho) * d**2; p -= lr * d (PyTorch's Adadelta)."""

    slots = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0, **kw):
        self.rho, self.eps = _number("AdaDelta", "rho", rho, "[0, 1]"), _number("AdaDelta", "eps", eps)
        super().__init__(params, lr, weight_decay, **kw)

    def _rule(self, p, g, state, hyper):
        sq = self.rho * state["square_avg"] + (1 - self.rho) * g * g
        d = jn.sqrt(state["acc_delta"] + self.eps) / jn.sqrt(sq + self.eps) * g
        acc = self.rho * state["acc_delta"] + (1 - self.rho) * d * d
        return p - hyper["lr"] * d, {"square_avg": sq, "acc_delta": acc}


class Adam(Optimizer):
    """m, v: moving averages of g and g**2; p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    (PyTorch's Adam; weight decay is added to the gradient, L2). With amsgrad, the denominator takes
    the running maximum of v instead of v (kept in the slot `max_exp_avg_sq`)."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        **kw,
    ):
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1, self.beta2 = (_number(name, f"betas[{i}]", b, "[0, 1)") for i, b in enumerate(betas))
        self.eps = _number(name, "eps", eps)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"{name}: amsgrad must be True or False, got {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        self.slots = type(self).slots + (("max_exp_avg_sq",) if self.amsgrad else ())
        super().__init__(params, lr, weight_decay, **kw)

    def hyper(self, it: int) -> dict[str, float]:
        return self._corrections(it, self.lr_at(it))

    def _corrections(self, it: int, lr: float) -> dict[str, float]:
        """The bias-corrected step size and 1 / sqrt(1 - b2**t) of update `it` (t = it + 1)."""
        t = it + 1
        return {"step_size": lr / (1 - self.beta1**t), "inv_sqrt_bc2": 1 / math.sqrt(1 - self.beta2**t)}

    def _rule(self, p, g, state, hyper):
        m = self.beta1 * state["exp_avg"] + (1 - self.beta1) * g
        v = self.beta2 * state["exp_avg_sq"] + (1 - self.beta2) * g * g
        new_state = {"exp_avg": m, "exp_avg_sq": v}
        if self.amsgrad:
            v = new_state["max_exp_avg_sq"] = jn.maximum(state["max_exp_avg_sq"], v)
        denom = jn.sqrt(v) * hyper["inv_sqrt_bc2"] + self.eps
        return p - hyper["step_size"] * m / denom, new_state


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's AdamW): each update first shrinks the parameter,
    p *= 1 - lr * weight_decay (lr: the rate of this update, a schedule's included), then takes Adam's
    step with the gradient as it is: the decay never enters the moments m and v. Defaults as
    PyTorch's, weight_decay=1e-2 included; amsgrad as Adam's."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        **kw,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kw)

    def hyper(self, it: int) -> dict[str, float]:
        lr = self.lr_at(it)
        # The factor as PyTorch computes it (a host float), so float32 parameters round alike.
        return {**self._corrections(it, lr), "decay": 1 - lr * self.weight_decay}

    def _decay(self, p, g, hyper: dict) -> tuple:
        """Decoupled: the parameter shrinks, the gradient is left alone (PyTorch skips it at 0 too)."""
        if self.weight_decay:
            p = p * hyper["decay"]
        return p, g
