"""Random expression graphs: compiled for the CPU, they must agree with the numpy reference interpreter.

A hypothesis strategy draws a few input arrays whose shapes broadcast against each other and a
program of steps over them. Each step reads earlier values (by index) and appends one new value, so
the program is plain data: `replay` turns it into a traceable Python function, and a failing
example prints as a readable listing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitnet as jn
from helpers import assert_same
from jitnet.ir.trace import input_tracer, tracing

RTOL, ATOL = 1e-4, 1e-5

# ---- the ops a step can apply ----

UNARY = {
    "neg": lambda x: -x,
    "exp_clipped": lambda x: jn.exp(jn.clip(x, -10.0, 10.0)),
    "log_abs1": lambda x: jn.log(jn.abs(x) + 1),
    "sqrt_abs": lambda x: jn.sqrt(jn.abs(x)),
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

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": jn.maximum,
    "minimum": jn.minimum,
}

COMPARE = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}

REDUCE = {"sum": jn.sum, "mean": jn.mean, "max": jn.max, "min": jn.min, "logsumexp": jn.logsumexp}
ROWWISE = {"softmax": jn.softmax, "log_softmax": jn.log_softmax}

# ---- programs ----


class Step:
    """One op applied to earlier values (indices into the program's value list)."""

    def __init__(self, op: str, args: tuple[int, ...], params: tuple = ()):
        self.op, self.args, self.params = op, args, params

    def __repr__(self) -> str:
        parts = [f"v{i}" for i in self.args] + [repr(p) for p in self.params]
        return f"{self.op}({', '.join(parts)})"


class Program:
    """Inputs, steps (each appends one value) and the indices of the values returned."""

    def __init__(self, inputs: tuple[np.ndarray, ...], steps: tuple[Step, ...], outputs: tuple[int, ...]):
        self.inputs, self.steps, self.outputs = inputs, steps, outputs

    def __repr__(self) -> str:
        lines = [f"v{i} = {x.dtype.name}{list(x.shape)} {x.tolist()}" for i, x in enumerate(self.inputs)]
        n = len(self.inputs)
        lines += [f"v{n + k} = {step!r}" for k, step in enumerate(self.steps)]
        lines.append("return " + ", ".join(f"v{i}" for i in self.outputs))
        return "Program:\n  " + "\n  ".join(lines)


def apply_step(step: Step, values: list):
    op, p = step.op, step.params
    x = [values[i] for i in step.args]
    if op in UNARY:
        return UNARY[op](x[0])
    if op in BINARY:
        return BINARY[op](x[0], x[1])
    if op == "where":
        cmp = COMPARE[p[0]]
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
            values.append(apply_step(step, values))
        return tuple(values[i] for i in program.outputs)

    return fn


# ---- strategies ----


@st.composite
def input_arrays(draw) -> tuple[np.ndarray, ...]:
    """1-3 arrays whose shapes broadcast together: suffixes of one base shape, some dims set to 1."""
    ndim = draw(st.integers(0, 3))
    base = [draw(st.sampled_from([1, 2, 3, 4, 5])) for _ in range(ndim)]
    if ndim and draw(st.integers(0, 9)) == 0:
        base[draw(st.integers(0, ndim - 1))] = 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    special = draw(st.integers(0, 4)) == 0  # sprinkle NaN and inf
    arrays = []
    for _ in range(draw(st.integers(1, 3))):
        drop = draw(st.integers(0, ndim))
        shape = tuple(1 if draw(st.integers(0, 3)) == 0 else d for d in base[drop:])
        if draw(st.integers(0, 5)) == 0:
            x = rng.integers(-5, 6, size=shape).astype(np.int32)
        else:
            x = rng.uniform(-3, 3, size=shape).astype(np.float32)
            if special and x.size:
                mask = rng.random(shape) < 0.2
                x[mask] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=int(mask.sum()))
        arrays.append(x)
    return tuple(arrays)


def _broadcasts(*shapes) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _pick(draw, candidates: list[int]) -> int:
    """Prefer the newest values, so steps chain rather than all reading the inputs."""
    if draw(st.booleans()):
        return candidates[-1]
    return draw(st.sampled_from(candidates))


def _axes_subset(draw, ndim: int):
    if draw(st.integers(0, 4)) == 0:
        return None
    axes = [a for a in range(ndim) if draw(st.booleans())]
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _reshape_target(draw, shape: tuple) -> tuple:
    """Merge two adjacent dims, split one into two factors, add or drop 1s, or flatten."""
    kind = draw(st.sampled_from(["merge", "split", "ones", "flatten", "minus_one"]))
    shape = list(shape)
    if kind == "merge" and len(shape) >= 2:
        i = draw(st.integers(0, len(shape) - 2))
        return tuple(shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :])
    if kind == "split" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        factors = [f for f in range(1, shape[i] + 1) if shape[i] % f == 0] or [1]
        f = draw(st.sampled_from(factors))
        return tuple(shape[:i] + [f, shape[i] // f if f else 0] + shape[i + 1 :])
    if kind == "ones":
        dims = [d for d in shape if d != 1]
        for _ in range(draw(st.integers(0, 2))):
            dims.insert(draw(st.integers(0, len(dims))), 1)
        return tuple(dims)
    if kind == "minus_one" and 0 not in shape and shape:
        i = draw(st.integers(0, len(shape) - 1))
        return tuple(-1 if d == i else n for d, n in enumerate(shape))
    return (math.prod(shape),)


def _index(draw, shape: tuple) -> tuple:
    index = []
    for n in shape:
        if n and draw(st.integers(0, 5)) == 0:
            index.append(draw(st.integers(-n, n - 1)))
            continue
        bound = st.none() | st.integers(-n - 2, n + 2)
        step = draw(st.sampled_from([None, 1, 2, 3, -1, -2]))
        index.append(slice(draw(bound), draw(bound), step))
    return tuple(index)


def _broadcast_target(draw, shape: tuple) -> tuple:
    lead = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2 if len(shape) < 3 else 1))))
    return lead + tuple(draw(st.integers(1, 3)) if n == 1 else n for n in shape)


def _step(draw, values: list) -> Step:
    """One random step over the (traced) values so far; their shapes decide what applies."""
    shapes = [v.shape for v in values]
    i = _pick(draw, list(range(len(values))))
    shape = shapes[i]
    ndim = len(shape)
    kind = draw(st.sampled_from(KINDS))
    if kind == "unary":
        return Step(draw(st.sampled_from(sorted(UNARY))), (i,))
    if kind == "binary":
        j = _pick(draw, [j for j, s in enumerate(shapes) if _broadcasts(shape, s)])
        a, b = (i, j) if draw(st.booleans()) else (j, i)
        return Step(draw(st.sampled_from(sorted(BINARY))), (a, b))
    if kind == "where":
        operands = [i]
        for _ in range(3):
            chosen = [shapes[k] for k in operands]
            operands.append(_pick(draw, [k for k, s in enumerate(shapes) if _broadcasts(*chosen, s)]))
        return Step("where", tuple(operands), (draw(st.sampled_from(sorted(COMPARE))),))
    if kind == "reduce":
        op = draw(st.sampled_from(sorted(REDUCE)))
        axis = _axes_subset(draw, ndim)
        axes = range(ndim) if axis is None else [a % ndim for a in axis]
        if op in ("max", "min", "logsumexp") and any(shape[a] == 0 for a in axes):
            op = "sum"  # max/min of nothing has no identity
        return Step(op, (i,), (axis, draw(st.booleans())))
    if kind == "rowwise" and ndim and 0 not in shape:
        return Step(draw(st.sampled_from(sorted(ROWWISE))), (i,), (draw(st.integers(-ndim, ndim - 1)),))
    if kind == "transpose":
        return Step("transpose", (i,), (tuple(draw(st.permutations(range(ndim)))),))
    if kind == "reshape":
        return Step("reshape", (i,), (_reshape_target(draw, shape),))
    if kind == "getitem":
        return Step("getitem", (i,), (_index(draw, shape),))
    if kind == "broadcast_to":
        return Step("broadcast_to", (i,), (_broadcast_target(draw, shape),))
    if kind == "expand_dims":
        return Step("expand_dims", (i,), (draw(st.integers(-ndim - 1, ndim)),))
    if kind == "pad" and ndim:
        widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
        return Step("pad", (i,), (widths, draw(st.sampled_from([0.0, 1.5, -2.0]))))
    if kind == "concatenate" and ndim:
        axis = draw(st.integers(-ndim, ndim - 1))
        fits = [
            j
            for j, s in enumerate(shapes)
            if len(s) == ndim and all(a == b for d, (a, b) in enumerate(zip(s, shape)) if d != axis % ndim)
        ]
        return Step("concatenate", (i, _pick(draw, fits)), (axis,))
    return Step("neg", (i,))  # the drawn kind does not apply to this value


KINDS = (
    ["unary"] * 4
    + ["binary"] * 4
    + ["where", "reduce", "reduce", "rowwise"]
    + ["transpose", "reshape", "getitem", "broadcast_to", "expand_dims", "pad", "concatenate"]
)


@st.composite
def programs(draw, min_steps: int = 3, max_steps: int = 12) -> Program:
    """Steps are drawn against traced values, so each step fits the shapes the engine computed."""
    inputs = draw(input_arrays())
    steps = []
    with tracing():
        values = [input_tracer(k, x.shape, x.dtype) for k, x in enumerate(inputs)]
        for _ in range(draw(st.integers(min_steps, max_steps))):
            step = _step(draw, values)
            steps.append(step)
            values.append(apply_step(step, values))
    outputs = (len(values) - 1,)
    if draw(st.booleans()):  # an intermediate (or an input) too: a multi-output program
        outputs = (draw(st.integers(0, len(values) - 1)),) + outputs
    return Program(inputs, tuple(steps), outputs)


# ---- the properties ----


def check_program(program: Program) -> None:
    fn = replay(program)
    got = jn.compile(fn, backend="cpu")(*program.inputs)
    want = jn.compile(fn, backend="interpret")(*program.inputs)
    assert_same(got, want, rtol=RTOL, atol=ATOL)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=110, **SETTINGS)
@given(programs())
def test_random_graph_matches_interpreter(program):
    check_program(program)


@settings(max_examples=50, **SETTINGS)
@given(programs(min_steps=1, max_steps=4))
def test_short_random_graph_matches_interpreter(program):
    check_program(program)
