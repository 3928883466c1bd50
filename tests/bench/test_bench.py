"""A smoke run of the CPU benchmark suite: two small workloads, their rows timed, checked and written;
the train-step workloads on each device, their rows' models on the inputs' device."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives beside `jitnet`, not in the installed package
    sys.path.insert(0, str(ROOT))

ROW_KEYS = {"workload", "impl", "note", "shapes", "flops", "bytes", "cgma", "unit", "status", "max_error"}
ROW_KEYS |= {"error_kind", "tolerance", "median_ms", "min_ms", "max_ms", "median_us", "spread", "samples", "calls"}
ROW_KEYS |= {"build_s", "load", "gflops", "gbps", "floor_ms", "floor_frac"}
JITNET_KEYS = {"compile_s", "kernels", "kernel_kinds", "traces", "speedup_vs"}
DOC_KEYS = {"schema", "device", "timestamp", "quick", "argv", "machine", "copy_bandwidth", "definitions", "load"}
DOC_KEYS |= {"rows", "skipped", "targets", "failures", "wall_s"}


def test_quick_cpu_run_writes_checked_rows(tmp_path):
    from bench.__main__ import main

    out = tmp_path / "out.json"
    status = main(["--quick", "--repeat", "3", "--only", "call_overhead,sum_squares", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert status == 0 and doc["failures"] == 0
    assert set(doc) >= DOC_KEYS and doc["device"] == "cpu" and doc["copy_bandwidth"]["GBps"] > 0
    assert {r["workload"] for r in doc["rows"]} == {"call_overhead", "sum_squares"}
    for row in doc["rows"]:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["status"] == "ok" and row["max_error"] <= row["tolerance"] and row["samples"] == 3
        if row["impl"] == "jitnet":
            assert set(row) >= JITNET_KEYS and row["traces"] == 1
            assert all(isinstance(k, str) for k in row["kernel_kinds"])
        else:
            assert row["speedup"] > 0


TRAIN_STEPS = {"mlp_train_step": 128, "lenet_train_step": 64}  # on both devices
GPU_TRAIN_STEPS = {"mlp_train_step_b1024": 1024, "lenet_train_step_b512": 512}  # the GPU's larger batches


def test_train_steps_run_on_the_gpu_at_two_batches_and_on_the_cpu_at_one():
    from bench.__main__ import default, everything

    for device, expected in (("cuda", TRAIN_STEPS | GPU_TRAIN_STEPS), ("cpu", TRAIN_STEPS)):
        steps = {w.name: w for w in default(device) if "train_step" in w.name}
        assert set(steps) == set(expected), device
        for name, w in steps.items():
            assert [i.name for i in w.impls] == ["jitnet", "torch", "torch.compile"], (device, name)
            assert len(w.make_inputs(False)["x"]) == expected[name], (device, name)
            compiled = w.impl("torch.compile")
            assert compiled.requires == "torch.compile" and compiled.cold and compiled.note
            assert w.inner == (None if device == "cuda" else 1)
        assert set(GPU_TRAIN_STEPS).isdisjoint(everything(device)) == (device == "cpu")


def test_train_step_inputs_are_numpy_and_the_reference_is_the_first_loss():
    from bench.train_steps import GPU_WORKLOADS, WORKLOADS

    for w in WORKLOADS + GPU_WORKLOADS:
        inputs = w.make_inputs(True)
        assert all(isinstance(v, np.ndarray) for v in inputs.values()), w.name
        assert inputs["x"].dtype == np.float32 and inputs["y"].dtype.kind == "i"
    w = WORKLOADS[0]
    ref = w.reference(w.make_inputs(True))
    assert ref.shape == () and np.isfinite(ref) and ref > 0


def _tiny(nn):
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 10))


def _tiny_loss(x, y) -> float:
    """float64 cross entropy of `_tiny` with the train steps' parameters (their fixed seed)."""
    from bench.train_steps import _params

    p = {k: v.astype(np.float64) for k, v in _params(_tiny).items()}
    h = np.maximum(x @ p["0.weight"].T + p["0.bias"], 0) @ p["2.weight"].T + p["2.bias"]
    z = h - h.max(1, keepdims=True)
    return float(-(z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_jitnet_train_step_row_puts_the_model_on_the_inputs_device(backend):
    """The parameters and the momentum live where the inputs do; the loss (lr = 0) stays the first one."""
    import jitnet as jn
    from bench.train_steps import _jitnet_step

    g = np.random.default_rng(0)
    x, y = g.random((4, 6), dtype=np.float32), g.integers(0, 10, 4)
    run = _jitnet_step(_tiny, {"x": jn.asarray(x, device=backend), "y": jn.asarray(y, device=backend)})
    first, second = np.asarray(run()), np.asarray(run())
    step = run.func
    for tree in (step.model.parameters(), step.optimizer.state):
        assert all(a.device.kind == backend for a in jn.ir.pytree.flatten(tree)[0])
    np.testing.assert_allclose([first, second], _tiny_loss(x, y), rtol=1e-5)
    assert run.after()["traces"] == 1 and run.info["kernels"] > 0


def test_torch_train_step_rows_put_the_model_on_the_inputs_device():
    torch = pytest.importorskip("torch")
    from bench.train_steps import _torch_step

    g = np.random.default_rng(0)
    x, y = g.random((4, 6), dtype=np.float32), g.integers(0, 10, 4)
    run = _torch_step(_tiny, {"x": torch.from_numpy(x), "y": torch.from_numpy(y)})
    first, second = run(), run()
    assert first.device.type == "cpu" and torch.equal(first, second)
    np.testing.assert_allclose(first.item(), _tiny_loss(x, y), rtol=1e-5)


TRANSFORMER = ("gpt_train_step", "layer_norm_fwd_bwd", "causal_attention_fwd_bwd")


def test_transformer_workloads_run_by_name_on_either_device():
    from bench.__main__ import default, everything, select

    cpu, gpu = everything("cpu"), {k: ws[0] for k, ws in everything("cuda").items() if k in TRANSFORMER}
    assert set(TRANSFORMER) <= set(cpu) and set(TRANSFORMER) == set(gpu)
    for device in ("cpu", "cuda"):  # their cold compiles: by name only
        assert set(TRANSFORMER).isdisjoint(w.name for w in default(device))
        assert [w.name for w in select(device, "transformer")] == list(TRANSFORMER)
        assert [w.name for w in select(device, ",".join(TRANSFORMER))] == list(TRANSFORMER)
    assert gpu["gpt_train_step"].inner is None and cpu["gpt_train_step"][0].inner == 1
    for name in TRANSFORMER:
        for w in (cpu[name][0], gpu[name]):
            assert [i.name for i in w.impls] == ["jitnet", "torch", "torch.compile"], name
            compiled = w.impl("torch.compile")
            assert compiled.requires == "torch.compile" and compiled.cold and compiled.note
    assert gpu["gpt_train_step"].targets == {"beats": ("torch",)}  # on the GPU: at least torch eager


def test_gpt_train_step_is_the_examples_model_at_batch_16_by_128():
    from bench.transformer import GPT_TRAIN_STEP, GPTConfig, example, gpt_macs_per_token

    inputs = GPT_TRAIN_STEP.make_inputs(False)
    assert inputs["x"].shape == inputs["y"].shape == (16, 128) and inputs["x"].dtype.kind == "i"
    assert inputs["x"].min() >= 0 and inputs["x"].max() < GPTConfig().vocab
    assert GPT_TRAIN_STEP.flops(inputs) == 6 * 16 * 128 * gpt_macs_per_token(GPTConfig())
    assert "2048 / time" in GPT_TRAIN_STEP.description and GPT_TRAIN_STEP.gpu is not None
    assert example().__file__.endswith("examples/train_gpt.py")


def test_gpt_rows_give_the_float64_reference_loss():
    """A tiny configuration of the same workload: jitnet's and torch's steps (lr = 0) both return the
    float64 reference's loss, call after call; torch's twin loads jitnet's state_dict (strict)."""
    torch = pytest.importorskip("torch")
    from bench.transformer import GPTConfig, gpt_workload
    from bench.workload import error

    w = gpt_workload("tiny_gpt", GPTConfig(vocab=11, context=8, width=16, heads=2, layers=1, batch=3))
    inputs = w.make_inputs(True)
    ref = w.reference(inputs)
    assert ref.shape == () and np.isfinite(ref) and ref > 0
    run = w.impl("jitnet").make(inputs)
    first, second = run(), run()
    assert error(first, ref, "rel") < 1e-5 and error(second, ref, "rel") < 1e-5
    assert run.after()["traces"] == 1 and run.info["kernels"] > 0
    run = w.impl("torch").make({k: torch.from_numpy(v) for k, v in inputs.items()})
    first, second = run(), run()
    assert torch.equal(first, second) and error(first, ref, "rel") < 1e-5


def test_quick_layer_norm_and_attention_rows_match_their_references(tmp_path):
    pytest.importorskip("torch")
    from bench.__main__ import main

    out = tmp_path / "out.json"
    only = "layer_norm_fwd_bwd,causal_attention_fwd_bwd"
    status = main(["--quick", "--repeat", "3", "--only", only, "--json", str(out)])
    doc = json.loads(out.read_text())
    assert status == 0 and doc["failures"] == 0
    rows = {(r["workload"], r["impl"]): r for r in doc["rows"]}
    assert set(rows) == {(w, i) for w in only.split(",") for i in ("jitnet", "torch")}  # --quick: no torch.compile
    for row in rows.values():
        assert row["status"] == "ok" and row["max_error"] <= row["tolerance"] and row["floor_frac"] > 0
    skipped = {(s["workload"], s["impl"]) for s in doc["skipped"]}
    assert skipped == {(w, "torch.compile") for w in only.split(",")}
