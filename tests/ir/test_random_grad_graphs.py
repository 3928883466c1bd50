"""Random expression graphs, differentiated: the gradient compiled for each backend (cpu, cuda) must
agree with the gradient run by the numpy reference interpreter.

A hypothesis strategy draws one or two float32 inputs whose shapes broadcast together and a short
program of steps over them (elementwise ops with broadcasting, reductions, views, softmax), with
the random graph builder of the value test (graphgen.py). The objective is sum(out * R) for a
random R (passed as an argument), and both backends run
`jn.compile(jn.grad(objective, argnums=...), backend=...)`. Every op keeps to its smooth domain
(logs and square roots see values bounded away from 0, exponentials see clipped inputs), so the
gradients are finite and both backends take the same branch at every kink. cuda checks a quarter
as many graphs (graphgen.run_property).
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
from helpers import BACKENDS, assert_same, check, on_device
from hypothesis import HealthCheck
from hypothesis import strategies as st

import jitnet as jn

RTOL, ATOL = 1e-4, 1e-5

# The ops, each kept to its smooth domain; `where` branches on one strict comparison.
OPS = Ops(
    unary={
        **COMMON_UNARY,
        "exp": lambda x: jn.exp(jn.clip(x, -4.0, 4.0)),
        "log": lambda x: jn.log(jn.abs(x) + 0.5),
        "log_clip": lambda x: jn.log(jn.clip(x, 0.2, None)),
        "sqrt": lambda x: jn.sqrt(jn.square(x) + 0.25),
        "rsqrt": lambda x: jn.rsqrt(jn.abs(x) + 0.5),
        "reciprocal": lambda x: jn.reciprocal(jn.abs(x) + 0.5),
        "acos": lambda x: jn.acos(jn.tanh(x) * 0.9),
        "scale": lambda x: x * 1.5 + 0.25,
    },
    binary={
        **COMMON_BINARY,
        "div": lambda a, b: a / (jn.abs(b) + 0.5),
        "pow": lambda a, b: jn.pow(jn.abs(a) + 0.5, jn.clip(b, -2.0, 2.0)),
    },
    compare={"gt": lambda a, b: a > b},
    kinds=tuple(
        ["unary"] * 3
        + ["binary"] * 3
        + ["where", "reduce", "reduce", "rowwise"]
        + ["transpose", "reshape", "reshape", "getitem", "getitem", "broadcast_to", "pad", "concatenate"]
    ),
    newaxis=True,
)


def objective(program: Program):
    """sum(out * r), with r a runtime argument after the inputs."""
    run = replay(program)

    def fn(*args):
        (out,) = run(*args[:-1])
        return jn.sum(out * args[-1])

    return fn


# ---- the strategy ----
#
# Hypothesis draws the seed, the input rank and count and the number of steps (so a failure
# shrinks to fewer steps); a numpy generator seeded from it makes the many small choices of each
# step (graphgen.Choices).


@st.composite
def programs(draw, min_steps: int, max_steps: int) -> Program:
    r = Choices(draw(st.integers(0, 2**32 - 1)))
    ndim, n_inputs = draw(st.sampled_from([1, 2, 2, 3, 3, 0])), draw(st.integers(1, 2))
    xs = input_arrays(r, ndim, n_inputs, special=False, bound=2.0, ints=False, empty=False)
    steps, shapes = trace_steps(r, OPS, xs, draw(st.integers(min_steps, max_steps)))
    weights = r.rng.standard_normal(shapes[-1]).astype(np.float32)
    return Program(OPS, xs, steps, (len(shapes) - 1,), r=weights)


# ---- the property ----


def check_gradients(program: Program, backend: str) -> None:
    fn = objective(program)
    argnums = tuple(range(len(program.inputs)))
    args = (*program.inputs, program.r)
    got = jn.compile(jn.grad(fn, argnums=argnums), backend=backend)(*args)
    want = jn.compile(jn.grad(fn, argnums=argnums), backend="interpret")(*args)
    on_device(got, backend)
    assert_same(got, want, rtol=RTOL, atol=ATOL)
    for g, x in zip(want, program.inputs):
        assert np.asarray(g).shape == x.shape and np.asarray(g).dtype == np.float32


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_short_random_graph_matches_interpreter(backend):
    run_property(programs(min_steps=1, max_steps=3), check_gradients, backend, 150, **SETTINGS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_random_graph_matches_interpreter(backend):
    run_property(programs(min_steps=3, max_steps=7), check_gradients, backend, 100, **SETTINGS)


def test_gradient_with_zero_size_constant_cotangent_weights(backend):
    """Found by the random graphs when R was a captured constant: an empty slice times an empty R."""
    x = np.ones(1, np.float32)
    g = check(jn.grad(lambda x: jn.sum(x[2:] * np.zeros(0, np.float32))), x, backend=backend)
    np.testing.assert_array_equal(np.asarray(g), [0.0])
