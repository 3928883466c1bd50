"""`python -m bench.training [--compile] [bench options]`: the training-step workloads through the
suite; `--compile` then times the LeNet step's cold compile and first step (a fresh JITNET_CACHE_DIR)
and a second process's (the disk cache warm)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from bench.__main__ import main
from bench.runner import ROOT


def compile_once() -> None:
    """In a child process: build the LeNet train step and take one step; print the seconds."""
    import jitnet as jn
    from bench.train_steps import LENET_TRAIN_STEP, lenet_model

    inputs = LENET_TRAIN_STEP.make_inputs(False)
    t0 = time.perf_counter()
    jn.manual_seed(0)
    model = lenet_model(jn.nn)
    step = jn.nn.train_step(model, jn.nn.cross_entropy, jn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    float(step(inputs["x"], inputs["y"]))
    print(f"{time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--compile"]
    status = main(["--only", "mlp_train_step,lenet_train_step", *argv])
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, JITNET_CACHE_DIR=cache, PYTHONPATH=ROOT)
        cmd = [sys.executable, "-c", "from bench.training import compile_once; compile_once()"]
        for label in ("cold (empty cache)", "second process (disk cache)") if "--compile" in sys.argv else ():
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
            print(f"lenet_train_step compile + first step, {label}: {float(out):.2f} s")
    sys.exit(status)
