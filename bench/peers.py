"""The peers jitnet is compared with, and whether each can run here.

- numpy: always; single-threaded ufuncs (BLAS may thread for np.dot).
- numexpr: `ne.evaluate(..., out=preallocated)` with ne.set_num_threads(2).
- torch: eager CPU ops on `torch.from_numpy` views, torch.set_num_threads(2).
- torch.compile (inductor): needs a working C++ toolchain and can take long to compile cold, so it
  is first tried in a child process (`python -m bench.peers probe WORKLOAD IMPL`) under a time
  limit; only if that succeeds is it compiled in the benchmark process (inductor's on-disk cache
  makes that second compile fast). Otherwise the row is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import cache

THREADS = 2  # the machine's cores; every multi-threaded peer gets the same


@cache
def numexpr():
    """The numexpr module, set to THREADS threads, or None."""
    try:
        import numexpr as ne
    except Exception:
        return None
    ne.set_num_threads(THREADS)
    return ne


@cache
def torch():
    """The torch module, set to THREADS intra-op threads, or None."""
    try:
        import torch as t
    except Exception:
        return None
    t.set_num_threads(THREADS)
    return t


def available(requires: str | None) -> bool:
    if requires is None or requires == "numpy":
        return True
    if requires == "numexpr":
        return numexpr() is not None
    if requires in ("torch", "torch.compile"):
        return torch() is not None
    raise ValueError(f"unknown peer requirement {requires!r}")


def probe(workload: str, impl: str, quick: bool, timeout_s: float) -> tuple[bool, str]:
    """Build and call one implementation in a child process; (ok, why-not or timing note)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "bench.peers", "probe", workload, impl] + (["--quick"] if quick else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"did not compile within {timeout_s:.0f} s (probe in a child process)"
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr or out.stdout).strip().splitlines() if ln.strip()]
        last = lines[-1][:200] if lines else f"exit code {out.returncode}"
        return False, f"failed in probe: {last}"
    return True, f"probe compiled and ran in {dt:.1f} s"


def _probe_main(argv: list[str]) -> int:
    from bench.workloads import REGISTRY

    workload, impl = argv[0], argv[1]
    quick = "--quick" in argv
    w = REGISTRY[workload]
    inputs = w.make_inputs(quick)
    fn = w.impl(impl).make(inputs)
    fn()
    fn()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "probe":
        sys.exit(_probe_main(sys.argv[2:]))
    print("usage: python -m bench.peers probe WORKLOAD IMPL [--quick]", file=sys.stderr)
    sys.exit(2)
