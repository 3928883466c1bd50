"""Random expression graphs: compiled for the CPU, they must agree with the numpy reference interpreter.

A hypothesis strategy draws a few input arrays whose shapes broadcast against each other and a
program of steps over them. Each step reads earlier values (by index) and appends one new value, so
the program is plain data: `replay` turns it into a traceable Python function, and a failing
example prints as a readable listing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitnet as jn
from helpers import assert_same

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
KEEPS_DTYPE = {"neg", "relu", "abs", "square"}  # the others compute in a float dtype

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

F32, I32 = np.dtype(np.float32), np.dtype(np.int32)


def to_float(dt: np.dtype) -> np.dtype:
    return dt if dt.kind == "f" else F32


# ---- programs ----


@dataclass(frozen=True)
class Step:
    op: str  # a key of one of the op tables, or a view / structural op
    args: tuple[int, ...]  # indices of earlier values
    params: tuple = ()

    def __repr__(self) -> str:
        args = ", ".join(f"v{i}" for i in self.args)
        params = ", ".join(repr(p) for p in self.params)
        return f"{self.op}({args}{', ' if args and params else ''}{params})"


@dataclass(frozen=True)
class Program:
    inputs: tuple[np.ndarray, ...]
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]

    def __repr__(self) -> str:
        lines = [f"v{i} = input {x.dtype.name}{list(x.shape)}" for i, x in enumerate(self.inputs)]
        n = len(self.inputs)
        lines += [f"v{n + k} = {step!r}" for k, step in enumerate(self.steps)]
        lines.append("return " + ", ".join(f"v{i}" for i in self.outputs))
        return "Program(\n  " + "\n  ".join(lines) + "\n)"


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


def _promote(*dts) -> np.dtype:
    return np.result_type(*dts)


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


def _step(draw, specs: list[tuple[tuple, np.dtype]]) -> tuple[Step, tuple, np.dtype]:
    """One random step over the values so far: the step and its result's shape and dtype."""
    i = _pick(draw, list(range(len(specs))))
    shape, dt = specs[i]
    ndim = len(shape)
    kind = draw(
        st.sampled_from(
            ["unary"] * 4 + ["binary"] * 4 + ["where", "reduce", "reduce", "rowwise"]
            + ["transpose", "reshape", "getitem", "broadcast_to", "expand_dims", "pad", "concatenate"]
        )
    )
    if kind == "unary":
        op = draw(st.sampled_from(sorted(UNARY)))
        return Step(op, (i,)), shape, dt if op in KEEPS_DTYPE else to_float(dt)
    if kind == "binary":
        j = _pick(draw, [j for j, (s, _) in enumerate(specs) if _broadcasts(shape, s)])
        op = draw(st.sampled_from(sorted(BINARY)))
        out_dt = _promote(dt, specs[j][1])
        if op == "div":
            out_dt = to_float(out_dt)
        a, b = (i, j) if draw(st.booleans()) else (j, i)
        return Step(op, (a, b)), tuple(np.broadcast_shapes(shape, specs[j][0])), out_dt
    if kind == "where":
        operands = [i]
        for _ in range(3):
            shapes = [specs[k][0] for k in operands]
            operands.append(_pick(draw, [k for k, (s, _) in enumerate(specs) if _broadcasts(*shapes, s)]))
        cmp = draw(st.sampled_from(sorted(COMPARE)))
        out_shape = tuple(np.broadcast_shapes(*(specs[k][0] for k in operands)))
        return Step("where", tuple(operands), (cmp,)), out_shape, _promote(specs[operands[2]][1], specs[operands[3]][1])
    if kind == "reduce":
        op = draw(st.sampled_from(sorted(REDUCE)))
        axis = _axes_subset(draw, ndim)
        keepdims = draw(st.booleans())
        axes = range(ndim) if axis is None else [a % ndim for a in axis]
        if op in ("max", "min", "logsumexp") and any(shape[a] == 0 for a in axes):
            op = "sum"  # max/min of nothing has no identity
        out_shape = tuple(1 if d in axes else n for d, n in enumerate(shape) if keepdims or d not in axes)
        out_dt = {"sum": np.dtype(np.int64) if dt.kind == "i" else dt, "max": dt, "min": dt}.get(op, to_float(dt))
        return Step(op, (i,), (axis, keepdims)), out_shape, out_dt
    if kind == "rowwise" and ndim and 0 not in shape:
        op = draw(st.sampled_from(sorted(ROWWISE)))
        return Step(op, (i,), (draw(st.integers(-ndim, ndim - 1)),)), shape, to_float(dt)
    if kind == "transpose":
        perm = tuple(draw(st.permutations(range(ndim))))
        return Step("transpose", (i,), (perm,)), tuple(shape[a] for a in perm), dt
    if kind == "reshape":
        target = _reshape_target(draw, shape)
        out_shape = tuple(math.prod(shape) // math.prod(t for t in target if t != -1) if t == -1 else t for t in target)
        return Step("reshape", (i,), (target,)), out_shape, dt
    if kind == "getitem":
        index = _index(draw, shape)
        out_shape = np.empty(shape)[index].shape
        return Step("getitem", (i,), (index,)), out_shape, dt
    if kind == "broadcast_to":
        target = _broadcast_target(draw, shape)
        return Step("broadcast_to", (i,), (target,)), target, dt
    if kind == "expand_dims":
        axis = draw(st.integers(-ndim - 1, ndim))
        return Step("expand_dims", (i,), (axis,)), np.expand_dims(np.empty(shape), axis).shape, dt
    if kind == "pad":
        widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
        value = draw(st.sampled_from([0.0, 1.5, -2.0]))
        return Step("pad", (i,), (widths, value)), np.pad(np.empty(shape), widths).shape, dt
    if kind == "concatenate" and ndim:
        axis = draw(st.integers(-ndim, ndim - 1))
        fits = [
            j
            for j, (s, _) in enumerate(specs)
            if len(s) == ndim and all(a == b for d, (a, b) in enumerate(zip(s, shape)) if d != axis % ndim)
        ]
        j = _pick(draw, fits)
        out_shape = np.concatenate([np.empty(shape), np.empty(specs[j][0])], axis=axis).shape
        return Step("concatenate", (i, j), (axis,)), out_shape, _promote(dt, specs[j][1])
    return Step("neg", (i,)), shape, dt  # the drawn kind does not apply to this value


@st.composite
def programs(draw, min_steps: int = 3, max_steps: int = 12) -> Program:
    inputs = draw(input_arrays())
    specs = [(x.shape, x.dtype) for x in inputs]
    steps = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        step, shape, dt = _step(draw, specs)
        steps.append(step)
        specs.append((tuple(shape), dt))
    outputs = (len(specs) - 1,)
    if draw(st.booleans()):  # an intermediate (or an input) too: a multi-output program
        outputs = (draw(st.integers(0, len(specs) - 1)),) + outputs
    program = Program(inputs, tuple(steps), outputs)
    expected = tuple(specs[i] for i in outputs)
    return program, expected


# ---- the properties ----


def run_both(program: Program):
    fn = replay(program)
    got = jn.compile(fn, backend="cpu")(*program.inputs)
    want = jn.compile(fn, backend="interpret")(*program.inputs)
    return got, want


def check_program(program: Program, expected_specs) -> None:
    got, want = run_both(program)
    assert [(np.asarray(w).shape, np.asarray(w).dtype) for w in want] == list(expected_specs)
    assert_same(got, want, rtol=RTOL, atol=ATOL)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=110, **SETTINGS)
@given(programs())
def test_random_graph_matches_interpreter(drawn):
    program, expected_specs = drawn
    check_program(program, expected_specs)


@settings(max_examples=50, **SETTINGS)
@given(programs(min_steps=1, max_steps=4))
def test_short_random_graph_matches_interpreter(drawn):
    program, expected_specs = drawn
    check_program(program, expected_specs)


def test_replay_is_deterministic():
    """The same program replayed twice traces to the same IR (the graph depends on the draw only)."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    program = Program((x,), (Step("exp_clipped", (0,)), Step("sum", (1,), ((1,), True)), Step("sub", (1, 2))), (3,))
    first = jn.compile(replay(program), backend="interpret").lower(x)
    second = jn.compile(replay(program), backend="interpret").lower(x)
    assert str(first.graph) == str(second.graph)
