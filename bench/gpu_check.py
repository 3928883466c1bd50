"""One command for a lent GPU machine: validate the CUDA backend, then run the GPU benchmarks.

    python -m bench.gpu_check                  # validate at real sizes, then python -m bench --device cuda
    python -m bench.gpu_check --quick          # the same with the bench's --quick sizes
    python -m bench.gpu_check --tests          # also run the CUDA pytest modules (-m "cuda or gpu") first
    python -m bench.gpu_check --validate-only  # only the validation
    NUMBA_ENABLE_CUDASIM=1 python -m bench.gpu_check --validate-only   # a dry run on numba's simulator

(`python bench/gpu_check.py ...` works too.) Validation compiles a few functions for CUDA and checks
them against the numpy reference interpreter: fused elementwise with broadcasting and views,
reductions over each axis, the split (two-kernel) path of long reductions with one and with several
outputs, row-wise softmax/log_softmax, a value_and_grad program, int/bool dtypes, and (on a GPU)
zero-copy export through `__cuda_array_interface__`. On a GPU the shapes are large (millions of
elements); on the simulator they are tiny. Without a GPU and without the simulator it says so and
exits 0; under the simulator the benchmarks are skipped (their timings would mean nothing).
Exit status: 1 if a validation case or the bench failed, else 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: make `jitnet` and `bench` importable from the checkout
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

F32 = np.float32


@dataclass
class Case:
    name: str
    fn: Callable
    args: Callable[[bool], tuple]  # big -> arguments
    rtol: float = 1e-5
    atol: float = 1e-6
    split: bool = False  # the long reductions must take the two-kernel split path


def _rng():
    return np.random.default_rng(0)


def _randn(*shape):
    return _rng().standard_normal(shape, dtype=F32)


def _gelu(x):
    import jitnet as jn

    return 0.5 * x * (1 + jn.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


def _loss(x, w, b, y):
    import jitnet as jn

    h = jn.tanh(x @ w + b)
    return -(jn.log_softmax(h, axis=1) * jn.one_hot(y, w.shape[1])).sum() / x.shape[0] + (w * w).sum() * 1e-3


def _cases() -> list[Case]:
    import jitnet as jn

    def vg(x, w, b, y):
        return jn.value_and_grad(_loss, argnums=(1, 2))(x, w, b, y)

    def vg_args(big):
        n, d, k = (2048, 256, 10) if big else (8, 6, 3)
        rng = _rng()
        x = rng.standard_normal((n, d), dtype=F32)
        w = rng.standard_normal((d, k), dtype=F32) * F32(0.1)
        return x, w, rng.standard_normal(k, dtype=F32), rng.integers(0, k, n).astype(np.int32)

    def masked_args(big):
        n = 2**20 if big else 300
        return _rng().integers(-1000, 1000, n).astype(np.int32), _randn(n)

    return [
        Case("elementwise gelu", _gelu, lambda big: (_randn(2**22 if big else 1000),), rtol=2e-5),
        Case(
            "broadcast row/column + views",
            lambda x, r, c: (jn.maximum(x * r + c, 0.0), x.T[::2] * 2, jn.pad(x, ((1, 0), (0, 2)))),
            lambda big: (
                _randn(*((2048, 1024) if big else (5, 37))),
                _randn(1024 if big else 37),
                _randn(*((2048, 1) if big else (5, 1))),
            ),
            atol=1e-3,
        ),
        Case(
            "reductions over each axis",
            lambda x: (x.sum(1), x.max(0), jn.argmax(x, 1), jn.logsumexp(x, 1), x.mean(0, keepdims=True) * 2 + 1),
            lambda big: (_randn(*((1024, 1000) if big else (4, 9))),),
            rtol=2e-5,
            atol=1e-5,
        ),
        Case(
            "split: whole-vector sum/max/min + epilogue",
            lambda v: (v.sum(), v.max(), v.min(), (v * v).sum() * 0.5 + 1),
            lambda big: (_randn(2**24 if big else 3000),),
            atol=1e-4,
            split=True,
        ),
        Case(
            "split: several outputs (row sums, column max)",
            lambda x: (x.sum(1) * 2, x.T.max(0)),
            lambda big: (_randn(*((64, 2**17) if big else (1, 1000))),),
            atol=1e-4,
            split=True,
        ),
        Case(
            "softmax / log_softmax rows + epilogue",
            lambda x: (jn.softmax(x, axis=-1) * 2, jn.log_softmax(x, axis=1) - 1),
            lambda big: (_randn(*((4096, 1024) if big else (4, 40))),),
            rtol=2e-5,
            atol=1e-5,
        ),
        Case("value_and_grad (matmul via host, log_softmax)", vg, vg_args, rtol=1e-4, atol=1e-5),
        Case(
            "int32 and bool",
            lambda a, x: (a * 3 + 1, (a > 0).sum(), jn.where(a > 0, x, -x), a.max()),
            masked_args,
        ),
    ]


def _compare(got, want, rtol: float, atol: float) -> float:
    """Max abs error over the leaves; raises AssertionError on a mismatch."""
    import jitnet as jn

    g_leaves, g_tree = jn.ir.pytree.flatten(got)
    w_leaves, w_tree = jn.ir.pytree.flatten(want)
    assert g_tree == w_tree, f"structure {g_tree} != {w_tree}"
    worst = 0.0
    for g, w in zip(g_leaves, w_leaves):
        assert isinstance(g, jn.Array) and g.device.kind == "cuda", f"result not on the GPU: {type(g)}"
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{g.shape} {g.dtype} != {w.shape} {w.dtype}"
        if g.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            if g.size:
                d = np.abs(g.astype(np.float64) - w.astype(np.float64))
                worst = max(worst, float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
        else:
            np.testing.assert_array_equal(g, w)
    return worst


def _check_cai(log) -> bool:
    """A device Array exported to numba through __cuda_array_interface__ shares its memory."""
    from numba import cuda

    import jitnet as jn

    x = _randn(1000, 3)
    a = jn.asarray(x, device="cuda")
    d = cuda.as_cuda_array(a)
    same = d.__cuda_array_interface__["data"][0] == a.buffer().device_ctypes_pointer.value
    equal = np.array_equal(d.copy_to_host(), x)
    log(
        f"  {'ok  ' if same and equal else 'FAIL'} __cuda_array_interface__ -> numba.cuda.as_cuda_array: zero-copy {same}"
    )
    return bool(same and equal)


def validate(big: bool, log) -> tuple[int, int]:
    """(passed, total) over the cases."""
    import jitnet as jn
    from jitnet.backends.cuda import kernels

    log(
        f"validation ({'GPU sizes' if big else 'tiny simulator sizes'}; block {kernels.BLOCK}, "
        f"max blocks {kernels.MAX_BLOCKS}, split from {kernels.SPLIT_MIN} elements per output)"
    )
    passed = total = 0
    for case in _cases():
        total += 1
        t0 = time.perf_counter()
        try:
            args = case.args(big)
            f = jn.compile(case.fn, backend="cuda")
            got = f(*args)
            want = jn.compile(case.fn, backend="interpret")(*args)
            err = _compare(got, want, case.rtol, case.atol)
            kinds = [k.kind for k in f.lower(*args).schedule.kernels]
            source = f.inspect(*args)
            split = "def partial(" in source
            if case.split and not split:
                raise AssertionError("expected the split (two-kernel) reduction path, got one kernel per output")
            note = f"kernels {kinds}" + (", split path" if split else "")
            log(f"  ok   {case.name}: max abs err {err:.1e}, {note} ({time.perf_counter() - t0:.1f} s)")
            passed += 1
        except Exception as e:
            log(f"  FAIL {case.name}: {type(e).__name__}: {str(e)[:400]}")
            log("       " + traceback.format_exc().strip().splitlines()[-1][:300])
    if big:
        total += 1
        try:
            passed += _check_cai(log)
        except Exception as e:
            log(f"  FAIL __cuda_array_interface__: {type(e).__name__}: {e}")
    return passed, total


def _run(cmd: list[str], log) -> int:
    log("$ " + " ".join(cmd))
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def _latest_result(since: float) -> dict | None:
    paths = [
        p for p in glob.glob(os.path.join(ROOT, "bench", "results", "cuda-*.json")) if os.path.getmtime(p) >= since
    ]
    if not paths:
        return None
    with open(max(paths, key=os.path.getmtime)) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--validate-only", action="store_true", help="validate the CUDA backend, do not benchmark")
    p.add_argument("--quick", action="store_true", help="pass --quick to the bench")
    p.add_argument("--tests", action="store_true", help='also run pytest -m "cuda or gpu" on the CUDA test modules')
    args = p.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    from jitnet.runtime.device import cuda_available, simulator

    sim, usable = simulator(), cuda_available()
    if not usable:
        log(
            "gpu_check: no usable CUDA GPU (numba.cuda.is_available() is False: no GPU, no driver, or the 'cuda' "
            "extra is missing); nothing validated or benchmarked. For a dry run of the validation on numba's "
            "simulator: NUMBA_ENABLE_CUDASIM=1 python -m bench.gpu_check --validate-only"
        )
        return 0
    log(f"gpu_check: {'numba CUDA simulator (tiny shapes; no benchmarks)' if sim else 'real GPU'}")
    t0 = time.perf_counter()
    summary = []
    ok = True

    passed, total = validate(big=not sim, log=log)
    summary.append(f"validation: {passed}/{total} ok")
    ok &= passed == total

    if args.tests:
        paths = ["tests/backends/cuda", "tests/runtime/test_cuda_device.py"]
        rc = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda or gpu", *paths], log)
        summary.append(f"pytest -m 'cuda or gpu': exit {rc}")
        ok &= rc == 0

    if args.validate_only:
        pass
    elif sim:
        summary.append("bench: skipped under the simulator (timings would be meaningless)")
    else:
        start = time.time()
        rc = _run([sys.executable, "-m", "bench", "--device", "cuda", *(["--quick"] if args.quick else [])], log)
        summary.append(f"bench: exit {rc}")
        ok &= rc == 0
        doc = _latest_result(start - 1)
        if doc is not None:
            bw = doc["copy_bandwidth"]
            summary.append(f"  copy floor {bw['GBps']:.0f} GB/s ({bw['method']}) on {doc['machine'].get('gpu', '?')}")
            for r in doc["rows"]:
                if r["impl"] == "jitnet" and "median_ms" in r:
                    t = f"{r['median_us']:.1f} us" if r["unit"] == "us" else f"{r['median_ms']:.3f} ms"
                    summary.append(f"  {r['workload']}: jitnet {t}, floor {100 * r['floor_frac']:.0f}%, {r['status']}")
            for t in doc["targets"]:
                summary.append(
                    f"  target {t['workload']} {t['target']}: {'met' if t['met'] else 'MISS'} ({t['detail']})"
                )

    log("")
    log(f"== gpu_check summary ({time.perf_counter() - t0:.0f} s) ==")
    for line in summary:
        log(line)
    log("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
