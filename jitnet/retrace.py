"""Why a compiled function traced again: the difference between two call signatures, said in the
user's terms (which argument, its old and new shape, dtype, device or static value), and a warning
when one function keeps retracing, since every new signature pays a trace and a compile.

Reasons go to the `jitnet.retrace` logger (INFO) and, with JITNET_DEBUG set, to stderr.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jitnet.ir.pytree import LEAF

WARN_AFTER = 8  # signatures of one function before the retrace warning
logger = logging.getLogger("jitnet.retrace")


class RetraceWarning(UserWarning):
    """A compiled function was traced for many signatures (each one traced and compiled anew)."""


class Signature(NamedTuple):
    """What decides a compiled program: the key of a compiled function's table."""

    treedef: Any  # the pytree structure of the dynamic arguments (a tuple of them)
    specs: tuple  # (shape, dtype char, weak) of each array or scalar leaf
    static: tuple  # the static arguments' values, in static_argnums order
    n_args: int
    backend: str


def leaf_paths(treedef: Any, path: str = "") -> list[str]:
    """The path of each leaf under treedef, in flatten order: "[0]['w']", "[1]", ..."""
    if treedef is LEAF:
        return [path]
    if treedef[0] is dict:
        _, keys, defs = treedef
        return [p for k, d in zip(keys, defs) for p in leaf_paths(d, f"{path}[{k!r}]")]
    return [p for i, d in enumerate(treedef[1]) for p in leaf_paths(d, f"{path}[{i}]")]


def _spec_text(spec: tuple) -> str:
    shape, char, weak = spec
    dtype = np.dtype(char).name
    return f"a Python scalar ({dtype})" if weak else f"{dtype}{list(shape)}"


def _spec_change(old: tuple, new: tuple) -> str:
    if old[2] != new[2] or old[0] == new[0] == ():
        return f"{_spec_text(old)} -> {_spec_text(new)}"
    parts = []
    if old[0] != new[0]:
        parts.append(f"shape {old[0]} -> {new[0]}")
    if old[1] != new[1]:
        parts.append(f"dtype {np.dtype(old[1]).name} -> {np.dtype(new[1]).name}")
    return ", ".join(parts)


def _user_frame() -> int:
    """The stacklevel of the nearest caller outside jitnet (fit, grad and predict call compiled
    functions from inside the package): the warning points at the user's line."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class Retraces:
    """One compiled function's record of why it traced: argument names, the changes seen, and
    whether the warning was given."""

    def __init__(self, fn: Callable, static_argnums: tuple):
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.static_argnums = static_argnums
        try:
            params = inspect.signature(fn).parameters.values()
            self.arg_names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):  # builtins and some callables have no signature
            self.arg_names = []
        self.changed: Counter = Counter()  # argument label -> how many retraces it caused
        self.warned = False

    def label(self, index: int) -> str:
        """The argument's parameter name, else its position ("argument 3")."""
        return self.arg_names[index] if index < len(self.arg_names) else f"argument {index}"

    def changes(self, old: Signature, new: Signature) -> list[tuple[str, str]]:
        """(argument label, what changed) for each difference between two signatures."""
        if old.n_args != new.n_args:
            return [("", f"{old.n_args} -> {new.n_args} arguments")]
        out = []
        if old.backend != new.backend:
            out.append(("", f"backend {old.backend} -> {new.backend}"))
        for i, a, b in zip(self.static_argnums, old.static, new.static):
            if a != b:
                out.append((self.label(i), f"static value {a!r} -> {b!r}"))
        dynamic = [i for i in range(new.n_args) if i not in self.static_argnums]
        old_defs, new_defs = old.treedef[1], new.treedef[1]
        old_at = new_at = 0
        for position, (d_old, d_new) in enumerate(zip(old_defs, new_defs)):
            label = self.label(dynamic[position])
            p_old, p_new = leaf_paths(d_old), leaf_paths(d_new)
            s_old = old.specs[old_at : old_at + len(p_old)]
            s_new = new.specs[new_at : new_at + len(p_new)]
            old_at, new_at = old_at + len(p_old), new_at + len(p_new)
            if d_old != d_new:
                out.append((label, f"pytree structure changed ({len(p_old)} -> {len(p_new)} leaves)"))
                continue
            for path, a, b in zip(p_new, s_old, s_new):
                if a != b:
                    out.append((label + path, _spec_change(a, b)))
        return out

    def nearest(self, known, new: Signature) -> Signature | None:
        """Of the signatures still compiled (most recent first), the one `new` differs from least:
        the reason names what is really new (a dtype), not what an older call already had."""
        return min(known, key=lambda old: len(self.changes(old, new)), default=None)

    def record(self, old: Signature | None, new: Signature, traces: int, reason: str | None = None) -> str | None:
        """Log why `new` traces (`reason` when the signature did not change, e.g. a capture did),
        warn once when the function reaches WARN_AFTER signatures; returns the reason logged."""
        if old is None and reason is None:
            return None
        found = [("", reason)] if reason else self.changes(old, new)
        for label, _ in found:
            self.changed[label.split("[")[0]] += 1
        text = "; ".join(f"{label}: {what}" if label else what for label, what in found)
        message = f"jitnet: {self.name} traced again (trace {traces}): {text}"
        logger.info(message)
        if traces >= WARN_AFTER and not self.warned:
            self.warned = True
            warnings.warn(self._advice(traces), RetraceWarning, stacklevel=_user_frame())
        return message

    def _advice(self, traces: int) -> str:
        label = next((label for label, _ in self.changed.most_common() if label), None)
        what = f"argument {label!r}" if label and not label.startswith("argument") else label or "its signature"
        return (
            f"jitnet: {self.name} has been traced for {traces} signatures, mostly because {what} changed; "
            "each new signature traces and compiles again. Usual fixes: a fixed batch size "
            "(Trainer.fit(drop_last=True), or pad the last batch), padding inputs to a few sizes, and "
            "passing values that select code paths with static_argnums only when they take few values. "
            "Set JITNET_DEBUG=1 or enable the 'jitnet.retrace' logger to see each retrace's reason."
        )
