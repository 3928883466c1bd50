"""Random expression graphs, differentiated: the gradient compiled for the CPU must agree with the
gradient run by the numpy reference interpreter.

A hypothesis strategy draws one or two float32 inputs whose shapes broadcast together and a short
program of steps over them (elementwise ops with broadcasting, reductions, views, softmax). The
objective is sum(out * R) for a random R (passed as an argument), and both backends run
`jn.compile(jn.grad(objective, argnums=...), backend=...)`. Every op keeps to its smooth domain
(logs and square roots see values bounded away from 0, exponentials see clipped inputs), so the
gradients are finite and both backends take the same branch at every kink.
"""

from __future__ import annotations

import math

import numpy as np
from helpers import assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitnet as jn
from jitnet.ir.trace import input_tracer, tracing

RTOL, ATOL = 1e-4, 1e-5

UNARY = {
    "neg": lambda x: -x,
    "exp": lambda x: jn.exp(jn.clip(x, -4.0, 4.0)),
    "log": lambda x: jn.log(jn.abs(x) + 0.5),
    "log_clip": lambda x: jn.log(jn.clip(x, 0.2, None)),
    "sqrt": lambda x: jn.sqrt(jn.square(x) + 0.25),
    "rsqrt": lambda x: jn.rsqrt(jn.abs(x) + 0.5),
    "reciprocal": lambda x: jn.reciprocal(jn.abs(x) + 0.5),
    "tanh": jn.tanh,
    "sigmoid": jn.sigmoid,
    "relu": jn.relu,
    "abs": jn.abs,
    "square": jn.square,
    "sin": jn.sin,
    "cos": jn.cos,
    "acos": lambda x: jn.acos(jn.tanh(x) * 0.9),
    "leaky_relu": lambda x: jn.leaky_relu(x, 0.1),
    "elu": lambda x: jn.elu(x, 0.7),
    "scale": lambda x: x * 1.5 + 0.25,
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (jn.abs(b) + 0.5),
    "pow": lambda a, b: jn.pow(jn.abs(a) + 0.5, jn.clip(b, -2.0, 2.0)),
    "maximum": jn.maximum,
    "minimum": jn.minimum,
}

REDUCE = {"sum": jn.sum, "mean": jn.mean, "max": jn.max, "min": jn.min, "logsumexp": jn.logsumexp}
ROWWISE = {"softmax": jn.softmax, "log_softmax": jn.log_softmax}


class Step:
    """One op applied to earlier values (indices into the program's value list)."""

    def __init__(self, op: str, args: tuple[int, ...], params: tuple = ()):
        self.op, self.args, self.params = op, args, params

    def __repr__(self) -> str:
        parts = [f"v{i}" for i in self.args] + [repr(p) for p in self.params]
        return f"{self.op}({', '.join(parts)})"


class Program:
    def __init__(self, inputs: tuple[np.ndarray, ...], steps: tuple[Step, ...], r: np.ndarray):
        self.inputs, self.steps, self.r = inputs, steps, r

    def __repr__(self) -> str:
        lines = [f"v{i} = {x.dtype.name}{list(x.shape)} {x.tolist()}" for i, x in enumerate(self.inputs)]
        n = len(self.inputs)
        lines += [f"v{n + k} = {step!r}" for k, step in enumerate(self.steps)]
        lines.append(f"return sum(v{n + len(self.steps) - 1} * R), R = {self.r.tolist()}")
        return "Program:\n  " + "\n  ".join(lines)


def apply_step(step: Step, values: list):
    op, p = step.op, step.params
    x = [values[i] for i in step.args]
    if op in UNARY:
        return UNARY[op](x[0])
    if op in BINARY:
        return BINARY[op](x[0], x[1])
    if op == "where":
        return jn.where(x[0] > x[1], x[2], x[3])
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
    if op == "pad":
        return jn.pad(x[0], p[0], value=p[1])
    if op == "concatenate":
        return jn.concatenate([x[0], x[1]], axis=p[0])
    raise AssertionError(f"unknown step {op}")


def objective(program: Program):
    """sum(out * r), with r a runtime argument after the inputs."""

    def fn(*args):
        values, r = list(args[:-1]), args[-1]
        for step in program.steps:
            values.append(apply_step(step, values))
        return jn.sum(values[-1] * r)

    return fn


# ---- strategies ----
#
# Hypothesis draws the seed, the input ranks and the number of steps; a numpy generator seeded
# from it makes the many small choices of each step. (Drawn one by one from hypothesis, those
# choices lean heavily on the first option of each list, and most programs came out as chains of
# `abs`; a seeded generator spreads them evenly over the ops, shapes and indices.)


class Choices:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)


def _broadcasts(*shapes) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _pick(c: Choices, candidates: list[int]) -> int:
    """Prefer the newest value, so steps chain rather than all reading the inputs."""
    return candidates[-1] if c.coin() else c.pick(candidates)


def _reshape_target(c: Choices, shape: tuple) -> tuple:
    kind = c.pick(["merge", "split", "ones", "flatten"])
    shape = list(shape)
    if kind == "merge" and len(shape) >= 2:
        i = c.int(0, len(shape) - 2)
        return tuple(shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :])
    if kind == "split" and shape and 0 not in shape:
        i = c.int(0, len(shape) - 1)
        f = c.pick([f for f in range(1, shape[i] + 1) if shape[i] % f == 0])
        return tuple(shape[:i] + [f, shape[i] // f] + shape[i + 1 :])
    if kind == "ones":
        dims = [d for d in shape if d != 1]
        dims.insert(c.int(0, len(dims)), 1)
        return tuple(dims)
    return (math.prod(shape),)


def _index(c: Choices, shape: tuple) -> tuple:
    index = []
    for n in shape:
        if n and c.coin(1 / 6):
            index.append(c.int(-n, n - 1))
            continue
        bounds = [c.pick([None, c.int(-n - 1, n + 1)]) for _ in range(2)]
        index.append(slice(*bounds, c.pick([None, 1, 2, 3, -1, -2])))
    if c.coin(0.2):
        index.insert(c.int(0, len(index)), None)
    return tuple(index)


def _step(c: Choices, values: list) -> Step:
    """One random step that fits the (traced) shapes of the values so far."""
    shapes = [v.shape for v in values]
    i = _pick(c, list(range(len(values))))
    shape, ndim = shapes[i], len(shapes[i])
    kind = c.pick(KINDS)
    if kind == "unary":
        return Step(c.pick(sorted(UNARY)), (i,))
    if kind == "binary":
        j = _pick(c, [j for j, s in enumerate(shapes) if _broadcasts(shape, s)])
        a, b = (i, j) if c.coin() else (j, i)
        return Step(c.pick(sorted(BINARY)), (a, b))
    if kind == "where":
        operands = [i]
        for _ in range(3):
            chosen = [shapes[k] for k in operands]
            operands.append(_pick(c, [k for k, s in enumerate(shapes) if _broadcasts(*chosen, s)]))
        return Step("where", tuple(operands))
    if kind == "reduce":
        op = c.pick(sorted(REDUCE))
        axis = None if c.coin(0.25) else tuple(a - ndim if c.coin() else a for a in range(ndim) if c.coin())
        axes = range(ndim) if axis is None else axis
        if op in ("max", "min") and any(shape[a] == 0 for a in axes):
            op = "sum"  # max/min of nothing has no identity
        return Step(op, (i,), (axis, c.coin()))
    if kind == "rowwise" and ndim and 0 not in shape:
        return Step(c.pick(sorted(ROWWISE)), (i,), (c.int(-ndim, ndim - 1),))
    if kind == "transpose" and ndim >= 2:
        return Step("transpose", (i,), (tuple(int(a) for a in c.rng.permutation(ndim)),))
    if kind == "reshape":
        return Step("reshape", (i,), (_reshape_target(c, shape),))
    if kind == "getitem" and ndim:
        return Step("getitem", (i,), (_index(c, shape),))
    if kind == "broadcast_to":
        lead = (c.int(1, 3),) if ndim < 3 and c.coin() else ()
        return Step("broadcast_to", (i,), (lead + tuple(c.int(1, 3) if n == 1 else n for n in shape),))
    if kind == "pad" and ndim:
        widths = tuple((c.int(0, 2), c.int(0, 2)) for _ in shape)
        return Step("pad", (i,), (widths, c.pick([0.0, 1.5])))
    if kind == "concatenate" and ndim:
        axis = c.int(-ndim, ndim - 1)
        fits = [
            j
            for j, s in enumerate(shapes)
            if len(s) == ndim and all(a == b for d, (a, b) in enumerate(zip(s, shape)) if d != axis % ndim)
        ]
        return Step("concatenate", (i, _pick(c, fits)), (axis,))
    return Step(c.pick(sorted(UNARY)), (i,))  # the drawn kind does not apply to this value


KINDS = (
    ["unary"] * 3
    + ["binary"] * 3
    + ["where", "reduce", "reduce", "rowwise"]
    + ["transpose", "reshape", "reshape", "getitem", "getitem", "broadcast_to", "pad", "concatenate"]
)


def _inputs(c: Choices, ndim: int, n_inputs: int) -> tuple[np.ndarray, ...]:
    """float32 arrays whose shapes broadcast together: suffixes of one base shape with some dims
    set to 1."""
    base = [c.int(1, 5) for _ in range(ndim)]
    arrays = []
    for _ in range(n_inputs):
        shape = tuple(1 if c.coin(0.25) else d for d in base[c.int(0, ndim) if arrays else 0 :])
        arrays.append(c.rng.uniform(-2, 2, size=shape).astype(np.float32))
    return tuple(arrays)


@st.composite
def programs(draw, min_steps: int, max_steps: int) -> Program:
    c = Choices(draw(st.integers(0, 2**32 - 1)))
    xs = _inputs(c, draw(st.sampled_from([1, 2, 2, 3, 3, 0])), draw(st.integers(1, 2)))
    steps = []
    with tracing():
        values = [input_tracer(k, x.shape, x.dtype) for k, x in enumerate(xs)]
        for _ in range(draw(st.integers(min_steps, max_steps))):
            step = _step(c, values)
            steps.append(step)
            values.append(apply_step(step, values))
        out_shape = values[-1].shape
    return Program(xs, tuple(steps), c.rng.standard_normal(out_shape).astype(np.float32))


# ---- the property ----


def check_gradients(program: Program) -> None:
    fn = objective(program)
    argnums = tuple(range(len(program.inputs)))
    args = (*program.inputs, program.r)
    got = jn.compile(jn.grad(fn, argnums=argnums), backend="cpu")(*args)
    want = jn.compile(jn.grad(fn, argnums=argnums), backend="interpret")(*args)
    assert_same(got, want, rtol=RTOL, atol=ATOL)
    for g, x in zip(want, program.inputs):
        assert np.asarray(g).shape == x.shape and np.asarray(g).dtype == np.float32


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=150, **SETTINGS)
@given(programs(min_steps=1, max_steps=3))
def test_gradient_of_short_random_graph_matches_interpreter(program):
    check_gradients(program)


@settings(max_examples=100, **SETTINGS)
@given(programs(min_steps=3, max_steps=7))
def test_gradient_of_random_graph_matches_interpreter(program):
    check_gradients(program)


def test_gradient_with_zero_size_constant_cotangent_weights():
    """Found by the random graphs when R was a captured constant: an empty slice times an empty R."""
    x = np.ones(1, np.float32)
    g = jn.grad(lambda x: jn.sum(x[2:] * np.zeros(0, np.float32)))(x)
    np.testing.assert_array_equal(np.asarray(g), [0.0])
