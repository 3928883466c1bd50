"""A first look at jitnet: compile a tanh-GELU over 2**24 floats into one fused kernel and time it
against numpy doing the same work (until the training scripts land, this is the README's main job)."""

from __future__ import annotations

import time

import numpy as np

import jitnet as jn


def gelu(x):
    return 0.5 * x * (1.0 + jn.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


def gelu_numpy(x, out, tmp):
    np.multiply(x, x, out=tmp)
    np.multiply(tmp, x, out=tmp)
    np.multiply(tmp, 0.044715, out=tmp)
    np.add(tmp, x, out=tmp)
    np.multiply(tmp, 0.7978845608, out=tmp)
    np.tanh(tmp, out=tmp)
    np.add(tmp, 1.0, out=tmp)
    np.multiply(tmp, x, out=out)
    np.multiply(out, 0.5, out=out)
    return out


def median_ms(fn, *args, repeat: int = 15) -> float:
    fn(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    x = np.random.default_rng(0).standard_normal(2**24).astype(np.float32)
    fused = jn.compile(gelu)
    start = time.perf_counter()
    y = fused(x)
    print(
        f"traced, fused and compiled in {time.perf_counter() - start:.2f} s "
        f"({len(fused.lower(x).schedule.kernels)} kernel)"
    )
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * (1.0 + np.tanh(0.7978845608 * (x64 + 0.044715 * x64**3)))
    print(f"max error vs float64: {np.abs(np.asarray(y) - exact).max():.2e}")
    out, tmp = np.empty_like(x), np.empty_like(x)
    t_jit, t_np = median_ms(fused, x), median_ms(gelu_numpy, x, out, tmp)
    print(f"tanh-GELU over 2**24 float32: jitnet {t_jit:.2f} ms, numpy {t_np:.2f} ms, speedup {t_np / t_jit:.1f}x")


if __name__ == "__main__":
    main()
