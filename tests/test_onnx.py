"""jn.onnx.export: exported models and functions run in onnxruntime and agree with jitnet."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import jitnet as jn
from jitnet import nn
from jitnet.ir import opdefs, pytree
from jitnet.ir.trace import apply, lift

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_RNG = np.random.default_rng(0)


def _data(*shape) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _run_onnx(path, args) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    leaves = pytree.flatten(list(args))[0]
    return session.run(None, {i.name: np.asarray(a) for i, a in zip(session.get_inputs(), leaves)})


def _check(fn, *args, tmp_path, backend: str | None = None, **options):
    """Export fn, run it in onnxruntime and compare with jitnet (compiled for `backend`, the default
    one unless said) to 1e-5: same outputs, shapes and dtypes. Returns the ModelProto."""
    path = tmp_path / "model.onnx"
    model = jn.onnx.export(fn, args, str(path), **options)
    got = _run_onnx(path, args)
    want = pytree.flatten(jn.compile(lambda *a: fn(*a), backend=backend)(*args))[0]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert (g.shape, g.dtype) == (w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return model


def _initializer_names(model) -> set[str]:
    return {t.name for t in model.graph.initializer if not t.name.startswith("const_")}


# ---- models ----


def test_mlp_runs_in_onnxruntime_with_parameters_named_as_the_state_dict(tmp_path):
    jn.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())
    exported = _check(model, _data(4, 12), tmp_path=tmp_path)
    assert _initializer_names(exported) == set(model.state_dict())
    for t in exported.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), model.state_dict()[t.name].numpy())
    assert [o.version for o in exported.opset_import] == [jn.onnx.OPSET]


def test_lenet(tmp_path):
    """LeNet as examples/train_lenet.py builds it for 8x8 digits, narrower."""
    jn.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(8 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 10),
    ).eval()
    exported = _check(model, _data(2, 1, 8, 8), tmp_path=tmp_path)
    assert _initializer_names(exported) == set(model.state_dict())
    assert {"Conv", "MaxPool", "MatMul"} <= {n.op_type for n in exported.graph.node}


def test_batchnorm_and_dropout_export_in_eval_mode_and_training_is_restored(tmp_path):
    jn.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 4)
    )
    model[1].load_state_dict(
        {"weight": _data(3), "bias": _data(3), "running_mean": _data(3), "running_var": 1 + _data(3) ** 2}
        | {"num_batches_tracked": np.array(5)}
    )
    model.train()
    x = _data(2, 2, 4, 4)
    exported = jn.onnx.export(model, x, str(tmp_path / "bn.onnx"))
    assert all(m.training for _, m in model.named_modules())
    model.eval()
    _check(model, x, tmp_path=tmp_path)
    assert _initializer_names(exported) == set(model.state_dict()) - {"1.num_batches_tracked"}
    assert "RandomUniform" not in {n.op_type for n in exported.graph.node}


def test_embedding_gathers_with_negative_and_clamped_indices(tmp_path):
    jn.manual_seed(3)
    model = nn.Sequential(nn.Embedding(10, 6), nn.Flatten(), nn.Linear(18, 2))
    indices = np.array([[0, 9, -1], [3, 3, 12]], np.int64)  # -1 counts from the end, 12 clamps to 9
    exported = _check(model, indices, tmp_path=tmp_path)
    assert "Gather" in {n.op_type for n in exported.graph.node}
    assert _initializer_names(exported) == set(model.state_dict())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_layer_norm_and_gelu(tmp_path, approximate):
    jn.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU(approximate), nn.Linear(8, 2))
    model[1].load_state_dict({"weight": _data(8), "bias": _data(8)})
    exported = _check(model, _data(2, 3, 8), tmp_path=tmp_path)
    assert _initializer_names(exported) == set(model.state_dict())


class _SelfAttention(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

    def forward(self, x):
        return self.attn(x, x, x, is_causal=True)


def test_multihead_self_attention_with_both_outputs(tmp_path):
    jn.manual_seed(5)
    model = _SelfAttention(batch_first=False)
    exported = _check(model, _data(3, 2, 8), tmp_path=tmp_path, output_names=["out", "weights"])
    assert [o.name for o in exported.graph.output] == ["out", "weights"]
    assert _initializer_names(exported) == set(model.state_dict())


def test_cross_attention_and_scaled_dot_product_attention(tmp_path):
    """Batch-first, against the interpreter (the compiled attention is checked just above)."""
    jn.manual_seed(6)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mask = np.tril(np.ones((3, 4), bool))

    def fn(q, kv):
        out = mha(q, kv, kv, need_weights=False)[0]
        return out + jn.scaled_dot_product_attention(q, kv, kv, mask=mask)

    exported = _check(fn, _data(2, 3, 8), _data(2, 4, 8), tmp_path=tmp_path, backend="interpret")
    assert {t.name for t in exported.graph.initializer} >= {f"capture_{i}" for i in range(4)}


# ---- functions ----


def test_fused_elementwise_function_with_broadcasting(tmp_path):
    def fn(x, y, s):
        z = jn.where(x > y, jn.exp(x) * jn.tanh(y), jn.maximum(x, y) - jn.minimum(x, 0.5))
        return z / (1.0 + jn.abs(y)) + jn.sigmoid(x * s) ** 2

    exported = _check(fn, _data(3, 4), _data(4), 1.5, tmp_path=tmp_path, input_names=["x", "y", "s"])
    assert [i.name for i in exported.graph.input] == ["x", "y", "s"]


def test_reductions_and_softmax(tmp_path):
    def fn(x):
        return (
            x.sum(),
            x.sum(1, keepdims=True),
            x.mean((0, 2)),
            x.max(2),
            x.min(0, keepdims=True),
            jn.argmax(x, 1),
            jn.logsumexp(x, 2),
            jn.softmax(x, axis=1),
            jn.log_softmax(x),
        )

    _check(fn, _data(2, 3, 5), tmp_path=tmp_path)


def _conv_pool_loss(x, w):
    h = jn.conv2d(x, w, stride=2, padding=1)
    return (jn.max_pool2d(h, 2, 1) ** 2).sum() + jn.avg_pool2d(h, 3, 2, 1).sum()


# Every other op, against the interpreter (jitnet's reference backend: no kernels to compile).
_OP_CASES = {
    "math": (
        lambda a: (
            jn.sqrt(jn.abs(a))
            + jn.rsqrt(jn.abs(a) + 1)
            + jn.reciprocal(a + 10)
            + jn.sign(a)
            + jn.erf(a)
            + jn.sin(a) * jn.cos(a)
            + jn.acos(jn.tanh(a))
            + jn.expm1(a)
            + jn.log1p(jn.abs(a))
            + jn.log(jn.abs(a) + 1)
        ),
        (_data(3, 4),),
    ),
    "activations": (lambda a: jn.relu(a) + jn.leaky_relu(a, 0.1) + jn.elu(a, 0.7) - jn.square(a), (_data(3, 4),)),
    "pow": (lambda a, b: jn.abs(a) ** b + a**3, (_data(3, 4), _data(4))),
    "ints": (
        lambda a, b: (jn.relu(a) * 3 + b, jn.abs(a), jn.maximum(a, 1), a**2, -a, jn.sign(a), a.sum(1), a.max(0)),
        (_RNG.integers(-5, 5, (3, 4)).astype(np.int32), _RNG.integers(-5, 5, (3, 4)).astype(np.int32)),
    ),
    "comparisons": (
        lambda a, b: ((a < b) & (a <= 0)) | jn.logical_not(a >= b) | (a == b) | ((a != 0) & (a > 1)),
        (_data(3, 4), _data(4)),
    ),
    "casts": (
        lambda a: (a.astype("int32"), (a > 0).astype("float32"), (a > 0).sum(), a.astype("float64")),
        (_data(5),),
    ),
    "bools": (
        lambda m, a: (jn.where(m, m, jn.logical_not(m)), jn.pad(m, ((1, 0), (0, 1))), m.sum(1), jn.where(m, a, 0.0)),
        (_RNG.random((3, 4)) > 0.5, _data(3, 4)),
    ),
    "views": (
        lambda a: (a.T, a[1:, ::2], a[::-1, ::-2], a[:, -1], jn.pad(a, ((1, 0), (2, 3))), jn.flatten(a)),
        (_data(3, 4),),
    ),
    "concat_expand": (lambda a: jn.concatenate([a, a * 2], 1) + jn.broadcast_to(a[:, :1], (3, 8)), (_data(3, 4),)),
    "iota_tril": (lambda a: a + jn.arange(4) * 0.5 + jn.tril(a) + jn.triu(a, 1), (_data(3, 4),)),
    "take": (
        lambda a, i: (jn.take(a, i, 1), jn.take_along_axis(a, jn.argmax(a, 1)[:, None], 1)),
        (_data(3, 4), np.array([[0, -1], [2, 7]], np.int32)),
    ),
    "scatter_add": (
        lambda a, i, v: jn.scatter_add(a, i, v, 1),
        (_data(3, 4), np.array([0, 2, 2, -1, 9]), _data(3, 5)),
    ),
    "dropout_training": (lambda a, seed: jn.dropout(a, 0.5, seed), (_data(4, 5), 12345)),
    "batched_matmul": (lambda a, b: (a @ b, a @ jn.transpose(a, (0, 2, 1))), (_data(2, 3, 4), _data(4, 5))),
    "conv_pool": (
        lambda x, w: (jn.conv2d(x, w, stride=2, padding=1), jn.avg_pool2d(x, 3, 2, 1), jn.max_pool2d(x, 3, 2, 1)),
        (_data(2, 3, 7, 7), _data(4, 3, 3, 3)),
    ),
    "conv_pool_gradients": (jn.grad(_conv_pool_loss, (0, 1)), (_data(2, 3, 7, 7), _data(4, 3, 3, 3))),
    "gather_gradient": (
        jn.grad(lambda e, i: (jn.take(e, i, 0) ** 2).sum()),
        (_data(5, 3), np.array([[0, 1], [4, 4]])),
    ),
    "float64": (lambda a: jn.softmax(a) * jn.layer_norm(a, 4), (_data(3, 4).astype(np.float64),)),
}


@pytest.mark.parametrize("case", list(_OP_CASES))
def test_op_coverage(tmp_path, case):
    fn, args = _OP_CASES[case]
    _check(fn, *args, tmp_path=tmp_path, backend="interpret")


def test_every_ir_op_has_an_emitter():
    from jitnet.onnx.emitters import EMITTERS

    assert set(EMITTERS) == set(opdefs.OPS)


# ---- errors and options ----


def test_an_op_without_onnx_form_is_named(monkeypatch):
    monkeypatch.setitem(opdefs.OPS, "frobnicate", dataclasses.replace(opdefs.OPS["neg"], name="frobnicate"))
    with pytest.raises(NotImplementedError, match="'frobnicate'"):
        jn.onnx.export(lambda a: apply("frobnicate", (lift(a),)) + 1, _data(2), None)


def test_without_onnx_export_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install jitnet\[onnx\]"):
        jn.onnx.export(lambda a: a + 1, _data(2), None)


def test_import_jitnet_needs_no_onnx():
    code = "import sys; sys.modules['onnx'] = None; import jitnet as jn; print(jn.onnx.OPSET)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(jn.onnx.OPSET)


def test_bad_names_and_opset_are_refused():
    with pytest.raises(ValueError, match="input_names"):
        jn.onnx.export(lambda a, b: a + b, (_data(2), _data(2)), None, input_names=["a"])
    with pytest.raises(ValueError, match="output_names"):
        jn.onnx.export(lambda a: (a, a), _data(2), None, output_names=["y", "y"])
    with pytest.raises(ValueError, match="opset"):
        jn.onnx.export(lambda a: a, _data(2), None, opset=13)
    for bad in ([""], [3]):
        with pytest.raises(ValueError, match="non-empty strings needed as input_names"):
            jn.onnx.export(lambda a: a * 2, _data(2), None, input_names=bad)
    with pytest.raises(ValueError, match=r"names \['x'\] are used twice"):
        jn.onnx.export(lambda a: a * 2, _data(2), None, input_names=["x"], output_names=["x"])
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"names \['weight'\] are used twice"):  # a parameter's name
        jn.onnx.export(layer, _data(1, 2), None, input_names=["weight"])


def test_the_file_is_written_atomically_into_a_new_folder(tmp_path, monkeypatch):
    path = tmp_path / "new" / "model.onnx"
    exported = jn.onnx.export(lambda a: a * 2, _data(2), path)
    assert path.read_bytes() == exported.SerializeToString()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        jn.onnx.export(lambda a: a * 3, _data(2), path)
    assert path.read_bytes() == exported.SerializeToString() and os.listdir(path.parent) == ["model.onnx"]


def test_outputs_that_are_inputs_or_repeated_get_their_own_names(tmp_path):
    exported = _check(lambda a: (a, a, a * 2), _data(3), tmp_path=tmp_path, backend="interpret")
    assert [o.name for o in exported.graph.output] == ["output_0", "output_1", "output_2"]


def test_a_newer_opset_is_stated_and_runs(tmp_path):
    exported = _check(lambda a: jn.softmax(a).sum(0), _data(2, 3), tmp_path=tmp_path, backend="interpret", opset=21)
    assert [o.version for o in exported.opset_import] == [21]
