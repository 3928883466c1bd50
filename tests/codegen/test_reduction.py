"""The reduction rules of jitnet/codegen/reduction.py on their own: the lines an `Accumulator` writes,
run as plain Python on numpy scalars, against the ops' numpy references. Serially, element after
element (the CPU's loops), and in chunks whose partial states are combined in the orders the kernels
use (the CPU's per-thread chunks, a left fold; CUDA's shared-memory tree, slot hi into slot lo; the
CUDA split's partial results), with NaN, ties, infinities and rows of only -inf.
"""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

from jitnet.backends.cpu.dialect import DIALECT as CPU
from jitnet.backends.cuda.dialect import DIALECT as CUDA
from jitnet.codegen.expr import NameCounter
from jitnet.codegen.reduction import Accumulator, acc_dtype
from jitnet.ir.node import Node
from jitnet.ir.opdefs import OPS

# The generated lines' names, bound to numpy's: vmath's functions and LLVM's fmaximum/fminimum
# (numpy's maximum/minimum: NaN wins) on the CPU; libdevice's math.* (numpy's in the simulator) on CUDA.
VM = types.SimpleNamespace(exp_f32=np.exp, exp_f64=np.exp, log_f32=np.log, log_f64=np.log)
MATH = types.SimpleNamespace(exp=np.exp, log=np.log)  # libdevice returns inf/NaN as numpy does
GLOBALS = {"np": np, "vm": VM, "math": MATH, "fmaximum": np.maximum, "fminimum": np.minimum}
DIALECTS = {"cpu": CPU, "cuda": CUDA}


def reduce_node(op: str, dtype) -> Node:
    """A reduce node over a vector (the rules look only at dtypes)."""
    x = Node("input", (), {"slot": 0}, (8,), np.dtype(dtype))
    out_dtype = OPS[op].dtype([x.dtype], {"axes": (0,), "keepdims": False})
    return Node(op, (x,), {"axes": (0,), "keepdims": False}, (), np.dtype(out_dtype))


class Runner:
    """Runs an accumulator's lines in one namespace per partial state."""

    def __init__(self, op: str, dtype, backend: str):
        self.acc = Accumulator(reduce_node(op, dtype), DIALECTS[backend], NameCounter())

    def run(self, lines: list[str], scope: dict) -> dict:
        with np.errstate(all="ignore"):
            exec("\n".join(lines), GLOBALS, scope)
        return scope

    def maximum(self, x: np.ndarray) -> object:
        """logsumexp's first pass over x."""
        scope = self.run(self.acc.init(), {})
        for v in x:
            scope = self.run(self.acc.update_max("v"), {**scope, "v": v})
        return scope[self.acc.max]

    def partial(self, x: np.ndarray, start: int, shift=None) -> tuple:
        """The state over x, whose first element is element `start` of the row."""
        scope = self.run(self.acc.init(), {})
        if self.acc.shifted:
            scope = self.run(self.acc.shift("shared_max"), {**scope, "shared_max": shift})
        for i, v in enumerate(x):
            scope = self.run(self.acc.update("v", "r"), {**scope, "v": v, "r": start + i})
        return tuple(scope[slot.name] for slot in self.acc.state)

    def combine(self, a: tuple, b: tuple) -> tuple:
        names_a = [f"a{k}" for k in range(len(a))]
        names_b = [f"b{k}" for k in range(len(b))]
        scope = self.run(self.acc.combine(names_a, names_b), dict(zip(names_a, a)) | dict(zip(names_b, b)))
        return tuple(scope[n] for n in names_a)

    def combine_max(self, a, b):
        return self.run(self.acc.combine_max("a", "b"), {"a": a, "b": b})["a"]

    def finalize(self, state: tuple, shift=None):
        name = self.acc.state[self.acc.result].name
        lines, value = self.acc.finalize(name)
        scope = {name: state[self.acc.result], self.acc.max: shift}
        scope = self.run([*lines, f"result = {value}"], scope)
        return scope["result"]

    def shifted_max(self, m):
        """The shift the first pass leaves: the maximum, or 0 where it is not finite."""
        return self.run(self.acc.shift("m_in"), {"m_in": m})[self.acc.max]


def tree(states: list, combine) -> object:
    """CUDA's shared-memory tree: slot tid + s into slot tid, s halving (slots past the end idle)."""
    width = 1
    while width < len(states):
        width *= 2
    slots = list(states) + [None] * (width - len(states))
    s = width // 2
    while s > 0:
        for tid in range(s):
            if slots[tid + s] is not None:
                slots[tid] = slots[tid + s] if slots[tid] is None else combine(slots[tid], slots[tid + s])
        s //= 2
    return slots[0]


def fold(states: list, combine) -> object:
    total = states[0]
    for s in states[1:]:
        total = combine(total, s)
    return total


def reduce_three_ways(op: str, x: np.ndarray, backend: str, chunks: int) -> list:
    """The value serially, and from `chunks` partial states folded (CPU) and tree-combined (CUDA)."""
    r = Runner(op, x.dtype, backend)
    bounds = np.linspace(0, len(x), chunks + 1).astype(int)
    pieces = [(x[lo:hi], lo) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    shift = None
    if r.acc.shifted:  # the first pass's maxima, combined as the states are, then the shift
        maxima = [r.maximum(p) for p, _ in pieces]
        shift = r.shifted_max(tree(maxima, r.combine_max))
        assert shift == r.shifted_max(r.maximum(x))
    serial = r.finalize(r.partial(x, 0, shift), shift)
    states = [r.partial(p, lo, shift) for p, lo in pieces]
    return [serial, r.finalize(fold(states, r.combine), shift), r.finalize(tree(states, r.combine), shift)]


def reference(op: str, x: np.ndarray):
    return OPS[op].ref(x, axes=(0,), keepdims=False)


F = np.float32
ROWS = {
    "random": np.random.default_rng(0).standard_normal(37).astype(F),
    "ties": np.array([1, 3, -2, 3, 0, 3, -5, 1], F),
    "nan": np.array([1, 2, np.nan, 5, np.nan, -1], F),
    "nan_first": np.array([np.nan, 7, 1], F),
    "nan_last": np.array([1, 7, np.nan], F),
    "all_nan": np.full(5, np.nan, F),
    "all_-inf": np.full(6, -np.inf, F),
    "+inf": np.array([1, np.inf, 3, np.inf], F),
    "+inf_and_-inf": np.array([-np.inf, np.inf, 0], F),
    "-inf_and_finite": np.array([-np.inf, -3, -np.inf, -1], F),
    "one": np.array([4.5], F),
}
OPS_BY_DTYPE = {
    "float32": ["sum", "max", "min", "argmax", "logsumexp"],
    "float64": ["sum", "max", "min", "argmax", "logsumexp"],
    "int64": ["sum", "max", "min", "argmax"],
    "int32": ["sum", "max", "min", "argmax"],
    "bool": ["sum", "argmax"],
}


def assert_matches(got, want, op: str, x: np.ndarray) -> None:
    want = np.asarray(want)
    got = np.asarray(got)
    if op == "sum" and x.dtype == np.float32:  # float64 accumulation in another order than numpy's
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-6, atol=1e-6)
        return
    if op == "logsumexp":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
        return
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", list(DIALECTS))
@pytest.mark.parametrize("row", list(ROWS))
@pytest.mark.parametrize("op", OPS_BY_DTYPE["float32"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floats_serial_and_combined(op, row, dtype, backend):
    x = ROWS[row].astype(dtype)
    want = reference(op, x)
    for chunks in (1, 2, 3, 5, len(x)):
        for got in reduce_three_ways(op, x, backend, chunks):
            assert_matches(got, want, op, x)
            assert np.asarray(got).dtype == want.dtype


@pytest.mark.parametrize("backend", list(DIALECTS))
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_ints_and_bool(dtype, backend):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, 23).astype(bool) if dtype == "bool" else rng.integers(-4, 5, 23).astype(dtype)
    for op in OPS_BY_DTYPE[dtype]:
        for chunks in (1, 4, 7):
            for got in reduce_three_ways(op, x, backend, chunks):
                assert_matches(got, reference(op, x), op, x)


def test_extreme_ints_are_identities():
    """max/min of ints start from the dtype's extremes, so a row of them still reduces to them."""
    for dtype in (np.int32, np.int64):
        info = np.iinfo(dtype)
        x = np.array([info.min, info.min], dtype)
        assert reduce_three_ways("max", x, "cpu", 2) == [info.min] * 3
        x = np.array([info.max, info.max], dtype)
        assert reduce_three_ways("min", x, "cuda", 2) == [info.max] * 3


def test_argmax_combine_is_order_free():
    """Merging a later chunk into an earlier one or the other way round gives the first index."""
    r = Runner("argmax", np.float32, "cuda")
    early, late = (np.float32(3), 2), (np.float32(3), 9)
    assert r.combine(early, late)[1] == 2 and r.combine(late, early)[1] == 2
    nan_early, nan_late = (np.float32(np.nan), 4), (np.float32(np.nan), 6)
    assert r.combine(nan_late, nan_early)[1] == 4
    assert r.combine((np.float32(np.inf), 0), nan_late)[1] == 6  # NaN beats everything


def test_float32_sums_accumulate_in_float64():
    """float32 terms add up in float64 and round once: 2**24 + 1 + 1 is exact."""
    x = np.array([2**24, 1, 1], np.float32)
    for got in reduce_three_ways("sum", x, "cpu", 3):
        assert got == np.float32(2**24 + 2)
    assert acc_dtype(reduce_node("sum", np.float32)) == np.float64
    assert acc_dtype(reduce_node("sum", np.bool_)) == np.int64
    assert acc_dtype(reduce_node("max", np.float32)) == np.float32


def test_logsumexp_shift_of_infinite_maxima():
    """`m - m == 0`: a finite maximum shifts, +-inf and NaN shift by 0."""
    r = Runner("logsumexp", np.float32, "cpu")
    assert r.shifted_max(np.float32(2.5)) == np.float32(2.5)
    for m in (np.inf, -np.inf, np.nan):
        assert r.shifted_max(np.float32(m)) == 0


def test_lines_are_spelled_by_the_dialect():
    """The same rule, each backend's spelling: LLVM's fmaximum on the CPU, a select on CUDA."""
    cpu = Runner("max", np.float32, "cpu").acc.update("v", "r")
    cuda = Runner("max", np.float32, "cuda").acc.update("v", "r")
    assert cpu == ["acc1 = fmaximum(acc1, v)"]
    assert cuda == ["acc1 = (acc1 if (acc1 >= v or acc1 != acc1) else v)"]
    lse = Runner("logsumexp", np.float32, "cpu").acc
    assert lse.update("v", "r") == ["acc1 += np.float64(vm.exp_f32(v - m3))"]
    assert lse.update("v", "r", into=("p", np.dtype(np.float32))) == ["p += np.float32(vm.exp_f32(v - m3))"]
