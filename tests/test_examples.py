"""The training scripts of examples/ run end to end (a short run each: the accuracy targets need the
default epochs, see the README), print their per-epoch figures and write their checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import jitnet as jn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("script", ["train_mlp.py", "train_lenet.py"])
def test_training_script(script, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    out = run(script, "--epochs", "2", "--quiet", "--checkpoint", str(checkpoint), cwd=tmp_path)
    assert "epoch 2: loss" in out and "samples/s" in out and "test accuracy" in out
    state = jn.load(str(checkpoint))
    assert any(key.endswith("weight") for key in state)


def test_perceptron(tmp_path):
    out = run("perceptron.py", "--iterations", "5", cwd=tmp_path)
    assert "loss" in out and "accuracy" in out
