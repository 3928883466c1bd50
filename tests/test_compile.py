"""`jn.compile` as API.md describes it: pytrees in and out, Python scalars as runtime inputs,
literals and captured numpy data as constants, captured Arrays as implicit inputs, static arguments,
the interpreter backend, the environment switches, `inspect`, and eager ops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same

import jitnet as jn
from jitnet.codegen import cache

REPO = Path(__file__).resolve().parents[1]
X = np.arange(-6, 6, dtype=np.float32).reshape(3, 4) / 4
W = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)


def values(tree):
    """A pytree of jn.Arrays as the same pytree of numpy arrays (and a check they are Arrays)."""
    leaves, treedef = jn.ir.pytree.flatten(tree)
    assert all(isinstance(leaf, jn.Array) for leaf in leaves), [type(leaf) for leaf in leaves]
    return jn.ir.pytree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves])


# ---- pytrees ----


def test_pytree_inputs_and_outputs():
    @jn.compile
    def f(params, batch):
        h = batch["x"] @ params[0]["w"] + params[0]["b"]
        return {"out": (jn.relu(h), [h.sum(), h.shape[0] * 1.0]), "scaled": [s * batch["x"] for s in params[1]]}

    params = ({"w": W, "b": np.float32(0.5) * np.ones(2, np.float32)}, [2.0, 3.0])
    got = values(f(params, {"x": X}))
    h = X @ W + 0.5
    assert set(got) == {"out", "scaled"}
    assert type(got["out"]) is tuple and type(got["out"][1]) is list
    np.testing.assert_allclose(got["out"][0], np.maximum(h, 0), rtol=1e-6)
    np.testing.assert_allclose(got["out"][1][0], h.sum(), rtol=1e-5)
    assert got["out"][1][1] == 3.0
    assert type(got["scaled"]) is list
    np.testing.assert_allclose(got["scaled"][0], 2 * X)
    np.testing.assert_allclose(got["scaled"][1], 3 * X)


@pytest.mark.parametrize(
    "make",
    [lambda a, b: (a, b), lambda a, b: [a, b], lambda a, b: {"z": a, "a": b}, lambda a, b: ((a,), [b, {"k": a}])],
    ids=["tuple", "list", "dict", "nested"],
)
def test_output_structure_mirrors_return_value(make):
    got = jn.compile(lambda x: make(x + 1, x * 2))(X)
    want = make(X + 1, X * 2)
    assert jn.ir.pytree.flatten(got)[1] == jn.ir.pytree.flatten(want)[1]
    assert_same(values(got), want)


def test_single_array_output_is_not_wrapped():
    out = jn.compile(lambda x: x * 2)(X)
    assert isinstance(out, jn.Array)
    assert out.shape == X.shape and out.dtype == np.float32


# ---- Python scalars and literals ----


@pytest.mark.parametrize(
    "fn, np_fn, scalars, dtype",
    [
        (lambda x, s: x * s, lambda x, s: x * np.float32(s), [0.5, -2.0, 3.25], np.float32),
        (lambda x, s: x + s, lambda x, s: x + np.int32(s), [1, -7, 100], np.int32),
        (lambda x, s: jn.where(s, x, -x), lambda x, s: np.where(s, x, -x), [True, False, True], np.int32),
    ],
    ids=["float", "int", "bool"],
)
def test_python_scalars_are_runtime_inputs(fn, np_fn, scalars, dtype):
    f = jn.compile(fn)
    x = np.arange(-3, 3).astype(dtype)
    for s in scalars:
        got = f(x, s)
        assert got.dtype == dtype  # a Python scalar is weakly typed: the array's dtype wins
        np.testing.assert_array_equal(np.asarray(got), np_fn(x, s))
    assert f.traces == 1
    assert len(f.lower(x, scalars[0]).graph.inputs) == 2


def test_literals_are_compile_time_constants():
    f = jn.compile(lambda x: x * 2.5 + 1)
    compiled = f.lower(X)
    assert len(compiled.graph.inputs) == 1
    assert "2.5" in f.inspect(X)
    np.testing.assert_allclose(np.asarray(f(X)), X * 2.5 + 1)
    assert f(X).dtype == np.float32


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
@pytest.mark.parametrize(
    "fn, want",
    [
        (lambda x: x + 1.5, np.float32(3.5)),
        (lambda x: jn.maximum(x, 0.0) * 2, np.float32(4.0)),
        (lambda x: jn.mean(x), np.float32(2.0)),
    ],
    ids=["add_literal", "maximum_literal", "mean"],
)
def test_zero_d_stays_zero_d(fn, want, backend):
    got = jn.compile(fn, backend=backend)(np.float32(2.0))
    assert got.shape == ()
    assert np.asarray(got) == want


def test_scalar_argument_and_literal_of_same_value_give_same_result():
    arg = jn.compile(lambda x, s: x * s)(X, 3.0)
    lit = jn.compile(lambda x: x * 3.0)(X)
    assert_same(arg, lit)


# ---- static arguments ----


def _repeat(x, n, mode):
    for _ in range(n):  # Python control flow on static values
        x = x * 2
    return -x if mode == "negate" else x


def test_static_argnums_control_flow_and_retrace_per_value():
    f = jn.compile(_repeat, static_argnums=(1, 2))
    x = np.ones(3, np.float32)
    assert np.asarray(f(x, 2, "keep")).tolist() == [4, 4, 4]
    assert np.asarray(f(x * 3, 2, "keep")).tolist() == [12, 12, 12]
    assert f.traces == 1
    assert np.asarray(f(x, 3, "keep")).tolist() == [8, 8, 8]
    assert np.asarray(f(x, 3, "negate")).tolist() == [-8, -8, -8]
    assert f.traces == 3
    f(x, 2, "keep")
    assert f.traces == 3


def test_traced_value_in_python_control_flow_is_a_trace_error():
    def f(x):
        return x if x.sum() > 0 else -x

    with pytest.raises(jn.TraceError):
        jn.compile(f)(X)


# ---- the interpreter backend ----

INTERPRET_CASES = {
    "mlp": lambda x, w: jn.relu(x @ w + 0.1),
    "softmax": lambda x, w: jn.softmax(x, axis=0) * jn.log_softmax(x @ w, axis=-1).sum(),
    "reductions": lambda x, w: (x.max(axis=1), x.mean(), jn.logsumexp(x, axis=0, keepdims=True), jn.argmax(x, axis=1)),
    "views": lambda x, w: (x.T[::-1, 1:], jn.pad(x, 1)[:, ::2], jn.concatenate([x, x * 2], axis=1).reshape(4, 6)),
    "mixed_dtypes": lambda x, w: (x.astype(jn.int32) + 1, (x > 0).astype(jn.float32) * w.sum(), x / 3),
}


@pytest.mark.parametrize("name", sorted(INTERPRET_CASES))
def test_interpret_backend_gives_the_same_results(name):
    fn = INTERPRET_CASES[name]
    got = jn.compile(fn, backend="interpret")(X, W)
    want = jn.compile(fn, backend="cpu")(X, W)
    assert_same(got, want)


def test_interpret_backend_compiles_no_kernels():
    before = cache.stats.compiles + cache.stats.disk_loads + cache.stats.memory_hits
    f = jn.compile(lambda x: jn.tanh(x) * 11.5 - 3, backend="interpret")
    np.testing.assert_allclose(np.asarray(f(X)), np.tanh(X) * 11.5 - 3, rtol=1e-6)
    assert cache.stats.compiles + cache.stats.disk_loads + cache.stats.memory_hits == before
    assert "== IR ==" in f.inspect(X) and "@njit" not in f.inspect(X)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError):
        jn.compile(lambda x: x, backend="tpu")


# ---- captured values ----


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_captured_array_is_an_implicit_input(backend):
    w = jn.asarray(W)
    f = jn.compile(lambda x: x @ w, backend=backend)
    np.testing.assert_allclose(np.asarray(f(X)), X @ W, rtol=1e-6)
    assert len(f.lower(X).graph.inputs) == 1
    assert "capture" in f.inspect(X)


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_captured_array_is_read_at_every_call(backend):
    """An optimizer step writes new values into a parameter's buffer; no public API writes into an
    Array, so write into its buffer the way the runtime does."""
    w = jn.asarray(W)
    f = jn.compile(lambda x: x @ w, backend=backend)
    f(X)
    w.buffer()[...] = (W * 3).reshape(-1)
    np.testing.assert_allclose(np.asarray(f(X)), X @ (W * 3), rtol=1e-6)
    assert f.traces == 1


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_captured_numpy_array_and_number_are_trace_time_constants(backend):
    w = W.copy()
    k = 2.0
    f = jn.compile(lambda x: x @ w * k, backend=backend)
    first = np.asarray(f(X)).copy()
    w[...] = 0
    k = 100.0  # rebinding the captured name after tracing changes nothing
    np.testing.assert_array_equal(np.asarray(f(X)), first)
    np.testing.assert_allclose(first, X @ W * 2, rtol=1e-6)
    assert len(f.lower(X).graph.inputs) == 1


def test_big_endian_inputs_compute_in_the_native_dtype(backend):
    """Data read from a file may be big-endian: it is the same number, not an unsupported dtype."""
    x, y = X.astype(">f4"), np.arange(4, dtype=">i8")
    f = jn.compile(lambda a, b, c: (a * 2 + b.sum(), a @ c), backend=backend)
    scaled, product = f(x, y, W.astype(">f8"))
    assert scaled.dtype == product.dtype == np.float64  # as numpy: float32 with int64 is float64
    np.testing.assert_array_equal(np.asarray(scaled), x * 2 + y.sum())
    np.testing.assert_allclose(np.asarray(product), X.astype(np.float64) @ W, rtol=1e-12)
    assert f.traces == 1 and f(X, np.arange(4), W.astype(np.float64)) is not None and f.traces == 1
    k = np.arange(3, dtype=">f8")
    np.testing.assert_array_equal(np.asarray(jn.compile(lambda a: a + k, backend=backend)(X[:, :3])), X[:, :3] + k)
    assert jn.asarray(x).dtype == np.float32 and np.asarray(jn.asarray(x)).tolist() == X.tolist()


# ---- results are the caller's ----


def test_output_that_is_an_input_is_a_copy():
    x = X.copy()
    out = jn.compile(lambda a: (a, a + 1))(x)
    x[...] = 42
    np.testing.assert_array_equal(np.asarray(out[0]), X)


def test_results_survive_later_calls():
    f = jn.compile(lambda a: jn.exp(a) * 2)
    first = f(X)
    view = np.asarray(f(X + 1))  # the Array is gone; its numpy view must keep the data
    for k in range(3):
        f(X * k)
    np.testing.assert_allclose(np.asarray(first), np.exp(X) * 2, rtol=1e-6)
    np.testing.assert_allclose(view, np.exp(X + 1) * 2, rtol=1e-6)


# ---- inspect ----


def test_inspect_shows_ir_fusion_groups_and_kernel_source():
    f = jn.compile(lambda x, w: jn.softmax(jn.tanh(x @ w), axis=-1).sum(axis=0))
    text = f.inspect(X, W)
    assert isinstance(text, str)
    for marker in ("== IR ==", "input", "matmul", "tanh", "softmax", "sum", "fusion groups", "@njit", "def kernel"):
        assert marker in text, marker
    assert text.index("== IR ==") < text.index("fusion groups") < text.index("@njit")


def test_inspect_is_per_signature_and_shares_the_trace():
    f = jn.compile(lambda x: x * 2)
    f(X)
    small, large = f.inspect(X), f.inspect(np.ones((5, 7), np.float32))
    assert "[3,4]" in small and "[5,7]" in large
    assert f.traces == 2  # inspecting the called signature did not trace it again


# ---- environment switches, in fresh processes ----


def run_python(code: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JITNET_")}
    env.update(PYTHONPATH=str(REPO), JITNET_CACHE_DIR=str(tmp_path / "cache"), **env_vars)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc


BACKEND_SCRIPT = """
import numpy as np
import jitnet as jn
from jitnet.codegen import cache
x = np.linspace(-1, 1, 6, dtype=np.float32)
default = jn.compile(lambda x: jn.exp(x) * 3)
explicit = jn.compile(lambda x: jn.exp(x) * 5, backend="cpu")
np.testing.assert_allclose(np.asarray(default(x)), np.exp(x) * 3, rtol=1e-6)
print("default kernels:", "@njit" in default.inspect(x))
print("default compiles:", cache.stats.compiles + cache.stats.disk_loads)
print("explicit kernels:", "@njit" in explicit.inspect(x))
"""


@pytest.mark.parametrize("backend, has_kernels", [("interpret", False), ("cpu", True)])
def test_jitnet_backend_env_sets_the_default(tmp_path, backend, has_kernels):
    out = run_python(BACKEND_SCRIPT, tmp_path, JITNET_BACKEND=backend).stdout
    assert f"default kernels: {has_kernels}" in out
    assert ("default compiles: 0" in out) is not has_kernels
    assert "explicit kernels: True" in out  # an explicit backend wins over the environment


def test_bad_jitnet_backend_env_is_an_error(monkeypatch):
    monkeypatch.setenv("JITNET_BACKEND", "abacus")
    with pytest.raises(ValueError, match="JITNET_BACKEND"):
        jn.compile(lambda x: x + 1)(X)


DEBUG_SCRIPT = """
import numpy as np
import jitnet as jn
f = jn.compile(lambda x: jn.softmax(x * 2, axis=-1))
f(np.ones((2, 3), np.float32))
f(np.zeros((2, 3), np.float32))
"""


def test_jitnet_debug_prints_ir_groups_and_kernels(tmp_path):
    err = run_python(DEBUG_SCRIPT, tmp_path, JITNET_DEBUG="1").stderr
    for marker in ("== IR ==", "softmax", "fusion groups", "kernel", "@njit"):
        assert marker in err, marker
    assert err.count("== IR ==") == 1  # once per compiled signature, not per call


@pytest.mark.parametrize("value", [None, "0"])
def test_jitnet_debug_off_prints_nothing(tmp_path, value):
    extra = {} if value is None else {"JITNET_DEBUG": value}
    proc = run_python(DEBUG_SCRIPT, tmp_path, **extra)
    assert "== IR ==" not in proc.stderr and "@njit" not in proc.stderr
    assert proc.stdout == ""


# ---- eager ops ----

A = jn.asarray(X)
EAGER_CASES = {
    "exp_numpy": (lambda: jn.exp(X), np.exp(X)),
    "add_array_numpy": (lambda: jn.add(A, X), X + X),
    "operators": (lambda: (A * 2 - 1) / 4, (X * 2 - 1) / 4),
    "matmul_operator": (lambda: A @ jn.asarray(W), X @ W),
    "comparison": (lambda: A > 0, X > 0),
    "getitem": (lambda: A[1:, ::-2], X[1:, ::-2]),
    "transpose": (lambda: A.T, X.T),
    "sum_method": (lambda: A.sum(axis=0), X.sum(axis=0)),
    "softmax": (lambda: jn.softmax(A, axis=0), np.exp(X) / np.exp(X).sum(axis=0)),
    "reshape": (lambda: jn.reshape(X, (2, 6)), X.reshape(2, 6)),
    "zeros": (lambda: jn.zeros((2, 3)), np.zeros((2, 3), np.float32)),
    "full": (lambda: jn.full((2,), 7, jn.int32), np.full(2, 7, np.int32)),
    "arange": (lambda: jn.arange(5), np.arange(5, dtype=np.int64)),
}


@pytest.mark.parametrize("name", sorted(EAGER_CASES))
def test_eager_ops_return_arrays(name):
    run, want = EAGER_CASES[name]
    got = run()
    assert isinstance(got, jn.Array)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
