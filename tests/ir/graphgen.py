"""The random graph builder of the property tests (test_random_graphs.py: values, and
test_random_grad_graphs.py: gradients).

A program is plain data: inputs, then steps, each applying one op to earlier values (by index) and
appending one new value. `input_arrays` draws inputs whose shapes broadcast together; `trace_steps`
chooses each step against the values traced so far, so every step fits the shapes the engine
computed; `replay` turns a program into a traceable Python function, and a failing example prints
as a readable listing. What differs between the two tests is a parameter: the op tables and step
kinds (`Ops`: the gradient test keeps every op to its smooth domain) and the kinds of inputs.
`run_property` checks a property on one backend, with that backend's number of examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings

import jitnet as jn
from jitnet.ir.trace import input_tracer, tracing

# ---- the ops a step can apply ----

# Defined, and differentiable but at a kink, on every input: both tests use these as they are.
COMMON_UNARY = {
    "neg": lambda x: -x,
    "tanh": jn.tanh,
    "sigmoid": jn.sigmoid,
    "relu": jn.relu,
    "abs": jn.abs,
    "square": jn.square,
    "sin": jn.sin,
    "cos": jn.cos,
    "leaky_relu": lambda x: jn.leaky_relu(x, 0.1),
    "elu": lambda x: jn.elu(x, 0.7),
}

COMMON_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "maximum": jn.maximum,
    "minimum": jn.minimum,
}

REDUCE = {"sum": jn.sum, "mean": jn.mean, "max": jn.max, "min": jn.min, "logsumexp": jn.logsumexp}
ROWWISE = {"softmax": jn.softmax, "log_softmax": jn.log_softmax}

# Step kinds that need a value of rank 1 or more.
NEEDS_RANK = {"rowwise", "transpose", "pad", "concatenate"}


@dataclass(frozen=True, eq=False)
class Ops:
    """The ops one test's programs may use: `unary`, `binary` and `compare` (the condition of
    `where`) map names to functions; `kinds` lists the step kinds, repeated for weight; with
    `newaxis`, one index in five also inserts a new axis (None)."""

    unary: dict
    binary: dict
    compare: dict
    kinds: tuple[str, ...]
    newaxis: bool = False


# ---- programs ----


class Step:
    """One op applied to earlier values (indices into the program's value list)."""

    def __init__(self, op: str, args: tuple[int, ...], params: tuple = ()):
        self.op, self.args, self.params = op, args, params

    def __repr__(self) -> str:
        parts = [f"v{i}" for i in self.args] + [repr(p) for p in self.params]
        return f"{self.op}({', '.join(parts)})"


class Program:
    """Inputs, steps (each appends one value) and the indices of the values returned; with `r`
    (cotangent weights), the gradient test's objective is sum(output * r) of its one output."""

    def __init__(
        self,
        ops: Ops,
        inputs: tuple[np.ndarray, ...],
        steps: tuple[Step, ...],
        outputs: tuple[int, ...],
        r: np.ndarray | None = None,
    ):
        self.ops, self.inputs, self.steps, self.outputs, self.r = ops, inputs, steps, outputs, r

    def __repr__(self) -> str:
        lines = [f"v{i} = {x.dtype.name}{list(x.shape)} {x.tolist()}" for i, x in enumerate(self.inputs)]
        n = len(self.inputs)
        lines += [f"v{n + k} = {step!r}" for k, step in enumerate(self.steps)]
        if self.r is None:
            lines.append("return " + ", ".join(f"v{i}" for i in self.outputs))
        else:
            lines.append(f"return sum(v{self.outputs[-1]} * R), R = {self.r.tolist()}")
        return "Program:\n  " + "\n  ".join(lines)


def apply_step(ops: Ops, step: Step, values: list):
    op, p = step.op, step.params
    x = [values[i] for i in step.args]
    if op in ops.unary:
        return ops.unary[op](x[0])
    if op in ops.binary:
        return ops.binary[op](x[0], x[1])
    if op == "where":
        cmp = ops.compare[p[0]]
        return jn.where(cmp(x[0], x[1]), x[2], x[3])
    if op in REDUCE:
        return REDUCE[op](x[0], axis=p[0], keepdims=p[1])
    if op in ROWWISE:
        return ROWWISE[op](x[0], axis=p[0])
    if op == "transpose":
        return jn.transpose(x[0], p[0])
    if op == "reshape":
        return jn.reshape(x[0], p[0])
    if op == "getitem":
        return x[0][p[0]]
    if op == "broadcast_to":
        return jn.broadcast_to(x[0], p[0])
    if op == "expand_dims":
        return jn.expand_dims(x[0], p[0])
    if op == "pad":
        return jn.pad(x[0], p[0], value=p[1])
    if op == "concatenate":
        return jn.concatenate([x[0], x[1]], axis=p[0])
    raise AssertionError(f"unknown step {op}")


def replay(program: Program):
    """The traceable Python function that runs `program`'s steps on its inputs."""

    def fn(*inputs):
        values = list(inputs)
        for step in program.steps:
            values.append(apply_step(program.ops, step, values))
        return tuple(values[i] for i in program.outputs)

    return fn


# ---- random choices ----


class Choices:
    """A program's random choices, from a numpy generator seeded by one hypothesis draw. Uniform
    over the options: hypothesis's own draws lean hard towards the first option of every choice
    (most programs came out as chains of `abs`), and many of its distinct draws would map to the
    same program."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, options):
        options = list(options)
        return options[self.integer(0, len(options) - 1)]

    def coin(self) -> bool:
        return self.integer(0, 1) == 1

    def perm(self, items) -> list:
        return [int(i) for i in self.rng.permutation(list(items))]


def input_arrays(
    r: Choices,
    ndim: int | None = None,
    n_inputs: int | None = None,
    *,
    special: bool | None = None,
    bound: float = 3.0,
    ints: bool = True,
    empty: bool = True,
) -> tuple[np.ndarray, ...]:
    """`n_inputs` (by default 1-3) arrays whose shapes broadcast together: suffixes of one base
    shape of rank `ndim` (by default 0-3), some dims set to 1. Floats are uniform in [-bound, bound];
    with `ints`, one array in six is int32 instead; with `empty`, one base shape in ten has a size-0
    dim. Float inputs get NaN and inf sprinkled in when `special` (by default, one program in five)."""
    if ndim is None:
        ndim = r.pick([0, 1, 1, 2, 2, 2, 3, 3])
    base = [r.integer(1, 5) for _ in range(ndim)]
    if empty and ndim and r.integer(0, 9) == 0:
        base[r.integer(0, ndim - 1)] = 0
    if special is None:
        special = r.integer(0, 4) == 0
    if n_inputs is None:
        n_inputs = r.integer(1, 3)
    arrays = []
    for _ in range(n_inputs):
        drop = r.integer(0, ndim) if r.integer(0, 2) == 0 else 0  # mostly full rank
        shape = tuple(1 if r.integer(0, 3) == 0 else d for d in base[drop:])
        if ints and r.integer(0, 5) == 0:
            x = r.rng.integers(-5, 6, size=shape).astype(np.int32)
        else:
            x = r.rng.uniform(-bound, bound, size=shape).astype(np.float32)
            if special and x.size:
                mask = r.rng.random(shape) < 0.2
                x[mask] = r.rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=int(mask.sum()))
        arrays.append(x)
    return tuple(arrays)


def _broadcasts(*shapes) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _pick(r: Choices, candidates: list[int]) -> int:
    """Prefer the newest values, so steps chain rather than all reading the inputs."""
    if r.coin():
        return r.pick(candidates)
    return candidates[-1]


def _axes_subset(r: Choices, ndim: int):
    if r.integer(0, 4) == 0:
        return None
    axes = [a for a in range(ndim) if r.coin()]
    return tuple(a - ndim if r.coin() else a for a in axes)


def _reshape_target(r: Choices, shape: tuple) -> tuple:
    """Merge two adjacent dims, split one into two factors, add or drop 1s, or flatten."""
    kind = r.pick(["merge", "split", "ones", "flatten", "minus_one"])
    shape = list(shape)
    if kind == "merge" and len(shape) >= 2:
        i = r.integer(0, len(shape) - 2)
        return tuple(shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :])
    if kind == "split" and shape:
        i = r.integer(0, len(shape) - 1)
        factors = [f for f in range(1, shape[i] + 1) if shape[i] % f == 0] or [1]
        f = r.pick(factors)
        return tuple(shape[:i] + [f, shape[i] // f if f else 0] + shape[i + 1 :])
    if kind == "ones":
        dims = [d for d in shape if d != 1]
        for _ in range(r.integer(0, 2)):
            dims.insert(r.integer(0, len(dims)), 1)
        return tuple(dims)
    if kind == "minus_one" and 0 not in shape and shape:
        i = r.integer(0, len(shape) - 1)
        return tuple(-1 if d == i else n for d, n in enumerate(shape))
    return (math.prod(shape),)


def _index(r: Choices, shape: tuple, newaxis: bool) -> tuple:
    index = []
    for n in shape:
        if n and r.integer(0, 5) == 0:
            index.append(r.integer(-n, n - 1))
            continue
        start, stop = (None if r.coin() else r.integer(-n - 2, n + 2) for _ in range(2))
        index.append(slice(start, stop, r.pick([None, 1, 2, 3, -1, -2])))
    if newaxis and r.integer(0, 4) == 0:
        index.insert(r.integer(0, len(index)), None)
    return tuple(index)


def _broadcast_target(r: Choices, shape: tuple) -> tuple:
    lead = tuple(r.integer(1, 3) for _ in range(r.integer(0, 2 if len(shape) < 3 else 1)))
    return lead + tuple(r.integer(1, 3) if n == 1 else n for n in shape)


def _step(r: Choices, ops: Ops, values: list) -> Step:
    """One random step over the (traced) values so far; their shapes decide what applies."""
    shapes = [v.shape for v in values]
    i = _pick(r, list(range(len(values))))
    shape = shapes[i]
    ndim = len(shape)
    kind = r.pick([k for k in ops.kinds if ndim or k not in NEEDS_RANK])
    if kind == "unary":
        return Step(r.pick(sorted(ops.unary)), (i,))
    if kind == "binary":
        j = _pick(r, [j for j, s in enumerate(shapes) if _broadcasts(shape, s)])
        a, b = (i, j) if r.coin() else (j, i)
        return Step(r.pick(sorted(ops.binary)), (a, b))
    if kind == "where":
        operands = [i]
        for _ in range(3):
            chosen = [shapes[k] for k in operands]
            operands.append(_pick(r, [k for k, s in enumerate(shapes) if _broadcasts(*chosen, s)]))
        return Step("where", tuple(operands), (r.pick(sorted(ops.compare)),))
    if kind == "reduce":
        op = r.pick(sorted(REDUCE))
        axis = _axes_subset(r, ndim)
        axes = range(ndim) if axis is None else [a % ndim for a in axis]
        if op in ("max", "min", "logsumexp") and any(shape[a] == 0 for a in axes):
            op = "sum"  # max/min of nothing has no identity
        return Step(op, (i,), (axis, r.coin()))
    if kind == "rowwise" and 0 not in shape:
        return Step(r.pick(sorted(ROWWISE)), (i,), (r.integer(-ndim, ndim - 1),))
    if kind == "transpose":
        return Step("transpose", (i,), (tuple(r.perm(range(ndim))),))
    if kind == "reshape":
        return Step("reshape", (i,), (_reshape_target(r, shape),))
    if kind == "getitem":
        return Step("getitem", (i,), (_index(r, shape, ops.newaxis),))
    if kind == "broadcast_to":
        return Step("broadcast_to", (i,), (_broadcast_target(r, shape),))
    if kind == "expand_dims":
        return Step("expand_dims", (i,), (r.integer(-ndim - 1, ndim),))
    if kind == "pad":
        widths = tuple((r.integer(0, 2), r.integer(0, 2)) for _ in shape)
        return Step("pad", (i,), (widths, r.pick([0.0, 1.5, -2.0])))
    if kind == "concatenate":
        axis = r.integer(-ndim, ndim - 1)
        fits = [
            j
            for j, s in enumerate(shapes)
            if len(s) == ndim and all(a == b for d, (a, b) in enumerate(zip(s, shape)) if d != axis % ndim)
        ]
        return Step("concatenate", (i, _pick(r, fits)), (axis,))
    return Step("neg", (i,))  # softmax over a zero-size axis: its max has no identity


def trace_steps(r: Choices, ops: Ops, inputs: tuple[np.ndarray, ...], n_steps: int):
    """`n_steps` random steps over `inputs`, each chosen against the values traced so far, so it
    fits the shapes the engine computed. Returns the steps and the shapes of all the values."""
    steps = []
    with tracing():
        values = [input_tracer(k, x.shape, x.dtype) for k, x in enumerate(inputs)]
        for _ in range(n_steps):
            step = _step(r, ops, values)
            steps.append(step)
            values.append(apply_step(ops, step, values))
        return tuple(steps), [tuple(v.shape) for v in values]


# ---- running a property on one backend ----


def run_property(strategy, check, backend: str, examples: int, **settings_kwargs) -> None:
    """`check(program, backend)` on programs drawn from `strategy`: `examples` of them on the cpu, a
    quarter as many on cuda (the simulator runs a Python thread per CUDA thread). A test parametrised
    over the backends calls this rather than taking @given itself, since the settings of a @given
    test cannot depend on a parameter."""

    @settings(max_examples=examples if backend == "cpu" else max(1, examples // 4), **settings_kwargs)
    @given(strategy)
    def holds_for(program):
        check(program, backend)

    holds_for()
