"""Random expression graphs: compiled for each backend (cpu, cuda), they must agree with the numpy
reference interpreter.

The `programs` strategy builds, deterministically from one hypothesis draw, 1-3 input arrays whose
shapes broadcast against each other (size-1 dims, now and then a size-0 dim or 0-d arrays, int32
inputs, NaN and inf) and a program of steps over them: elementwise ops, broadcasting binary ops,
comparisons feeding `where`, reductions, softmax, and views (transpose, reshape, slicing with
negative steps, broadcast_to, expand_dims, pad, concatenate). The builder (graphgen.py, shared with
the gradient test) keeps the program as plain data: `replay` turns it into a traceable Python
function, and a failing example prints as a readable listing. Each property runs on every backend;
cuda checks a quarter as many graphs (graphgen.run_property), all of them tiny (dims of at most 5).
"""

from __future__ import annotations

import numpy as np
import pytest
from graphgen import (
    COMMON_BINARY,
    COMMON_UNARY,
    Choices,
    Ops,
    Program,
    input_arrays,
    replay,
    run_property,
    trace_steps,
)
from helpers import BACKENDS, COMPARISONS, assert_same, check, on_device
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

import jitnet as jn

RTOL, ATOL = 1e-4, 1e-5

# ---- the ops a step can apply ----

OPS = Ops(
    unary={
        **COMMON_UNARY,
        "exp_clipped": lambda x: jn.exp(jn.clip(x, -10.0, 10.0)),
        "log_abs1": lambda x: jn.log(jn.abs(x) + 1),
        "sqrt_abs": lambda x: jn.sqrt(jn.abs(x)),
    },
    binary={**COMMON_BINARY, "div": lambda a, b: a / b},
    compare=COMPARISONS,
    kinds=tuple(
        ["binary"] * 4
        + ["unary"] * 4
        + ["where", "reduce", "reduce", "rowwise"]
        + ["transpose", "reshape", "getitem", "broadcast_to", "expand_dims", "pad", "concatenate"]
    ),
)

# ---- the strategy ----


@st.composite
def programs(draw, min_steps: int = 3, max_steps: int = 12, special: bool | None = None) -> Program:
    """A program, deterministic from the drawn seed. Steps are chosen against traced values, so
    each step fits the shapes the engine computed."""
    r = Choices(draw(st.integers(0, 2**64 - 1)))
    inputs = input_arrays(r, special=special)
    steps, shapes = trace_steps(r, OPS, inputs, r.integer(min_steps, max_steps))
    outputs = (len(shapes) - 1,)
    if r.coin():  # an intermediate (or an input) too: a multi-output program
        outputs = (r.integer(0, len(shapes) - 1),) + outputs
    return Program(OPS, inputs, steps, outputs)


# ---- the properties ----


def check_program(program: Program, backend: str) -> None:
    fn = replay(program)
    got = jn.compile(fn, backend=backend)(*program.inputs)
    want = jn.compile(fn, backend="interpret")(*program.inputs)
    on_device(got, backend)
    assert_same(got, want, rtol=RTOL, atol=ATOL)


# Each distinct graph compiles a few numba kernels, so shrinking a failure (hundreds of graphs)
# would take many minutes: a failing example is reported as drawn, and its listing is the repro.
# Derandomized: the same graphs every run, so a pass or a known failure is stable in CI.
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_graph_matches_interpreter(backend):
    run_property(programs(), check_program, backend, 200, **SETTINGS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_graph_with_nan_and_inf_matches_interpreter(backend):
    run_property(programs(min_steps=1, max_steps=5, special=True), check_program, backend, 80, **SETTINGS)


# ---- regressions: failures the random graphs found, as small fixed cases ----
# (wrap-around view indices rendered without parentheses, the interpreter's empty negative-step
# slices, and logsumexp over infinities)

X2 = np.array([4.0, 2.0], np.float32)


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x: jn.pad(x.reshape(2, 1), ((1, 0), (0, 0))), [[0.0], [4.0], [2.0]]),
        (lambda x: jn.concatenate([jn.expand_dims(x, 1), jn.expand_dims(x, 1) * 2], axis=-1) + x, [[8, 10], [6, 6]]),
    ],
    ids=["pad_after_reshape", "concat_then_broadcast_add"],
)
def test_view_index_wraps_around(fn, expected, backend):
    got = check(fn, X2, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), np.array(expected, np.float32))


@pytest.mark.parametrize("index", [slice(-5, None, -1), slice(-6, -6, -1)])
def test_empty_negative_step_slice(index, backend):
    x = np.arange(3, dtype=np.float32)
    got = check(lambda x: x[index] + 1, x, backend=backend)
    assert np.asarray(got).shape == x[index].shape == (0,)


@pytest.mark.parametrize(
    "row, expected",
    [
        ([np.inf, np.inf], np.inf),
        ([np.inf, 1.0], np.inf),
        ([-np.inf, -np.inf], -np.inf),
        ([-np.inf, 1.0], 1.0),
    ],
)
def test_logsumexp_of_infinities(row, expected, backend):
    x = np.array([row], np.float32)
    got = check(lambda x: jn.logsumexp(x, axis=1), x, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), np.array([expected], np.float32))
