"""sin and cos over the whole float32 range on every backend (positional encodings take sines of
large arguments): a few ulp against numpy's float64 result rounded to float32; tan = sin / cos follows."""

import numpy as np

import jitnet as jn

FLT_MAX = float(np.finfo(np.float32).max)


def _sweep(n: int) -> np.ndarray:
    mag = np.geomspace(1e-30, FLT_MAX, n).astype(np.float32)
    return np.concatenate([mag, -mag, [0.0, 1e6, 1e7, -1e7, np.inf, -np.inf, np.nan]]).astype(np.float32)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in units of the float32 spacing at want (want: float64)."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


def test_sin_cos_tan_of_large_arguments(backend):
    x = _sweep(20_000 if backend == "cpu" else 300)  # the simulator is slow
    sin, cos, tan = (
        np.asarray(v) for v in jn.compile(lambda a: (jn.sin(a), jn.cos(a), jn.sin(a) / jn.cos(a)), backend=backend)(x)
    )
    x64 = x.astype(np.float64)
    finite = np.isfinite(x)
    assert np.isnan(sin[~finite]).all() and np.isnan(cos[~finite]).all()  # inf, NaN -> NaN
    for name, got in (("sin", sin), ("cos", cos)):
        err = _ulps(got[finite], getattr(np, name)(x64[finite]))
        worst = int(np.argmax(err))
        assert err[worst] <= 3, (name, x[finite][worst], got[finite][worst], err[worst])
    np.testing.assert_allclose(tan[finite], np.tan(x64[finite]), rtol=8 * 2.0**-24, atol=0)
