"""Graph simplification: constant folding, algebraic rewrites, CSE and DCE, seen in lowered graphs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import jitnet as jn
from jitnet.ir.passes import FOLD_LIMIT

X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
X3 = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
C = np.arange(12, dtype=np.float32).reshape(3, 4)


def lowered(fn, *args):
    return jn.compile(fn, backend="interpret").lower(*args).graph


def op_counts(fn, *args) -> Counter:
    return Counter(node.op for node in lowered(fn, *args).nodes())


def run(fn, *args):
    return np.asarray(jn.compile(fn, backend="interpret")(*args))


# ---- constant folding ----


def test_scalar_constant_subexpression_is_one_const():
    def fn(x):
        return x + (jn.exp(np.float32(2)) * np.float32(3) + np.float32(1))

    ops = op_counts(fn, X)
    assert ops["const"] == 1
    assert ops["exp"] == 0 and ops["mul"] == 0 and ops["add"] == 1
    (const,) = [n for n in lowered(fn, X).nodes() if n.op == "const"]
    np.testing.assert_allclose(const.attrs["value"].value.reshape(()), np.exp(np.float32(2)) * 3 + 1, rtol=1e-6)
    np.testing.assert_allclose(run(fn, X), X + (np.exp(np.float32(2)) * 3 + 1), rtol=1e-6)


def test_array_constant_subexpression_is_one_const():
    def fn(x):
        return x * (jn.sqrt(C) + jn.transpose(C.T) - C)

    ops = op_counts(fn, X)
    assert ops["const"] == 1
    assert ops["sqrt"] == ops["permute"] == ops["sub"] == 0
    assert ops["mul"] == 1
    np.testing.assert_allclose(run(fn, X), X * np.sqrt(C), rtol=1e-6)


def test_constant_array_times_scalar_is_one_const():
    ops = op_counts(lambda x: x + jn.sqrt(C) * 2, X)
    assert ops["const"] == 1 and ops["mul"] == 0


def test_views_of_constants_are_not_folded_into_big_buffers():
    big = (256, 256)
    assert big[0] * big[1] > FOLD_LIMIT

    def fn(x):
        return jn.ones(big) * 2 + jn.zeros(big) + x

    g = lowered(fn, np.float32(1))
    assert all(n.size <= FOLD_LIMIT for n in g.nodes() if n.op == "const")
    assert any(n.op == "expand" for n in g.nodes())
    np.testing.assert_array_equal(run(fn, np.float32(1)), np.full(big, 3, np.float32))


def test_large_constant_computation_is_not_folded():
    big = np.ones((80, 80), np.float32)
    assert big.size > FOLD_LIMIT
    ops = op_counts(lambda x: jn.exp(big) + x, np.float32(0))
    assert ops["exp"] == 1


def test_folding_keeps_dtype():
    g = lowered(lambda x: x + (np.int32(3) * np.int32(4)), np.ones(3, np.int32))
    (const,) = [n for n in g.nodes() if n.op == "const"]
    assert const.dtype == np.int32 and const.attrs["value"].value.reshape(()) == 12


# ---- algebraic rewrites ----


@pytest.mark.parametrize(
    "power, ops, absent",
    [
        (2, {"square": 1}, ["pow", "mul"]),
        (2.0, {"square": 1}, ["pow"]),
        (3, {"square": 1, "mul": 1}, ["pow"]),
        (-1, {"reciprocal": 1}, ["pow"]),
        (1, {}, ["pow", "square", "mul"]),
        (0.5, {"pow": 1}, ["square"]),
    ],
)
def test_pow_by_constant(power, ops, absent):
    fn = lambda x: x**power + 1
    counts = op_counts(fn, X)
    for op, n in ops.items():
        assert counts[op] == n, counts
    for op in absent:
        assert counts[op] == 0, counts
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(run(fn, X), X.astype(np.float64) ** power + 1, rtol=1e-5, equal_nan=True)


def test_reshape_of_reshape_collapses():
    g = lowered(lambda x: jn.exp(x.reshape(2, 6).reshape(4, 3).reshape(12, 1)), X)
    assert [n.op for n in g.nodes()] == ["input", "reshape", "exp"]
    assert g.nodes()[1].shape == (12, 1)


def test_reshape_back_to_the_input_shape_vanishes():
    assert [n.op for n in lowered(lambda x: jn.exp(x.reshape(12).reshape(3, 4)), X).nodes()] == ["input", "exp"]


def test_permute_of_permute_composes():
    def fn(x):
        return jn.transpose(jn.transpose(x, (1, 2, 0)), (1, 2, 0)) + 1

    g = lowered(fn, X3)
    (permute,) = [n for n in g.nodes() if n.op == "permute"]
    assert permute.inputs[0].op == "input"
    np.testing.assert_array_equal(run(fn, X3), X3.transpose(1, 2, 0).transpose(1, 2, 0) + 1)


def test_transpose_twice_is_identity():
    assert op_counts(lambda x: x.T.T + 1, X)["permute"] == 0


def test_cast_to_own_dtype_vanishes():
    assert op_counts(lambda x: x.astype("float32") + x.astype(np.float32), X)["cast"] == 0


def test_multiply_by_one_and_double_negation_vanish():
    counts = op_counts(lambda x: (x * 1.0) + (1 * jn.neg(-x)), X)
    assert counts["mul"] == 0 and counts["neg"] == 0
    np.testing.assert_array_equal(run(lambda x: (x * 1.0) + (1 * jn.neg(-x)), X), X + X)


def test_autodiff_tags_are_removed():
    counts = op_counts(jn.grad(lambda x: jn.sum(jn.exp(x) * x)), X)
    assert counts["tag"] == 0
    assert counts["exp"] == 1


# ---- common subexpressions and dead code ----


def test_same_expression_twice_is_one_node():
    counts = op_counts(lambda x: jn.exp(x * 2) + jn.exp(x * 2), X)
    assert counts["exp"] == 1 and counts["mul"] == 1 and counts["add"] == 1


def test_same_reduction_twice_is_one_node():
    counts = op_counts(lambda x: (x.sum(1) * x.sum(1), jn.softmax(x) - jn.softmax(x)), X)
    assert counts["sum"] == 1 and counts["softmax"] == 1


def test_cse_across_outputs():
    g = lowered(lambda x: (jn.tanh(x) + 1, jn.tanh(x) + 1), X)
    assert g.outputs[0] is g.outputs[1]
    assert Counter(n.op for n in g.nodes())["tanh"] == 1


def test_different_expressions_stay_apart():
    counts = op_counts(lambda x: jn.exp(x * 2) + jn.exp(x * 3), X)
    assert counts["exp"] == 2


def test_unused_computations_are_absent():
    def fn(x, y):
        unused = jn.exp(x) @ y.T
        jn.softmax(unused)
        return x + 1

    counts = op_counts(fn, X, X)
    assert counts["exp"] == counts["matmul"] == counts["softmax"] == 0
    assert counts["add"] == 1


def test_unused_argument_is_still_an_input():
    g = lowered(lambda x, y: x * 2, X, X3)
    assert len(g.inputs) == 2
    assert all(n.op != "input" or n.shape == X.shape for n in g.nodes())


# ---- rewrites of a node whose input has no other reader ----


def test_transpose_of_a_product_is_the_product_of_transposes():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    graph = jn.compile(lambda a, b: (a @ b).T).lower(a, b).graph
    (mm,) = [n for n in graph.nodes() if n.op == "matmul"]
    assert graph.outputs[0] is mm and mm.shape == (5, 3)
    # a product read elsewhere too is not computed twice
    graph = jn.compile(lambda a, b: ((a @ b).T, a @ b)).lower(a, b).graph
    assert [n.op for n in graph.nodes()].count("matmul") == 1


def test_reshaped_keepdims_reduction_drops_its_kept_axes():
    x = np.ones((3, 4), np.float32)
    graph = jn.compile(lambda x: x.sum(0, keepdims=True).reshape(4)).lower(x).graph
    assert graph.outputs[0].op == "sum" and graph.outputs[0].attrs["keepdims"] is False


# ---- gradients of slices that tile an array ----


def test_gradient_of_tiling_slices_is_a_concatenation():
    """Slices of columns [0, 4), [4, 8), [8, 12) (q, k and v of one product): their gradient,
    pad(dq) + pad(dk) + pad(dv), becomes one concat; the values are the analytic gradient."""
    x = np.random.default_rng(2).standard_normal((6, 12)).astype(np.float32)

    def f(x):
        q, k, v = x[:, :4], x[:, 4:8], x[:, 8:]
        return jn.sum(jn.sin(q) * jn.cos(k) * v)

    ops = op_counts(jn.grad(f), x)
    assert ops["concat"] == 1 and ops["pad"] == 0 and ops["add"] == 0
    q, k, v = x[:, :4], x[:, 4:8], x[:, 8:]
    want = np.concatenate([np.cos(q) * np.cos(k) * v, -np.sin(q) * np.sin(k) * v, np.sin(q) * np.cos(k)], axis=1)
    for backend in ("interpret", "cpu"):
        got = np.asarray(jn.compile(jn.grad(f), backend=backend)(x))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_padded_gradients_with_a_gap_or_an_overlap_stay_sums():
    """Columns [0, 4) and [6, 12) leave a gap, [0, 6) and [4, 12) overlap: both stay pad + pad;
    [2, 5) and [5, 9) become one concat padded on both sides."""
    x = np.random.default_rng(3).standard_normal((3, 12)).astype(np.float32)
    gap = op_counts(jn.grad(lambda x: jn.sum(jn.sin(x[:, :4])) + jn.sum(jn.cos(x[:, 6:]))), x)
    overlap = op_counts(jn.grad(lambda x: jn.sum(jn.sin(x[:, :6])) + jn.sum(jn.cos(x[:, 4:]))), x)
    assert gap["concat"] == overlap["concat"] == 0 and gap["pad"] == overlap["pad"] == 2
    inner = jn.grad(lambda x: jn.sum(jn.sin(x[:, 2:5])) + jn.sum(jn.cos(x[:, 5:9])))
    ops = op_counts(inner, x)
    assert ops["concat"] == 1 and ops["pad"] == 1
    want = np.zeros_like(x)
    want[:, 2:5], want[:, 5:9] = np.cos(x[:, 2:5]), -np.sin(x[:, 5:9])
    np.testing.assert_allclose(np.asarray(jn.compile(inner, backend="cpu")(x)), want, rtol=1e-6, atol=1e-7)
