"""Fusion: which values get a buffer and how the rest is grouped into kernels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same

import jitnet as jn
from jitnet.ir.fusion import RECOMPUTE_LIMIT
from jitnet.ir.opdefs import OPS

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4)).astype(np.float32)
ROW = rng.standard_normal(4).astype(np.float32)
COL = rng.standard_normal((3, 1)).astype(np.float32)
W = rng.standard_normal((4, 5)).astype(np.float32)
B = rng.standard_normal(5).astype(np.float32)


def kernels(fn, *args):
    """The fused kernels of fn for these arguments; also checks the compiled result."""
    f = jn.compile(fn, backend="cpu")
    sched = f.lower(*args).schedule
    assert_same(f(*args), jn.compile(fn, backend="interpret")(*args), rtol=1e-4, atol=1e-5)
    return sched.kernels


def ops_of(kernel):
    return [n.op for n in kernel.nodes]


def test_elementwise_chain_with_broadcasting_is_one_kernel():
    (k,) = kernels(lambda x, r, c: jn.tanh(x * r + c) - r / 2, X, ROW, COL)
    assert k.kind == "elementwise"
    assert {i.op for i in k.inputs} == {"input"} and len(k.inputs) == 3
    assert k.root is k.nodes[-1] and k.root.shape == (3, 4)
    assert {"tanh", "mul", "add", "div", "sub", "expand"} <= set(ops_of(k))


def test_sum_of_square_is_one_reduce_kernel():
    (k,) = kernels(lambda x: jn.sum(x * x), X)
    assert k.kind == "reduce"
    assert k.root.op == "sum"
    assert "square" in ops_of(k) or "mul" in ops_of(k)
    assert [i.op for i in k.inputs] == ["input"]


def test_reduction_epilogue_is_one_kernel():
    (k,) = kernels(lambda x: x.sum(1) * 2 + 1, X)
    assert k.kind == "reduce"
    assert k.root.op == "add" and k.root.shape == (3,)
    assert ops_of(k).count("sum") == 1


def test_reductions_of_one_input_share_a_kernel():
    (k,) = kernels(lambda x: x.sum(1) + x.max(1) * jn.logsumexp(x, 1), X)
    assert k.kind == "reduce"
    assert {"sum", "max", "logsumexp"} <= set(ops_of(k))


@pytest.mark.parametrize("op", [jn.softmax, jn.log_softmax])
def test_softmax_is_one_rowwise_kernel(op):
    (k,) = kernels(lambda x: op(x), X)
    assert k.kind == "rowwise" and k.root.op == op.__name__


def test_rowwise_with_producer_and_epilogue_is_one_kernel():
    (k,) = kernels(lambda x: jn.softmax(x * 2 + 1) * 3, X)
    assert k.kind == "rowwise" and k.root.op == "mul"


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: jn.exp(x).T * 2,
        lambda x: jn.exp(x)[1:, ::-2] + 1,
        lambda x: jn.exp(x).reshape(2, 6) * 2,
        lambda x: jn.broadcast_to(x[:1] * 2, (3, 4)) * jn.exp(x),
        lambda x: jn.exp(x.T).reshape(12) - x.reshape(12)[::-1],
        lambda x: jn.pad(jn.exp(x), 1)[::2] * 2,
        lambda x: jn.concatenate([jn.exp(x), x], 1) + 1,
    ],
    ids=["transpose", "slice", "reshape", "broadcast", "mixed", "pad", "concat"],
)
def test_views_between_elementwise_ops_add_no_kernel(fn):
    (k,) = kernels(fn, X)
    assert k.kind == "elementwise"
    assert [i.op for i in k.inputs] == ["input"]


def test_matmul_takes_its_epilogue():
    (k,) = kernels(lambda x, w, b: jn.relu(x @ w + b), X, W, B)
    assert k.kind == "extern" and k.root.op == "relu"
    assert {"matmul", "add", "relu"} <= set(ops_of(k))


def test_conv_takes_its_epilogue():
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    (k,) = kernels(lambda x, w, b: jn.relu(jn.conv2d(x, w) + b.reshape(4, 1, 1)), x, w, b)
    assert k.kind == "extern" and k.root.op == "relu"


def test_extern_epilogue_limits():
    # a pool takes no epilogue; a dtype change or a reduction stays out of the matmul's kernel
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    assert len(kernels(lambda x: jn.max_pool2d(x, 2) * 2, x)) == 2
    assert len(kernels(lambda x, w: (x @ w) > 0, X, W)) == 2
    assert len(kernels(lambda x, w: jn.sum(x @ w), X, W)) == 2
    assert len(kernels(lambda x, w: (x @ w, jn.relu(x @ w)), X, W)) == 2  # an output is stored as it is


def test_transposed_operands_are_read_in_place():
    for fn, args in [
        (lambda x, y: x.T @ y, (X, X)),
        (lambda x, w: x @ w.T, (X, W.T.copy())),
        (lambda x: x.T @ x, (X,)),
    ]:
        (k,) = kernels(fn, *args)
        assert k.kind == "extern" and all(i.op == "input" for i in k.inputs)
    # a batched operand transposes its last two axes only
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    (k,) = kernels(lambda a: jn.transpose(a, (0, 2, 1)) @ a, a)
    assert [i.op for i in k.inputs] == ["input"]


def test_matmul_backward_reads_operands_in_place():
    grads = jn.grad(lambda w, x: jn.sum(jn.tanh(x @ w)), argnums=(0, 1))
    ks = kernels(grads, W, X)
    assert [k.kind for k in ks].count("elementwise") <= 1  # tanh's derivative only
    assert not any(k.root.op == "permute" for k in ks)


def test_rows_times_a_matrix_is_one_2d_product_both_ways():
    """(batch, rows, k) @ (k, n) (a Linear on a sequence) multiplies the batch's rows as one (batch *
    rows, k) matrix, and the weight's gradient is one (k, batch * rows) @ (batch * rows, n) product:
    no per-batch product of (batch, k, n) summed afterwards (16x the work and a reduction)."""
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    ks = kernels(jn.grad(lambda w, x: jn.sum(jn.tanh(x @ w)), argnums=(0, 1)), W[:3], x)
    products = [k for k in ks if k.kind == "extern"]
    assert len(products) == 3 and all(len(k.root.shape) <= 2 for k in ks if k.kind != "elementwise")
    assert all(o.shape in {(20, 5), (3, 5), (20, 3)} for k in products for o in k.outputs)
    assert not [k for k in ks if k.kind == "reduce"]


def test_extern_inputs_are_materialised():
    ks = kernels(lambda x, w: jn.exp(x) @ w, X, W)
    assert [k.kind for k in ks] == ["elementwise", "extern"]
    assert ks[1].inputs[0] is ks[0].root


def costly(x):
    """An elementwise value whose fused cost is above the recompute limit."""
    v, cost = x, 0
    while cost <= RECOMPUTE_LIMIT:
        v = jn.sin(v)
        cost += OPS["sin"].cost
    return v


def test_costly_value_read_by_two_reductions_is_materialised_once():
    ks = kernels(lambda x: (costly(x).sum(0), costly(x).max(1)), X)
    assert len(ks) == 3
    shared = [k for k in ks if k.kind == "elementwise"]
    assert len(shared) == 1
    reducers = [k for k in ks if k.kind == "reduce"]
    assert all(k.inputs == [shared[0].root] for k in reducers)
    assert all("sin" not in ops_of(k) for k in reducers)


def test_cheap_value_read_by_two_reductions_is_recomputed():
    ks = kernels(lambda x: ((x * 2 + 1).sum(0), (x * 2 + 1).max(1)), X)
    assert [k.kind for k in ks] == ["reduce", "reduce"]
    assert all([i.op for i in k.inputs] == ["input"] for k in ks)


def test_value_reading_many_buffers_is_materialised_once():
    """A residual stream x0 + a1 + a2 + a3 read by two kernels is kept (each would read all four
    buffers to recompute it; the kept value is one read), a sum of two is recomputed."""
    a = [rng.standard_normal(X.shape).astype(np.float32) for _ in range(4)]

    def stream(x0, a1, a2, a3):
        x = x0 + a1 + a2 + a3
        return x.sum(0), x.max(1)

    ks = kernels(stream, *a)
    kept = [k for k in ks if k.kind == "elementwise"]
    assert len(kept) == 1 and all(k.inputs == [kept[0].root] for k in ks if k.kind == "reduce")
    pair = kernels(lambda x, y: ((x + y).sum(0), (x + y).max(1)), X, X + 1)
    assert [k.kind for k in pair] == ["reduce", "reduce"]


def test_costly_value_broadcast_to_a_larger_shape_is_materialised():
    ks = kernels(lambda r, x: jn.exp(jn.sin(r)) + x, ROW, X)
    assert [k.kind for k in ks] == ["elementwise", "elementwise"]
    assert ks[0].root.size == 4


def test_cheap_value_broadcast_is_recomputed():
    (k,) = kernels(lambda r, x: (r * 2) + x, ROW, X)
    assert k.kind == "elementwise"


def test_reduction_broadcast_back_needs_its_own_kernel():
    ks = kernels(lambda x: x - x.mean(1, keepdims=True), X)
    assert [k.kind for k in ks] == ["reduce", "elementwise"]
    assert ks[0].root in ks[1].inputs


def test_every_output_is_a_kernel_output():
    ks = kernels(lambda x: (jn.exp(x), jn.exp(x) * 2, jn.exp(x).sum(0)), X)
    assert sorted(o.op for k in ks for o in k.outputs) == ["exp", "mul", "sum"]
    assert len(ks) == 2  # exp(x) * 2 rides along in the sum over exp(x)


# ---- sibling fusion: independent kernels over one domain share a loop ----


def test_forward_sum_and_gradient_are_one_kernel():
    def gelu(x):
        return 0.5 * x * (1 + jn.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))

    (k,) = kernels(jn.value_and_grad(lambda x: jn.sum(gelu(x))), X)
    assert k.kind == "reduce" and k.root.op == "sum" and len(k.siblings) == 1
    assert k.siblings[0].shape == X.shape


def test_elementwise_siblings_share_a_loop():
    (k,) = kernels(lambda x, r: (x * r, jn.exp(x) - r, x + 1), X, ROW)
    assert k.kind == "elementwise" and len(k.outputs) == 3


def test_siblings_of_a_partial_reduction():
    (k,) = kernels(lambda x: (x.sum(1), jn.tanh(x) * 3), X)
    assert k.kind == "reduce" and len(k.siblings) == 1


def test_no_sibling_fusion_across_a_dependency():
    ks = kernels(lambda x: (jn.exp(x).sum(), x * jn.exp(x).sum()), X)
    assert [len(k.outputs) for k in ks] == [1, 1]


def test_no_sibling_fusion_without_a_shared_input():
    ks = kernels(lambda x, y: (jn.exp(x), jn.exp(y)), X, X + 1)
    assert [len(k.outputs) for k in ks] == [1, 1]


def test_no_sibling_fusion_over_different_domains():
    ks = kernels(lambda x: (x.sum(), jn.exp(x[:, :2])), X)
    assert [len(k.outputs) for k in ks] == [1, 1]


def test_no_sibling_fusion_when_a_kernel_between_reads_the_first():
    # k0 = exp(x) (an output); k1 = sum(k0); k2 = x * k1. k0 and k2 share x, but k2 runs after k1,
    # which reads k0: k0 must be written before k1, so it cannot move into k2.
    ks = kernels(lambda x: (jn.exp(x), x * jn.exp(x).sum()), X)
    assert sorted(len(k.outputs) for k in ks) == [1, 1, 1]


def test_inputs_and_constants_need_no_kernel():
    assert kernels(lambda x: x, X) == []
    assert kernels(lambda x: (x, X * 2), X) == []


def test_reductions_over_one_domain_share_a_loop():
    y = rng.standard_normal((20, 4)).astype(np.float32)  # 20 outputs: argmax joins the sums
    (k,) = kernels(lambda x, y: ((x * y).sum(1), y.sum(1, keepdims=True) * 2, jn.argmax(y, 1)), y * 2, y)
    assert k.kind == "reduce" and len(k.roots) == 2 and not k.siblings


def test_reductions_over_other_axes_stay_apart():
    ks = kernels(lambda x: (x.sum(1), x.sum(0)), X)
    assert [len(k.outputs) for k in ks] == [1, 1]


def test_few_output_reductions_keep_their_parallel_split():
    # whole-array sum/max/min split across threads; argmax and logsumexp do not, so they neither
    # join those nor take in an elementwise sibling that would lose its parallel loop
    ks = kernels(lambda x: (x.sum(), x.max(), jn.argmax(x), jn.logsumexp(x), jn.exp(x)), X)
    groups = sorted(sorted(o.op for o in k.outputs) for k in ks)
    assert groups == [["argmax"], ["exp", "max", "sum"], ["logsumexp"]]


def test_a_reshaped_buffer_is_the_same_memory():
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    f = jn.compile(lambda x, w: jn.max_pool2d(x, 2).reshape(2, 12) @ w, backend="cpu")
    sched = f.lower(x, w).schedule
    assert [k.root.op for k in sched.kernels] == ["max_pool2d", "matmul"]
    ((alias, src),) = sched.aliases.items()
    assert alias.op == "reshape" and src.op == "max_pool2d"
    assert_same(f(x, w), jn.compile(f.fn, backend="interpret")(x, w), rtol=1e-5, atol=1e-5)
    # its gradient reshapes back: no copy either way
    g = jn.compile(jn.grad(lambda x, w: jn.sum(jn.max_pool2d(x, 2).reshape(2, 12) @ w)), backend="cpu")
    assert not any(k.root.op == "reshape" for k in g.lower(x, w).schedule.kernels)
    assert_same(g(x, w), jn.compile(g.fn, backend="interpret")(x, w), rtol=1e-5, atol=1e-5)


def test_a_transposed_view_read_by_a_conv_too_is_materialised():
    x = rng.standard_normal((1, 1, 4, 5)).astype(np.float32)
    k = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    w = rng.standard_normal((1, 1, 4, 3)).astype(np.float32)

    def f(x, k, w):
        xt = jn.transpose(x, (0, 1, 3, 2))  # (1, 1, 5, 4): conv2d cannot read it transposed
        return xt @ w, jn.conv2d(xt, k)

    ks = kernels(f, x, k, w)
    assert any(k.root.op == "permute" for k in ks)
