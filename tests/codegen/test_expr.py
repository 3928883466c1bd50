"""The op table's scalar emitters, rendered by each backend's dialect: the exact source they write
(the kernel cache is keyed by source) and, where the expression is plain Python, its value against
the op's numpy reference."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from jitnet.backends.cpu.dialect import DIALECT as CPU
from jitnet.backends.cuda import dialect as cuda_dialect
from jitnet.codegen.expr import Dialect
from jitnet.ir import dtypes
from jitnet.ir.opdefs import OPS, Kind

CUDA = cuda_dialect.DIALECT
f32, f64, i64 = dtypes.float32, dtypes.float64, dtypes.int64


def scalar(dialect: Dialect, op: str, args: list[str], in_dtype, out_dtype=None, **attrs) -> str:
    return OPS[op].scalar(dialect, args, attrs, np.dtype(in_dtype), np.dtype(out_dtype or in_dtype))


def evaluate(expr: str, **values):
    """The rendered expression run as Python on numpy scalars (what the CUDA simulator does)."""
    return eval(expr, {"np": np, "math": math}, values)


def test_every_elementwise_op_has_a_callable_emitter():
    for name, op in OPS.items():
        assert callable(op.scalar) == (op.kind == Kind.ELEMENTWISE), name


def test_literal_in_the_ops_dtype():
    assert scalar(CPU, "reciprocal", ["x"], f32) == "(np.float32(1.0) / x)"
    assert scalar(CPU, "relu", ["x"], i64) == "(np.int64(0) if x < np.int64(0) else x)"
    assert scalar(CPU, "relu", ["x"], f64) == "(np.float64(0.0) if x < np.float64(0.0) else x)"
    # attributes become literals of the input's dtype, inf and NaN included
    assert scalar(CPU, "leaky_relu", ["x"], f32, slope=0.01) == ("(x * np.float32(0.01) if x < np.float32(0.0) else x)")
    assert "np.float64(-np.inf)" in scalar(CPU, "leaky_relu", ["x"], f64, slope=-math.inf)
    assert "np.float32(np.nan)" in scalar(CPU, "elu", ["x"], f32, alpha=math.nan)


def test_math_functions_spelled_per_dialect():
    assert scalar(CPU, "exp", ["x"], f32) == "vm.exp_f32(x)"
    assert scalar(CPU, "exp", ["x"], f64) == "vm.exp_f64(x)"
    assert scalar(CUDA, "exp", ["x"], f32) in ("math.exp(x)", "np.exp(x)")  # np.exp in the simulator
    assert scalar(CUDA, "sigmoid", ["x"], f64) == "dm.sigmoid_f64(x)"
    assert scalar(CPU, "rsqrt", ["x"], f32) == "(np.float32(1.0) / np.sqrt(x))"
    assert scalar(CPU, "elu", ["x"], f64, alpha=0.5) == (
        "(x if x > np.float64(0.0) else np.float64(0.5) * vm.expm1_f64(x))"
    )
    assert scalar(CPU, "abs", ["x"], i64) == scalar(CUDA, "abs", ["x"], i64) == "abs(x)"


def test_a_dialect_without_a_spelling_says_so():
    with pytest.raises(NotImplementedError, match="'exp'"):
        scalar(Dialect(), "exp", ["x"], f32)


def test_select_and_cast():
    assert scalar(CPU, "where", ["c", "a", "b"], f32) == "(a if c else b)"
    assert scalar(CUDA, "cast", ["x"], f32, i64) == "np.int64(x)"
    assert scalar(CPU, "cast", ["x"], i64, dtypes.bool_) == "bool(x)"


def test_maximum_minimum_per_dialect():
    assert scalar(CPU, "maximum", ["a", "b"], f32) == "fmaximum(a, b)"  # an LLVM intrinsic
    assert scalar(CPU, "minimum", ["a", "b"], i64) == "min(a, b)"
    assert scalar(CUDA, "maximum", ["a", "b"], f32) == "(a if (a >= b or a != a) else b)"
    values = np.array([-2.0, 0.0, 3.5, np.nan], np.float32)
    for op in ("maximum", "minimum"):
        expr = scalar(CUDA, op, ["a", "b"], f32)
        for a in values:
            for b in values:
                want = OPS[op].ref(a, b)
                got = evaluate(expr, a=a, b=b)
                assert (np.isnan(got) and np.isnan(want)) or got == want, (op, a, b)


@pytest.mark.parametrize("dtype", [f32, i64])
def test_sign(dtype):
    expr = scalar(CPU, "sign", ["x"], dtype)
    for x in np.array([-3, -0.5, 0, 2.5, 7], np.float64).astype(dtype):
        got = evaluate(expr, x=x)
        assert got == OPS["sign"].ref(x) and np.asarray(got).dtype == dtype, x
    if dtype == f32:
        assert np.isnan(evaluate(expr, x=np.float32(np.nan)))


def test_pow_for_ints_is_exact_with_the_truncated_reciprocal():
    expr = scalar(CPU, "pow", ["a", "b"], i64)
    assert expr.startswith("(np.int64(a ** b) if b >= np.int64(0) else ")
    assert scalar(CPU, "pow", ["a", "b"], f32) == "(a ** b)"
    grid = np.arange(-3, 4, dtype=np.int64)
    a, b = np.meshgrid(grid, grid)
    want = OPS["pow"].ref(a, b)
    got = np.array([evaluate(expr, a=x, b=y) for x, y in zip(a.ravel(), b.ravel())]).reshape(a.shape)
    np.testing.assert_array_equal(got, want)


def test_mix32_matches_its_reference():
    attrs = {"shift": 16, "lo": 0xEBCA, "hi": 0x85EB}
    expr = scalar(CUDA, "mix32", ["x", "k"], i64, **attrs)
    assert expr == scalar(CPU, "mix32", ["x", "k"], i64, **attrs)
    assert expr == (
        "((((((x ^ k) & 4294967295) ^ (((x ^ k) & 4294967295) >> 16)) * 60362) + ((((((x ^ k) & 4294967295)"
        " ^ (((x ^ k) & 4294967295) >> 16)) * 34283) & 65535) << 16)) & 4294967295)"
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**40, 64, dtype=np.int64)
    k = rng.integers(0, 2**32, 64, dtype=np.int64)
    got = np.array([evaluate(expr, x=a, k=b) for a, b in zip(x, k)])
    np.testing.assert_array_equal(got, OPS["mix32"].ref(x, k, **attrs))


def test_codegen_and_op_table_parse_no_text():
    """The emitters build source from parts; nothing re-parses it (and the op table imports nothing
    from the tracing layer above it, not even inside a function)."""
    root = Path(__file__).resolve().parents[2] / "jitnet"
    expr_imports = _imported_modules(root / "codegen" / "expr.py")
    assert "re" not in expr_imports
    assert not any(m.startswith("jitnet.ir.trace") for m in _imported_modules(root / "ir" / "opdefs.py"))


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
