"""train_step (one program: forward, backward, update) and the Trainer (fit, evaluate, predict,
checkpoints and exact resume)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import on_device

import jitnet as jn
from jitnet import nn, optim

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 40).astype(np.int64)


def mlp(seed=0, batchnorm=False, dropout=0.0):
    jn.manual_seed(seed)
    layers = [nn.Linear(6, 8)]
    layers += [nn.BatchNorm1d(8)] if batchnorm else []
    layers += [nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(8, 3))


def values(d):
    return {k: np.array(v) for k, v in d.items()}


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.Adam(p, lr=optim.schedules.exp(0.01, 0.9), weight_decay=0.01),
        lambda p: optim.AdamW(p, lr=optim.schedules.cosine(0.05, 3), weight_decay=0.1),
        lambda p: optim.AdamW(p, lr=optim.schedules.cosine(0.05, 3), weight_decay=0.1, amsgrad=True),
    ],
    ids=["adam", "adamw", "adamw-amsgrad"],
)
def test_train_step_equals_separate_forward_grad_update(on_backend, make):
    a, b = mlp(), mlp()
    opt_a, opt_b = make(a.parameters()), make(b.parameters())
    step = nn.train_step(a, nn.cross_entropy, opt_a)

    def loss_of(params, x, y):
        return nn.cross_entropy(b.functional_call(params, {}, x)[0], y)

    grad_b = jn.compile(jn.value_and_grad(loss_of), backend=on_backend)
    for i in range(3):
        x, y = X[i * 10 : i * 10 + 10], Y[i * 10 : i * 10 + 10]
        loss_a = float(step(x, y))
        loss_b, grads = grad_b(b.parameters(), x, y)
        opt_b.step(grads)
        assert loss_a == pytest.approx(float(loss_b), rel=1e-5)
        for k, v in values(a.parameters()).items():
            np.testing.assert_allclose(v, b.parameters()[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert step._compiled.traces == 1  # the scheduled lr, Adam's corrections, AdamW's decay: runtime scalars


def test_parameters_are_updated_in_place_on_the_device(on_backend):
    model = mlp()
    before = model.parameters()
    ids = {k: id(v) for k, v in before.items()}
    old = values(before)
    step = nn.train_step(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    loss = step(X[:10], Y[:10])
    assert isinstance(loss, jn.Array) and loss.shape == ()
    after = model.parameters()
    assert {k: id(v) for k, v in after.items()} == ids
    on_device(after, on_backend)
    assert all(not np.array_equal(old[k], after[k].numpy()) for k in old)


def test_one_program_fuses_the_update():
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = nn.train_step(model, nn.cross_entropy, opt)
    kernels = step.lower(X[:10], Y[:10]).schedule.kernels
    # forward + backward + the momentum update of 4 parameters, far fewer than one kernel per op
    assert len(kernels) < 30, len(kernels)


def test_batchnorm_buffers_and_dropout_in_train_step(on_backend):
    model = mlp(batchnorm=True, dropout=0.5)
    step = nn.train_step(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.0))
    step(X[:10], Y[:10])
    on_device(model.state_dict(), on_backend)
    h = X[:10] @ model.parameters()["0.weight"].numpy().T + model.parameters()["0.bias"].numpy()
    np.testing.assert_allclose(model.buffers()["1.running_mean"].numpy(), 0.1 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        model.buffers()["1.running_var"].numpy(), 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-4, atol=1e-6
    )
    assert int(model.buffers()["1.num_batches_tracked"].numpy()) == 1
    # with lr 0 only the dropout mask changes between steps: a fresh mask gives a new loss
    losses = {round(float(step(X[:10], Y[:10])), 6) for _ in range(3)}
    assert len(losses) == 3 and step._compiled.traces == 1
    model.eval()  # eval: no dropout, running statistics: the same loss every step
    assert float(step(X[:10], Y[:10])) == float(step(X[:10], Y[:10]))


def test_bad_inputs():
    model = mlp()
    step = nn.train_step(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="one batch size"):
        step(X[:10], Y[:9])
    with pytest.raises(TypeError, match="labels must be integer"):
        step(X[:10], Y[:10].astype(np.float32))
    with pytest.raises(ValueError, match="built on this model's parameters"):
        nn.train_step(model, nn.cross_entropy, optim.SGD(mlp().parameters(), lr=0.1))
    with pytest.raises(ValueError, match="unknown metrics"):
        nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1), metrics=("f1",))


def test_trainer_fit_evaluate_predict(capsys):
    model = mlp()
    trainer = nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.2, momentum=0.9))
    history = trainer.fit(X, Y, epochs=4, batch_size=20, validation_data=(X, Y), verbose=0)
    assert sorted(history) == ["accuracy", "loss", "samples_per_s", "val_accuracy", "val_loss"]
    assert all(len(v) == 4 for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert capsys.readouterr().out == ""  # verbose=0 is silent
    logits = trainer.predict(X)
    assert isinstance(logits, np.ndarray) and logits.shape == (40, 3)
    result = trainer.evaluate(X, Y)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == Y))
    assert result["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    trainer.fit(X, Y, epochs=1, batch_size=16, verbose=0, drop_last=True)  # 2 batches of 16, no third of 8
    assert trainer.step._compiled.traces == 2 and trainer.optimizer.iterations == 4 * 2 + 2  # shapes 20 and 16


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    def make():
        model = mlp(seed=3, dropout=0.3)
        opt = optim.Adam(model.parameters(), lr=optim.schedules.cosine(0.01, 20))
        return model, nn.Trainer(model, nn.cross_entropy, opt)

    model_a, a = make()
    a.fit(X, Y, epochs=3, batch_size=20, verbose=0)

    _, b = make()
    path = tmp_path / "run.safetensors"
    b.fit(X, Y, epochs=2, batch_size=20, verbose=0, checkpoint=str(path))
    model_c, c = make()
    jn.manual_seed(99)  # a different seed now must not matter: the checkpoint carries it
    c.load(str(path))
    assert c.epoch == 2 and c.optimizer.iterations == b.optimizer.iterations
    c.fit(X, Y, epochs=1, batch_size=20, verbose=0)
    for k, v in model_a.state_dict().items():
        np.testing.assert_array_equal(model_c.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    for k, v in a.optimizer.state_dict().items():
        np.testing.assert_array_equal(np.asarray(c.optimizer.state_dict()[k]), np.asarray(v), err_msg=k)
    with pytest.raises(ValueError, match="not a Trainer checkpoint"):
        c.load_state_dict({k: v for k, v in c.state_dict().items() if not k.startswith("trainer.")})


def tanh_mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.25), nn.Linear(8, 3))


def convnet():
    """No conv bias before the BatchNorm: its gradient would be rounding noise, which Adam scales up."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(18, 3),
    )


IMAGES = RNG.standard_normal((12, 1, 6, 6)).astype(np.float32)

# (model, optimizer, batches): a few steps of each
TRAINING = {
    "mlp": (
        tanh_mlp,
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 24, 8)],
    ),
    "convnet": (
        convnet,
        lambda ps: optim.Adam(ps, lr=0.01),
        [(IMAGES[i : i + 4], Y[i : i + 4]) for i in range(0, 12, 4)],
    ),
}


def train(backend, case, monkeypatch):
    """Losses and final state of a few train_steps on `backend`. train_step has no backend option: it
    runs where its data lives, and the model is built on the default device (JITNET_BACKEND)."""
    make, optimizer, batches = TRAINING[case]
    monkeypatch.setenv("JITNET_BACKEND", backend)
    jn.manual_seed(4)
    model = make()
    step = nn.train_step(model, nn.cross_entropy, optimizer(model.parameters()))
    step.seed = 7  # the same dropout masks: the generator gives the same bits on every backend
    losses = [float(step(x, y)) for x, y in batches]
    compiled = step.lower(*batches[0])
    assert compiled.device.kind == ("cpu" if backend == "interpret" else backend)
    assert (compiled.program is None) == (backend == "interpret") and step._compiled.traces == 1
    return losses, model.state_dict()


@pytest.mark.parametrize("case", sorted(TRAINING))
def test_train_step_matches_interpreter(case, backend, monkeypatch):
    """Forward, backward and update as one program on each backend, against the same training run
    by the numpy reference interpreter: the losses of every step, and the final parameters and
    buffers (still on the backend's device, updated in place)."""
    want_losses, want_state = train("interpret", case, monkeypatch)
    losses, state = train(backend, case, monkeypatch)
    on_device(state, backend)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for k, v in want_state.items():
        np.testing.assert_allclose(state[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_train_step_checks_host_labels_before_updating(on_backend):
    model = mlp()
    step = nn.train_step(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    before = values(model.parameters())
    bad = np.array([0, 1, 2, 0, 1, 2, 0, 3, 1, 2])
    with pytest.raises(IndexError, match=r"train_step: label 3 \(sample 7\) is out of bounds for 3 classes"):
        step(X[:10], bad)  # the first call: the step is traced to learn the class count, then checked
    assert step.num_classes == 3 and step.optimizer.iterations == 0
    for k, v in values(model.parameters()).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # labels already on the device are not read back: the loss and the parameters come out NaN
    assert np.isnan(float(step(X[:10], jn.asarray(bad))))
    assert np.isnan(model.parameters()["0.weight"].numpy()).any()
    regression = nn.train_step(model, lambda out, y: nn.mse_loss(out, y), optim.SGD(model.parameters(), lr=0.1))
    regression(X[:10], np.full((10, 3), 7.0, np.float32))  # targets, not labels: nothing to check
    assert regression.num_classes is None


def test_trainer_checks_all_labels_once_before_training():
    model = mlp()
    trainer = nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    before = values(model.parameters())
    bad = Y.copy()
    bad[17] = 5
    with pytest.raises(IndexError, match=r"fit: label 5 \(sample 17\) is out of bounds for 3 classes"):
        trainer.fit(X, bad, epochs=2, batch_size=8, verbose=0)
    with pytest.raises(IndexError, match=r"fit: label 3 \(sample 0\)"):  # every label bad: loss 0.0 before
        trainer.fit(X, np.full(40, 3), epochs=1, batch_size=8, verbose=0)
    assert trainer.optimizer.iterations == 0 and trainer.epoch == 0
    for k, v in values(model.parameters()).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    with pytest.raises(IndexError, match=r"evaluate: label 5 \(sample 17\)"):
        trainer.evaluate(X, bad)
    with pytest.raises(IndexError, match=r"fit: validation_data: label 5 \(sample 17\)"):
        trainer.fit(X, Y, epochs=1, verbose=0, validation_data=(X, bad))
    assert trainer.epoch == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: t.fit(X, Y, epochs=-1), "fit: epochs must be an integer >= 0, got -1"),
        (lambda t: t.fit(X, Y, epochs=1.5), "fit: epochs must be an integer >= 0, got 1.5"),
        (lambda t: t.fit(X, Y, batch_size=0), "fit: batch_size must be an integer >= 1, got 0"),
        (lambda t: t.fit(X, Y, batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
        (lambda t: t.fit(X, Y, validation_data=(X,)), r"validation_data must be a pair \(x_val, y_val\)"),
        (lambda t: t.fit(X[:0], Y[:0]), "inputs and targets are empty"),
        (lambda t: t.fit(X, Y[:39]), "one batch size"),
        (lambda t: t.evaluate(X, Y, batch_size=0), "evaluate: batch_size must be an integer >= 1"),
        (lambda t: t.predict(X, batch_size=-1), "predict: batch_size must be an integer >= 1"),
        (lambda t: t.predict(X[:0]), "predict: x is empty"),
    ],
    ids=[
        "epochs -1",
        "epochs 1.5",
        "batch 0",
        "batch 2.5",
        "validation",
        "empty",
        "lengths",
        "eval",
        "predict",
        "predict empty",
    ],
)
def test_trainer_bad_arguments(call, message):
    model = mlp()
    trainer = nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=message):
        call(trainer)
    assert trainer.optimizer.iterations == 0 and trainer.epoch == 0


def test_a_failed_trainer_load_changes_nothing(tmp_path):
    model = mlp(seed=1)
    trainer = nn.Trainer(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1))  # no momentum
    trainer.fit(X, Y, epochs=1, batch_size=20, verbose=0)
    trainer.save(tmp_path / "plain.safetensors")
    other = mlp(seed=2)
    resumed = nn.Trainer(other, nn.cross_entropy, optim.SGD(other.parameters(), lr=0.1, momentum=0.9))
    before = values(other.state_dict())
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: missing keys \['0.weight.momentum_buffer'"):
        resumed.load(tmp_path / "plain.safetensors")
    for k, v in values(other.state_dict()).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert resumed.epoch == 0
