"""Every error path raises the documented error, with a message that names the op, the shapes and
the line of user code that caused it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import jitnet as jn

X = np.ones((3, 4), np.float32)
V5 = np.ones(5, np.float32)
MASK = X > 0
IMG = np.ones((1, 2, 5, 5), np.float32)
HERE = os.path.basename(__file__)


def trace(fn, *args):
    return jn.compile(fn, backend="interpret")(*args)


# (id, fn, args, base class, words the message must contain). Each fn is a one-line lambda, so
# the line of the failing op is the lambda's first line.
SHAPE_ERRORS = [
    ("add", lambda x, v: x + v, (X, V5), ["add", "(3, 4)", "(5,)"]),
    ("mul_scalar_first", lambda x, v: v * x, (X, V5), ["mul", "(3, 4)", "(5,)"]),
    ("where", lambda m, v: jn.where(m, 1.0, v), (MASK, V5), ["where", "(3, 4)", "(5,)"]),
    ("maximum", lambda x, v: jn.maximum(x, v[None]), (X, V5), ["maximum", "(3, 4)", "(1, 5)"]),
    ("matmul", lambda x, v: x @ v.reshape(5, 1), (X, V5), ["matmul", "(3, 4)", "(5, 1)"]),
    ("concatenate", lambda x, v: jn.concatenate([x, v[None]]), (X, V5), ["concat", "(3, 4)", "(1, 5)"]),
    ("reshape", lambda x: x.reshape(5, 5), (X,), ["reshape", "(3, 4)", "(5, 5)"]),
    ("reshape_infer", lambda x: x.reshape(-1, 5), (X,), ["reshape", "(3, 4)", "(-1, 5)"]),
    ("reshape_two_unknowns", lambda x: x.reshape(-1, -1), (X,), ["reshape", "-1"]),
    ("broadcast_to", lambda x: jn.broadcast_to(x, (2, 5)), (X,), ["broadcast", "(2, 5)"]),
    ("sum_axis", lambda x: x.sum(2), (X,), ["sum", "axis 2", "(3, 4)"]),
    ("mean_axis", lambda x: jn.mean(x, -3), (X,), ["mean", "axis -3", "(3, 4)"]),
    ("max_axis_tuple", lambda x: jn.max(x, (0, 5)), (X,), ["max", "axis 5", "(3, 4)"]),
    ("repeated_axis", lambda x: x.sum((1, -1)), (X,), ["sum", "repeated"]),
    ("softmax_axis", lambda x: jn.softmax(x, 2), (X,), ["softmax", "axis 2", "(3, 4)"]),
    ("max_zero_size", lambda x: x[:0].max(0), (X,), ["max", "zero-size", "(0, 4)"]),
    ("min_zero_size", lambda x: jn.min(x[:, :0]), (X,), ["min", "zero-size", "(3, 0)"]),
    ("argmax_zero_size", lambda x: jn.argmax(x[:0], 0), (X,), ["argmax", "zero-size", "(0, 4)"]),
    ("index_out_of_bounds", lambda x: x[3], (X,), ["getitem", "3", "out of bounds", "size 3"]),
    ("negative_index_out_of_bounds", lambda x: x[:, -5], (X,), ["getitem", "-5", "out of bounds", "size 4"]),
    ("too_many_indices", lambda x: x[0, 0, 0], (X,), ["getitem", "too many", "(3, 4)"]),
    ("transpose_axes", lambda x: jn.transpose(x, (0, 0)), (X,), ["transpose", "(0, 0)", "(3, 4)"]),
    ("squeeze", lambda x: jn.squeeze(x, 1), (X,), ["squeeze", "(3, 4)"]),
    ("pad_negative", lambda x: jn.pad(x, -1), (X,), ["pad", "(3, 4)"]),
    (
        "conv2d_channels",
        lambda x, w: jn.conv2d(x, w),
        (IMG, np.ones((3, 3, 3, 3), np.float32)),
        ["conv2d", "(1, 2, 5, 5)", "(3, 3, 3, 3)"],
    ),
    ("conv2d_too_big", lambda x, w: jn.conv2d(x, w), (IMG, np.ones((1, 2, 7, 7), np.float32)), ["conv2d", "(7, 7)"]),
    ("conv2d_rank", lambda x: jn.conv2d(x, x), (X,), ["conv2d", "(3, 4)"]),
    ("pool_too_big", lambda x: jn.max_pool2d(x, 6), (IMG,), ["max_pool2d", "(6, 6)"]),
    ("pool_rank", lambda x: jn.avg_pool2d(x, 2), (X,), ["avg_pool2d", "(3, 4)"]),
    ("arange_zero_step", lambda x: jn.arange(0, 3, 0) + x, (X,), ["arange", "step"]),
    # sizes, axes and window arguments that were silently accepted, wrapped or cropped
    ("reshape_negative", lambda x: jn.reshape(x, (-2, -6)), (X,), ["reshape", "(-2, -6)", "non-negative"]),
    ("zeros_negative", lambda x: x.sum() + jn.zeros((2, -3, 0)), (X,), ["full", "(2, -3, 0)"]),
    ("ones_negative", lambda x: x.sum() + jn.ones(-1), (X,), ["full", "(-1,)"]),
    ("full_negative", lambda x: x.sum() + jn.full((-2,), 1.0), (X,), ["full", "(-2,)"]),
    ("broadcast_to_negative", lambda x: jn.broadcast_to(x, (-3, 4)), (X,), ["broadcast_to", "(-3, 4)"]),
    ("expand_dims_axis", lambda v: jn.expand_dims(v, 5), (V5,), ["expand_dims", "axis 5", "2 dimensions"]),
    ("expand_dims_far_axis", lambda x: jn.expand_dims(x, 77), (X,), ["expand_dims", "axis 77"]),
    ("expand_dims_repeated", lambda x: jn.expand_dims(x, (0, -4)), (X,), ["expand_dims", "repeated"]),
    ("concatenate_axis", lambda x: jn.concatenate([x, x], axis=77), (X,), ["concatenate", "axis 77"]),
    ("transpose_axis", lambda x: jn.transpose(x, (0, 2)), (X,), ["transpose", "axis 2"]),
    ("flatten_axis", lambda x: jn.flatten(x, 3), (X,), ["flatten", "axis 3"]),
    ("one_hot_negative", lambda v: jn.one_hot(v.astype(np.int32), -2), (V5,), ["one_hot", "-2"]),
    (
        "conv2d_negative_padding",
        lambda x, w: jn.conv2d(x, w, padding=-1),
        (IMG, np.ones((1, 2, 3, 3), np.float32)),
        ["conv2d", "padding", "(-1, -1)"],
    ),
    (
        "conv2d_zero_stride",
        lambda x, w: jn.conv2d(x, w, stride=0),
        (IMG, np.ones((1, 2, 3, 3), np.float32)),
        ["conv2d", "stride", "(0, 0)"],
    ),
    (
        "conv2d_zero_stride_h",
        lambda x, w: jn.conv2d(x, w, stride=(0, 1)),
        (IMG, np.ones((1, 2, 3, 3), np.float32)),
        ["conv2d", "stride", "(0, 1)"],
    ),
    (
        "max_pool_negative_padding",
        lambda x: jn.max_pool2d(x, 2, padding=-1),
        (IMG,),
        ["max_pool2d", "padding", "(-1, -1)"],
    ),
    ("max_pool_zero_kernel", lambda x: jn.max_pool2d(x, 0), (IMG,), ["max_pool2d", "kernel", "(0, 0)"]),
    ("avg_pool_zero_stride", lambda x: jn.avg_pool2d(x, 2, stride=0), (IMG,), ["avg_pool2d", "stride", "(0, 0)"]),
    ("int_pow_negative", lambda x: x.astype(np.int32) ** -1, (X,), ["pow", "negative integer powers"]),
    (
        "int_pow_negative_array",
        lambda x: jn.pow(x.astype(np.int64), np.array([2, -1])),
        (X[:, :2],),
        ["pow", "negative"],
    ),
]

TYPE_ERRORS = [
    ("astype_float16", lambda x: x.astype("float16"), (X,), ["astype", "float16"]),
    ("astype_not_a_dtype", lambda x: x.astype("floaty"), (X,), ["astype", "floaty"]),
    ("matmul_bool", lambda m: m @ m.T, (MASK,), ["matmul", "bool"]),
    ("add_bool", lambda m: m + m, (MASK,), ["add", "bool"]),
    ("abs_bool", lambda m: jn.abs(m), (MASK,), ["abs", "bool"]),
    ("max_bool", lambda m: jn.max(m, 0), (MASK,), ["max", "bool"]),
    ("logical_and_float", lambda x: jn.logical_and(x, x), (X,), ["logical_and", "float32"]),
    ("invert_float", lambda x: ~x, (X,), ["logical_not", "float32"]),
    ("one_hot_float", lambda x: jn.one_hot(x, 3), (X,), ["one_hot", "float32"]),
    ("two_array_index", lambda x: x[np.array([0, 1]), np.array([1, 2])], (X,), ["getitem", "one integer array"]),
    ("mask_index", lambda x: x[x > 0], (X,), ["getitem", "basic indexing"]),
    ("float_index", lambda x: x[1.5], (X,), ["getitem", "basic indexing", "float"]),
    ("bool_of_tracer", lambda x: x if x > 0 else -x, (X,), ["bool", "jn.where", "(3, 4)"]),
    ("bool_of_tracer_and", lambda x: (x > 0) and x, (X,), ["bool"]),
    ("asarray_of_tracer", lambda x: np.asarray(x), (X,), ["asarray"]),
    ("lift_string", lambda x: x + "a", (X,), ["str"]),
    ("lift_list_of_arrays", lambda x: jn.exp([x, x]), (X,), ["list of arrays", "concatenate"]),
    (
        "conv2d_padding_triple",
        lambda x, w: jn.conv2d(x, w, padding=(1, 1, 1)),
        (IMG, np.ones((1, 2, 3, 3), np.float32)),
        ["conv2d", "padding", "(1, 1, 1)"],
    ),
    (
        "max_pool_padding_triple",
        lambda x: jn.max_pool2d(x, 2, padding=(1, 1, 1)),
        (IMG,),
        ["max_pool2d", "padding", "(1, 1, 1)"],
    ),
    (
        "avg_pool_padding_triple",
        lambda x: jn.avg_pool2d(x, 2, padding=(1, 1, 1)),
        (IMG,),
        ["avg_pool2d", "padding", "(1, 1, 1)"],
    ),
    (
        "conv2d_float_stride",
        lambda x, w: jn.conv2d(x, w, stride=1.5),
        (IMG, np.ones((1, 2, 3, 3), np.float32)),
        ["conv2d", "stride", "1.5"],
    ),
]


def _cases(table, base):
    return [pytest.param(fn, args, base, words, id=name) for name, fn, args, words in table]


@pytest.mark.parametrize("fn, args, base, words", _cases(SHAPE_ERRORS, ValueError) + _cases(TYPE_ERRORS, TypeError))
def test_trace_errors(fn, args, base, words):
    with pytest.raises(jn.TraceError) as info:
        trace(fn, *args)
    err = info.value
    assert isinstance(err, base), type(err).__mro__
    message = str(err)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert f"{HERE}:{fn.__code__.co_firstlineno}" in message, message


def test_error_in_a_helper_names_the_helper_line():
    def helper(a, b):
        return a - b

    with pytest.raises(jn.TraceError, match=f"{HERE}:{helper.__code__.co_firstlineno + 1}"):
        trace(lambda x, v: helper(x, v) * 2, X, V5)


def test_cpu_backend_raises_the_same_errors():
    with pytest.raises(jn.TraceError, match=r"add: .*\(3, 4\).*\(5,\)"):
        jn.compile(lambda x, v: x + v, backend="cpu")(X, V5)


def test_eager_op_raises_trace_error():
    with pytest.raises(jn.TraceError, match="add") as info:
        jn.add(jn.asarray(X), jn.asarray(V5))
    assert isinstance(info.value, ValueError)


def test_failed_trace_leaves_the_function_usable():
    f = jn.compile(lambda x, v: x * v, backend="interpret")
    with pytest.raises(ValueError):
        f(X, V5)
    np.testing.assert_array_equal(np.asarray(f(X, X)), X * X)


def test_matmul_vector_mismatch_names_the_users_shapes():
    with pytest.raises(jn.TraceError) as info:
        trace(lambda a, b: a @ b, np.ones(3, np.float32), V5)
    assert "(3,)" in str(info.value) and "(5,)" in str(info.value), str(info.value)


def test_list_index_gathers():
    """A list of ints indexes like numpy's integer array (jn.take), not as a tuple of indices."""
    np.testing.assert_array_equal(np.asarray(trace(lambda x: x[[0, 1]], X)), X[[0, 1]])


def test_exp_of_bool_computes_in_float():
    """The op table's exp needs a float input; the public op promotes bool (and ints) to float32."""
    got = np.asarray(trace(jn.exp, MASK[:1, :2] & np.array([True, False])))
    np.testing.assert_allclose(got, np.array([[np.e, 1.0]], np.float32), rtol=1e-6)


# ---- errors outside tracing ----


@pytest.mark.parametrize(
    "fn, args, words",
    [
        (lambda x: "not an array", (X,), ["return", "str"]),
        (lambda x: None, (X,), ["return", "NoneType"]),
        (lambda x: (x, object()), (X,), ["return", "object"]),
    ],
    ids=["string", "none", "object_in_tuple"],
)
def test_returning_a_non_array(fn, args, words):
    with pytest.raises(jn.TraceError) as info:
        trace(fn, *args)
    assert isinstance(info.value, TypeError)
    assert all(w in str(info.value) for w in words), str(info.value)
    assert HERE in str(info.value)


@pytest.mark.parametrize(
    "arg, words",
    [
        ("a string", ["str"]),
        (np.ones(3, np.float16), ["float16", "float32"]),
        (np.ones(3, np.uint8), ["uint8"]),
        (np.ones(3, np.complex64), ["complex64"]),
        (None, ["NoneType"]),
        ({"a": [X, b"bytes"]}, ["bytes"]),
    ],
    ids=["str", "float16", "uint8", "complex", "none", "nested_bytes"],
)
def test_unsupported_arguments(arg, words):
    with pytest.raises(TypeError) as info:
        jn.compile(lambda a: a, backend="interpret")(arg)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_eager_constructors_check_their_shape():
    for make in (lambda: jn.zeros(-1), lambda: jn.ones((2, -3, 0)), lambda: jn.full((-1, 2), 3.0)):
        with pytest.raises(jn.TraceError, match="non-negative"):
            make()


def test_nested_lists_are_arrays():
    """A list of lists is array data with the default dtypes, as jn.asarray reads it (it failed with
    'cannot turn a traced array into a numpy array')."""
    got = jn.exp([[0.0, 1.0], [2.0, 3.0]])
    assert got.shape == (2, 2) and got.dtype == np.float32
    np.testing.assert_allclose(np.asarray(got), np.exp(np.float32([[0, 1], [2, 3]])), rtol=1e-6)
    assert jn.maximum([1, 5], 3).dtype == np.int64
    np.testing.assert_array_equal(np.asarray(jn.concatenate([[1, 2], [3, 4]])), [1, 2, 3, 4])
    got = jn.compile(lambda x: x * [[1.0], [2.0]], backend="interpret")(np.ones(3, np.float32))
    assert got.shape == (2, 3) and got.dtype == np.float32


def test_unknown_backend():
    with pytest.raises(ValueError, match="'gpu'"):
        jn.compile(lambda x: x, backend="gpu")


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("JITNET_BACKEND", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        jn.compile(lambda x: x * 2)(X)


def test_unknown_device():
    with pytest.raises(ValueError, match="'tpu'"):
        jn.device("tpu")


def test_unhashable_static_argument():
    f = jn.compile(lambda x, n: x * len(n), static_argnums=1, backend="interpret")
    with pytest.raises(TypeError, match="hashable"):
        f(X, [1, 2])
    np.testing.assert_array_equal(np.asarray(f(X, (1, 2))), X * 2)
