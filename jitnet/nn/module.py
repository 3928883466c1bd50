"""`Module`: named parameters and buffers in a tree of layers, PyTorch's naming and state_dict.

A module holds its parameters and buffers as `jn.Array`s on the device. Training updates them in
place (`Array.assign`), so a compiled forward that captured them sees the new values. For
differentiation `functional_call` runs `forward` with the parameters and buffers replaced by the
values given (tracers inside `train_step`), and collects the buffers the forward rewrote (BatchNorm's
running statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jitnet.backends import default_device
from jitnet.runtime.array import Array, asarray

# The state of a functional call: {"seed": runtime seed of this step (dropout), "dropouts": counter}.
_CALL: dict | None = None


class Module:
    """Base class of layers and models: `forward(x)` plus parameters, buffers and children."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name}")
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in self._params:
            self._params[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for table in ("_params", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def register_parameter(self, name: str, value) -> None:
        """A trainable float array, kept on the default device."""
        self._params[name] = asarray(value, device=default_device())

    def register_buffer(self, name: str, value) -> None:
        """State that is saved and loaded but not trained (BatchNorm's running statistics)."""
        self._buffers[name] = asarray(value, device=default_device())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- the tree ----

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def _named(self, table: str) -> dict[str, Any]:
        return {f"{p}{n}": v for p, m in self.named_modules() for n, v in getattr(m, table).items()}

    def parameters(self) -> dict[str, Array]:
        """name -> Array of every trainable parameter, names nested as PyTorch's ("0.weight")."""
        return self._named("_params")

    def buffers(self) -> dict[str, Array]:
        return self._named("_buffers")

    def state_dict(self) -> dict[str, Array]:
        """Parameters and buffers by name, in registration order (PyTorch's keys)."""
        out = {}
        for p, m in self.named_modules():
            out.update({f"{p}{n}": v for n, v in m._params.items()})
            out.update({f"{p}{n}": v for n, v in m._buffers.items()})
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the existing Arrays (their identity stays). Missing, unexpected,
        mis-shaped or unconvertible keys raise a ValueError naming them, before anything is copied
        (with strict=False missing and unexpected keys are skipped)."""
        self._prepare_load(state, strict)()

    def _prepare_load(self, state: dict, strict: bool = True) -> Callable[[], None]:
        """Check `state` and convert every value, then return the function that copies them in: a
        caller loading several objects (a Trainer: model and optimizer) checks all before changing any."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        bad = [
            f"{k}: expected {own[k].shape}, got {tuple(np.shape(state[k]))}"
            for k in own
            if k in state and tuple(np.shape(state[k])) != own[k].shape
        ]
        if bad:
            raise ValueError(f"load_state_dict: mis-shaped keys: {'; '.join(bad)}")
        values = {}
        for k in own:
            if k in state:
                try:
                    values[k] = np.asarray(state[k], dtype=own[k].dtype)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"load_state_dict: {k}: cannot convert {state[k]!r} to {own[k].dtype}: {e}"
                    ) from None

        def commit() -> None:
            for k, v in values.items():
                own[k].assign(v)

        return commit

    def to(self, device) -> Module:
        """Move every parameter and buffer to `device` ("cpu", "cuda" or a jn.device); build the
        optimizer after moving."""
        for _, m in self.named_modules():
            for table in (m._params, m._buffers):
                for name, v in table.items():
                    table[name] = asarray(v, device=device)
        return self

    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def __repr__(self) -> str:
        lines = [f"  ({n}): {repr(m).replace(chr(10), chr(10) + '  ')}" for n, m in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}({extra}\n" + "\n".join(lines) + "\n)"

    def extra_repr(self) -> str:
        return ""

    # ---- functional use (differentiation, one-program training) ----

    def _set_by_name(self, name: str, value) -> None:
        path, _, leaf = name.rpartition(".")
        owner = self
        for part in path.split(".") if path else ():
            owner = owner._modules[part]
        table = owner._params if leaf in owner._params else owner._buffers
        table[leaf] = value

    def functional_call(self, params: dict, buffers: dict, *args, seed=None):
        """forward(*args) with these parameter and buffer values in place of the module's own;
        returns (output, the buffers the forward rewrote). `seed` (a runtime int) drives Dropout."""
        global _CALL
        saved = self.state_dict()
        outer = _CALL
        try:
            for name, v in {**params, **buffers}.items():
                self._set_by_name(name, v)
            _CALL = {"seed": seed, "dropouts": 0}
            out = self.forward(*args)
            new_buffers = {k: v for k, v in self.buffers().items() if k in buffers and v is not buffers[k]}
        finally:
            _CALL = outer
            for name, v in saved.items():
                self._set_by_name(name, v)
        return out, new_buffers


def update_buffer(module: Module, name: str, value) -> None:
    """Set a buffer computed in forward: inside `functional_call` it becomes an output of the
    traced step; called eagerly on Arrays it is written in place. Inside a user's own compiled
    function (not a train_step) running statistics are left as they are."""
    from jitnet.ir.trace import Tracer

    if _CALL is not None:
        module._buffers[name] = value
    elif not isinstance(value, Tracer):
        module._buffers[name].assign(asarray(value))


def next_dropout_seed():
    """The seed for the next Dropout of a forward: the step's runtime seed, offset per layer, or
    a fresh draw from the global generator when there is no step."""
    from jitnet.nn import init

    if _CALL is not None and _CALL["seed"] is not None:
        _CALL["dropouts"] += 1
        return _CALL["seed"] + 7919 * _CALL["dropouts"]
    return int(init.generator().integers(0, 2**31))
