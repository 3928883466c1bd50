"""`jn.Array` and `jn.asarray`: attributes, conversions, eager ops, and buffer reuse."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import jitnet as jn

M = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5


def values(a) -> np.ndarray:
    assert isinstance(a, jn.Array), type(a)
    return np.asarray(a)


# ---- attributes and conversions ----


def test_attributes():
    a = jn.asarray(M)
    assert isinstance(a, jn.Array)
    assert a.shape == (2, 3) and a.ndim == 2 and a.size == 6
    assert a.dtype == np.float32
    assert a.device == jn.device("cpu") == jn.default_device()
    assert len(a) == 2


def test_numpy_and_array_protocol():
    a = jn.asarray(M)
    np.testing.assert_array_equal(a.numpy(), M)
    np.testing.assert_array_equal(np.asarray(a), M)
    assert np.asarray(a).dtype == np.float32 and np.asarray(a).shape == (2, 3)
    assert np.asarray(a, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.array(a), M)


def test_numpy_view_is_read_only():
    a = jn.asarray(M)
    with pytest.raises(ValueError):
        a.numpy()[0, 0] = 1
    copy = np.array(a)
    copy[0, 0] = 100
    np.testing.assert_array_equal(a.numpy(), M)


def test_repr():
    text = repr(jn.asarray(M))
    assert text.startswith("jn.Array(") and "float32" in text and "cpu" in text
    assert "-2.5" in text and "2.5" in text
    assert "int64" in repr(jn.asarray([1, 2]))


def test_scalar_conversions():
    s = jn.asarray(np.float32(2.5))
    assert s.shape == () and s.item() == 2.5 and float(s) == 2.5
    assert int(jn.asarray(7)) == 7 and isinstance(jn.asarray(7).item(), int)
    assert bool(jn.asarray([True])) is True
    assert jn.asarray([[3.5]]).item() == 3.5


def test_scalar_conversion_errors():
    with pytest.raises(ValueError, match="one element"):
        jn.asarray(M).item()
    with pytest.raises(TypeError):
        len(jn.asarray(1.0))


def test_tolist_and_iteration():
    a = jn.asarray(M)
    assert a.tolist() == M.tolist()
    rows = list(a)
    assert len(rows) == 2 and all(isinstance(r, jn.Array) for r in rows)
    np.testing.assert_array_equal(values(rows[1]), M[1])


@pytest.mark.parametrize(
    "data, dtype",
    [
        ([1.0, 2.0], np.float32),
        ([[1, 2], [3, 4]], np.int64),
        ([True, False], np.bool_),
        (3.5, np.float32),
        (3, np.int64),
        ([1, 2.5], np.float32),
        (np.ones(3, np.float64), np.float64),
        (np.float64(2.0), np.float64),
        (np.ones(3, np.int32), np.int32),
        (np.ones(3, np.float32), np.float32),
    ],
    ids=["floats", "ints", "bools", "float", "int", "mixed", "f64_array", "f64_scalar", "i32", "f32"],
)
def test_asarray_dtypes(data, dtype):
    a = jn.asarray(data)
    assert a.dtype == dtype
    np.testing.assert_array_equal(values(a), np.asarray(data).astype(dtype))


def test_asarray_explicit_dtype():
    assert jn.asarray([1, 2], dtype="float64").dtype == np.float64
    assert jn.asarray(M, dtype=np.int32).dtype == np.int32


def test_asarray_unsupported_dtype():
    with pytest.raises(TypeError, match="float16"):
        jn.asarray(np.ones(2, np.float16))


def test_asarray_copies_numpy_data():
    src = M.copy()
    a = jn.asarray(src)
    src[:] = 0
    np.testing.assert_array_equal(values(a), M)


def test_asarray_of_non_contiguous_view():
    np.testing.assert_array_equal(values(jn.asarray(M.T[::-1])), M.T[::-1])


def test_asarray_of_array_passes_through():
    a = jn.asarray(M)
    assert jn.asarray(a) is a
    assert jn.asarray(a, device="cpu") is a
    b = jn.asarray(a, dtype="float64")
    assert b.dtype == np.float64
    np.testing.assert_array_equal(values(b), M)


# ---- eager ops ----


@pytest.mark.parametrize(
    "fn, ref",
    [
        (lambda a: a + 1, lambda m: m + 1),
        (lambda a: 1 - a, lambda m: 1 - m),
        (lambda a: a * a / 2, lambda m: m * m / 2),
        (lambda a: -a, lambda m: -m),
        (lambda a: a**2, lambda m: m**2),
        (lambda a: jn.exp(a), np.exp),
        (lambda a: a.sum(), np.sum),
        (lambda a: a.sum(1), lambda m: m.sum(1)),
        (lambda a: a.mean(0), lambda m: m.mean(0)),
        (lambda a: a.max(), np.max),
        (lambda a: a.T, lambda m: m.T),
        (lambda a: a[1, 2], lambda m: m[1, 2]),
        (lambda a: a.reshape(3, 2), lambda m: m.reshape(3, 2)),
        (lambda a: a @ a.T, lambda m: m @ m.T),
        (lambda a: a > 0, lambda m: m > 0),
        (lambda a: jn.softmax(a), lambda m: np.exp(m) / np.exp(m).sum(1, keepdims=True)),
        (lambda a: jn.maximum(a, 0.0), lambda m: np.maximum(m, 0)),
        (lambda a: a.astype("int32"), lambda m: m.astype(np.int32)),
        (lambda a: np.ones(3, np.float32) + a, lambda m: 1 + m),
        (lambda a: np.float32(2) * a, lambda m: 2 * m),
    ],
    ids=[
        "add",
        "rsub",
        "mul_div",
        "neg",
        "pow",
        "exp",
        "sum",
        "sum_axis",
        "mean",
        "max",
        "T",
        "index",
        "reshape",
        "matmul",
        "compare",
        "softmax",
        "maximum",
        "astype",
        "numpy_left",
        "numpy_scalar_left",
    ],
)
def test_eager_ops_return_arrays(fn, ref):
    got = values(fn(jn.asarray(M)))
    want = np.asarray(ref(M))
    assert got.shape == want.shape
    assert got.dtype == want.dtype or (want.dtype == np.float64 and got.dtype == np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("index", [np.s_[1:], np.s_[:, ::-1], np.s_[None, 1:, 0]], ids=["rows", "reverse", "mixed"])
def test_eager_slicing(index):
    np.testing.assert_array_equal(values(jn.asarray(M)[index]), M[index])


def test_eager_ops_on_two_arrays():
    a, b = jn.asarray(M), jn.asarray(M[0])
    np.testing.assert_array_equal(values(a + b), M + M[0])
    np.testing.assert_array_equal(values(jn.where(a > b, a, b)), np.maximum(M, M[0]))
    np.testing.assert_array_equal(values(jn.concatenate([a, a], 1)), np.concatenate([M, M], 1))


# ---- constructors outside compiled code ----


@pytest.mark.parametrize(
    "make, want",
    [
        (lambda: jn.zeros((2, 3)), np.zeros((2, 3), np.float32)),
        (lambda: jn.ones(4, dtype="int32"), np.ones(4, np.int32)),
        (lambda: jn.full((2, 2), 7), np.full((2, 2), 7, np.int64)),
        (lambda: jn.full((3,), 1.5), np.full(3, 1.5, np.float32)),
        (lambda: jn.zeros_like(M), np.zeros_like(M)),
        (lambda: jn.ones_like(jn.asarray([1, 2])), np.ones(2, np.int64)),
        (lambda: jn.arange(5), np.arange(5)),
        (lambda: jn.arange(1, 2, 0.25), np.arange(1, 2, 0.25, dtype=np.float32)),
        (lambda: jn.arange(6, 0, -2, dtype="int32"), np.arange(6, 0, -2, dtype=np.int32)),
        (lambda: jn.zeros(()), np.zeros((), np.float32)),
    ],
    ids=[
        "zeros",
        "ones_int",
        "full_int",
        "full_float",
        "zeros_like",
        "ones_like",
        "arange",
        "arange_float",
        "arange_neg",
        "zeros_0d",
    ],
)
def test_constructors_return_arrays(make, want):
    got = values(make())
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_compiled_results_are_arrays_in_the_same_structure():
    out = jn.compile(lambda d: {"y": [d["x"] * 2, (d["x"].sum(),)]})({"x": M})
    assert isinstance(out, dict) and isinstance(out["y"], list) and isinstance(out["y"][1], tuple)
    np.testing.assert_array_equal(values(out["y"][0]), M * 2)
    np.testing.assert_allclose(values(out["y"][1][0]), M.sum())


def test_arrays_as_compiled_arguments():
    f = jn.compile(lambda a, b: a * b + 1)
    a = jn.asarray(M)
    np.testing.assert_array_equal(values(f(a, M)), M * M + 1)
    np.testing.assert_array_equal(values(f(f(a, a), a)), (M * M + 1) * M + 1)


# ---- buffer reuse never corrupts data ----


def _churn(f, x, times=5):
    """Call f repeatedly, dropping the results, so that freed buffers are handed out again."""
    for k in range(times):
        del_me = f(x + k)
        del del_me
        gc.collect()


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_numpy_view_survives_dropping_the_array(backend):
    f = jn.compile(lambda x: jn.exp(x) * 2 + 1, backend=backend)
    x = np.random.default_rng(0).standard_normal((37, 53)).astype(np.float32)
    y = f(x)
    view = np.asarray(y)
    part = y.numpy()[3:, ::2]
    want = view.copy()
    del y
    gc.collect()
    _churn(f, x)
    np.testing.assert_array_equal(view, want)
    np.testing.assert_array_equal(part, want[3:, ::2])


def test_numpy_view_of_eager_result_survives():
    a = jn.asarray(M)
    view = np.asarray(a + 1)
    gc.collect()
    for k in range(5):
        r = a + k * 10
        del r
    np.testing.assert_array_equal(view, M + 1)


def test_shared_output_buffer_survives_dropping_one_alias():
    f = jn.compile(lambda x: (x * 2, x * 2))
    first, second = f(M)
    del first
    gc.collect()
    _churn(lambda x: f(x)[0], M)
    np.testing.assert_array_equal(values(second), M * 2)


def test_results_are_independent_of_later_calls():
    f = jn.compile(lambda x: jn.tanh(x) - x.sum(0))
    outs = [f(M + k) for k in range(4)]
    for k, out in enumerate(outs):
        np.testing.assert_allclose(values(out), np.tanh(M + k) - (M + k).sum(0), rtol=1e-6, atol=1e-6)


def test_result_fed_back_as_input_is_not_overwritten():
    f = jn.compile(lambda x: x * 2)
    y = f(M)
    z = f(y)
    w = f(z)
    np.testing.assert_array_equal(values(y), M * 2)
    np.testing.assert_array_equal(values(z), M * 4)
    np.testing.assert_array_equal(values(w), M * 8)


def test_identity_and_constant_outputs_are_copies():
    src = M.copy()
    f = jn.compile(lambda x: (x, M))
    same, const = f(src)
    src[:] = 0
    np.testing.assert_array_equal(values(same), M)
    np.testing.assert_array_equal(values(const), M)


def test_dropped_result_buffer_is_reused():
    f = jn.compile(lambda x: x * 3)
    x = np.ones((41, 43), np.float32)
    y = f(x)
    address = np.asarray(y).ctypes.data
    del y
    gc.collect()
    assert np.asarray(f(x)).ctypes.data == address


# ---- assign: in-place updates that keep the Array's identity ----


def test_assign_copies_by_default():
    a = jn.asarray(M)
    b = jn.asarray(M * 2)
    a.assign(b)
    np.testing.assert_array_equal(values(a), M * 2)
    np.testing.assert_array_equal(values(b), M * 2)  # the source is untouched
    a.assign(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(values(a), np.ones((2, 3)))


def test_assign_move_takes_the_buffer():
    a = jn.asarray(M)
    f = jn.compile(lambda x: x * 3)
    held = a  # another reference sees the update
    new = f(a)
    buf = new.buffer()
    a.assign(new, move=True)
    assert a.buffer() is buf and held is a
    np.testing.assert_array_equal(values(held), M * 3)
    with pytest.raises(RuntimeError, match="moved"):
        new.numpy()
    with pytest.raises(RuntimeError, match="moved"):
        f(new)


def test_assign_rejects_mismatch():
    a = jn.asarray(M)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        a.assign(jn.asarray(M.T.copy()))
    with pytest.raises(ValueError, match="dtype float64"):
        a.assign(jn.asarray(M.astype(np.float64)))
