"""Accuracy, IEEE edge cases and vectorisation of jitnet.backends.cpu.vmath."""

import importlib.util
import math
import re
from functools import cache

import numpy as np
import pytest
from numba import float32, njit

from jitnet.backends.cpu import vmath

F32_NAMES = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos", "acos", "erf"]

# Max error in ulp against the float64 result rounded to float32 (0 = correctly rounded).  Each bound is
# the maximum over an exhaustive run on all 2**32 float32 inputs (sin/cos: |x| < SIN_COS_ULP_RANGE, and
# a logarithmic sweep beyond, where the reduction is Payne-Hanek's).
ULP_BOUNDS = dict(exp=1, expm1=1, log=1, log1p=1, tanh=1, sigmoid=2, sin=2, cos=2, acos=1, erf=1)
SIN_COS_ULP_RANGE = 128.0  # exclusive

F32 = np.float32
INF = np.inf
NAN = np.nan
FLT_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)


# --- helpers ----------------------------------------------------------------


def _make_loop(f, fastmath):
    @njit(error_model="numpy", fastmath=fastmath)
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = f(x[i])

    return loop


@cache
def _loop(name, fastmath=False):
    return _make_loop(getattr(vmath, name), fastmath)


def _apply(name, x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _loop(name)(x, out)
    return out


def _make_all_loop(module, fastmath):
    """One loop applying every float32 function (in F32_NAMES order) from `module`."""
    f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 = (getattr(module, name + "_f32") for name in F32_NAMES)

    @njit(error_model="numpy", fastmath=fastmath)
    def loop(x, out):
        for i in range(x.shape[0]):
            v = x[i]
            out[0, i], out[1, i], out[2, i], out[3, i], out[4, i] = f0(v), f1(v), f2(v), f3(v), f4(v)
            out[5, i], out[6, i], out[7, i], out[8, i], out[9, i] = f5(v), f6(v), f7(v), f8(v), f9(v)

    return loop


@njit
def _call_all_f32(x):
    return (
        vmath.exp_f32(x),
        vmath.expm1_f32(x),
        vmath.log_f32(x),
        vmath.log1p_f32(x),
        vmath.tanh_f32(x),
        vmath.sigmoid_f32(x),
        vmath.sin_f32(x),
        vmath.cos_f32(x),
        vmath.acos_f32(x),
        vmath.erf_f32(x),
    )


@njit(error_model="numpy")
def _erf64(x, out):
    for i in range(x.shape[0]):
        out[i] = math.erf(x[i])


def _sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def _erf_ref(x):
    out = np.empty_like(x)
    _erf64(x, out)
    return out


REFERENCE = dict(exp=np.exp, expm1=np.expm1, log=np.log, log1p=np.log1p, tanh=np.tanh, sigmoid=_sigmoid64)
REFERENCE.update(sin=np.sin, cos=np.cos, acos=np.arccos, erf=_erf_ref)  # float64 in, float64 out


def _reference(name, x):
    with np.errstate(all="ignore"):
        return REFERENCE[name](x.astype(np.float64)).astype(np.float32)


def _ordinal(a):
    i = a.view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def _ulp_errors(y, ref):
    """Distance in float32 steps; NaN must match NaN exactly (reported as a huge error otherwise)."""
    d = np.abs(_ordinal(y) - _ordinal(ref))
    y_nan, r_nan = np.isnan(y), np.isnan(ref)
    d[y_nan & r_nan] = 0
    d[y_nan != r_nan] = 1 << 40
    return d


def _bit_range(lo, hi, n):
    """n float32 values evenly spaced in bit pattern over [lo, hi] (0 <= lo < hi), with their negatives."""
    b = np.linspace(F32(lo).view(np.int32), F32(hi).view(np.int32), n).astype(np.int32)
    v = b.view(np.float32)
    return np.concatenate([v, -v])


def _all_floats_strided(stride):
    """Every stride-th float32 bit pattern: covers subnormals, huge values, inf and NaNs."""
    return np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)


DENSE = {
    "exp": [(80.0, 89.0), (86.0, 105.0), (1e-8, 2.0)],
    "expm1": [(1e-10, 1.0), (0.3, 0.4), (15.0, 89.0)],
    "log": [(0.5, 2.0), (1e-45, 1e-37)],
    "log1p": [(1e-10, 0.1), (0.2, 0.9999999), (0.9, 4.0)],
    "tanh": [(1e-8, 1.0), (0.6, 0.65), (1.0, 10.0)],
    "sigmoid": [(1e-8, 20.0), (80.0, 110.0)],
    "sin": [(1e-8, 1.0), (1.0, SIN_COS_ULP_RANGE)],
    "cos": [(1e-8, 1.0), (1.0, SIN_COS_ULP_RANGE)],
    "acos": [(1e-8, 0.5), (0.49, 1.0)],
    "erf": [(1e-8, 1.0), (0.95, 4.5)],
}


def _sweep_inputs(name):
    parts = [_all_floats_strided(4099)] + [_bit_range(lo, hi, 200_000) for lo, hi in DENSE[name]]
    x = np.concatenate(parts)
    if name in ("sin", "cos"):
        x = x[(np.abs(x) < SIN_COS_ULP_RANGE) | ~np.isfinite(x)]
    return x


# --- accuracy ---------------------------------------------------------------


@pytest.mark.parametrize("name", F32_NAMES)
def test_f32_ulp_error(name):
    x = _sweep_inputs(name)
    y = _apply(name + "_f32", x)
    assert y.dtype == np.float32
    err = _ulp_errors(y, _reference(name, x))
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_BOUNDS[name], (name, x[worst], y[worst], err[worst])


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_over_the_whole_float32_range(name):
    """Payne-Hanek from 128 on: a few ulp up to FLT_MAX (was 8% off at 1e6 with Cody-Waite alone)."""
    mag = np.geomspace(SIN_COS_ULP_RANGE, FLT_MAX, 400_000).astype(np.float32)
    x = np.concatenate([mag, -mag, _all_floats_strided(1021)])
    x = x[np.isfinite(x)]
    y = _apply(name + "_f32", x)
    err = _ulp_errors(y, _reference(name, x))
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_BOUNDS[name], (name, x[worst], y[worst], err[worst])
    big = np.array([1e6, 1e7, -1e7, 3e38], np.float32)
    np.testing.assert_allclose(_apply(name + "_f32", big), getattr(np, name)(big.astype(np.float64)), atol=1e-7)


def test_f32_signatures_are_float32():
    for name in F32_NAMES:
        fn = getattr(vmath, name + "_f32")
        _apply(name + "_f32", np.zeros(4, np.float32))
        assert all(sig.return_type == float32 for sig in fn.nopython_signatures), name

    # float64 (or integer) arguments are converted to float32 on entry, not computed in float64.
    _call_all_f32(0.25)
    assert all(str(t) == "float32" for t in _call_all_f32.nopython_signatures[0].return_type.types)


# --- IEEE edge cases --------------------------------------------------------

# fmt: off
SPECIAL = {
    "exp": [(NAN, NAN), (-INF, 0.0), (INF, INF), (0.0, 1.0), (-0.0, 1.0), (89.0, INF), (FLT_MAX, INF),
            (-FLT_MAX, 0.0), (-104.0, 0.0), (88.72283, float(F32(math.exp(float(F32(88.72283)))))),
            (-100.0, float(F32(math.exp(-100.0))))],  # the largest finite result; a subnormal one
    "expm1": [(NAN, NAN), (-INF, -1.0), (INF, INF), (0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-TINY, -TINY),
              (-FLT_MAX, -1.0), (FLT_MAX, INF), (89.0, INF), (1e-30, 1e-30)],
    "log": [(NAN, NAN), (-1.0, NAN), (-INF, NAN), (-TINY, NAN), (0.0, -INF), (-0.0, -INF), (INF, INF), (1.0, 0.0),
            (TINY, -103.27893), (FLT_MAX, 88.72284)],
    "log1p": [(NAN, NAN), (-1.0, -INF), (-2.0, NAN), (-INF, NAN), (INF, INF), (0.0, 0.0), (-0.0, -0.0),
              (TINY, TINY), (-TINY, -TINY), (FLT_MAX, 88.72284), (1e-30, 1e-30)],
    "tanh": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0), (20.0, 1.0), (-20.0, -1.0),
             (FLT_MAX, 1.0), (-FLT_MAX, -1.0), (TINY, TINY), (-TINY, -TINY)],
    "sigmoid": [(NAN, NAN), (-INF, 0.0), (INF, 1.0), (0.0, 0.5), (-0.0, 0.5), (-FLT_MAX, 0.0), (FLT_MAX, 1.0),
                (50.0, 1.0)],
    "sin": [(NAN, NAN), (INF, NAN), (-INF, NAN), (0.0, 0.0), (-0.0, -0.0), (TINY, TINY), (-TINY, -TINY)],
    "cos": [(NAN, NAN), (INF, NAN), (-INF, NAN), (0.0, 1.0), (-0.0, 1.0), (TINY, 1.0)],
    "acos": [(NAN, NAN), (1.0, 0.0), (-1.0, F32(math.pi)), (0.0, F32(math.pi / 2)), (-0.0, F32(math.pi / 2)),
             (1.0000001, NAN), (-1.0000001, NAN), (INF, NAN), (-INF, NAN), (2.0, NAN)],
    "erf": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0), (4.0, 1.0), (-10.0, -1.0),
            (TINY, TINY), (-TINY, -TINY)],
}
# fmt: on


@pytest.mark.parametrize("name", F32_NAMES)
def test_f32_special_values(name):
    x = np.array([v for v, _ in SPECIAL[name]], np.float32)
    want = np.array([w for _, w in SPECIAL[name]], np.float32)
    got = _apply(name + "_f32", x)
    for xi, g, w in zip(x, got, want):
        if np.isnan(w):
            assert np.isnan(g), (name, xi, g)
        else:
            assert g == w or abs(g - w) <= 4 * np.spacing(w), (name, xi, g, w)
            assert np.signbit(g) == np.signbit(w), (name, xi, g, w)


def test_exp_gradual_underflow_is_correctly_rounded():
    x = _bit_range(87.3, 103.97, 100_000)
    x = x[x < 0]
    err = _ulp_errors(_apply("exp_f32", x), _reference("exp", x))
    assert err.max() <= 1


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "erf", "exp", "expm1"])
def test_no_nan_for_finite_input(name):
    x = _all_floats_strided(521)
    x = x[np.isfinite(x)]
    assert not np.isnan(_apply(name + "_f32", x)).any()


# --- float64 ----------------------------------------------------------------


@pytest.mark.parametrize("name", F32_NAMES)
def test_f64_matches_numpy(name):
    x = np.concatenate([np.linspace(-30, 30, 20001), [0.0, -0.0, INF, -INF, NAN, 1e-300, -1e-300, 1e300, -1e300]])
    if name == "acos":
        x = np.concatenate([x, np.linspace(-1, 1, 2001)])
    got = _apply(name + "_f64", x)
    assert got.dtype == np.float64
    with np.errstate(all="ignore"):
        want = REFERENCE[name](x)
    np.testing.assert_array_max_ulp(got, want, maxulp=4)


def test_sigmoid_f64_no_overflow():
    x = np.array([-1000.0, -745.0, -FLT_MAX, -INF, INF, 1000.0])
    got = _apply("sigmoid_f64", x)
    assert np.array_equal(got, [0.0, _sigmoid64(np.float64(-745.0)), 0.0, 0.0, 1.0, 1.0])
    x = np.logspace(-300, 308, 1001)
    assert not np.isnan(_apply("sigmoid_f64", np.concatenate([-x, x]))).any()


# --- code generation --------------------------------------------------------


@pytest.mark.parametrize("name", F32_NAMES)
def test_f32_loop_vectorises_and_inlines(name):
    loop = _loop(name + "_f32")
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    loop(x, np.empty_like(x))
    ir = loop.inspect_llvm(loop.signatures[0])
    assert re.search(r"<(4|8|16) x float>", ir), f"{name}_f32 loop did not vectorise"
    assert not re.search(rf"call [^\n]*{name}_f32", ir), f"{name}_f32 was not inlined"
    if name not in ("sin", "cos"):  # their Payne-Hanek reduction ends with a float64 product
        assert not re.search(r"\bdouble\b", ir), f"{name}_f32 computes in float64"


@pytest.mark.parametrize("fastmath", [{"reassoc"}, True], ids=["reassoc", "all-fastmath"])
def test_fastmath_callers_get_bit_identical_results(fastmath):
    # A fresh copy of the module, so the helpers' first compilation is triggered by a fastmath caller:
    # numba would let a helper inherit the caller's fastmath flags (for every later caller too) unless
    # the helper pins its own.
    spec = importlib.util.spec_from_file_location("_vmath_fresh", vmath.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    x = np.concatenate([_all_floats_strided(65521), np.linspace(-20, 20, 4001, dtype=np.float32)])
    fast = np.empty((len(F32_NAMES), x.size), np.float32)
    _make_all_loop(fresh, fastmath)(x, fast)
    for k, name in enumerate(F32_NAMES):
        strict = _apply(name + "_f32", x)
        assert np.array_equal(fast[k].view(np.int32), strict.view(np.int32)), name
        f = getattr(fresh, name + "_f32")
        for sig in f.signatures:
            assert not re.search(r"\b(reassoc|fast|contract|nnan|ninf|nsz|arcp|afn)\b", f.inspect_llvm(sig)), name
