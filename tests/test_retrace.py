"""Recompile diagnostics: why a compiled function traced again (jitnet/retrace.py), the warning
when it keeps retracing, and the peak device bytes `inspect` reports."""

import logging
import warnings

import numpy as np
import pytest

import jitnet as jn
from jitnet.backends import device
from jitnet.retrace import WARN_AFTER, Retraces, RetraceWarning, Signature


def f32(*shape):
    return np.ones(shape, np.float32)


@pytest.fixture
def retraces(caplog):
    """The reasons logged to `jitnet.retrace`, in order."""
    caplog.set_level(logging.INFO, logger="jitnet.retrace")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "jitnet.retrace"]


def test_first_trace_and_cache_hits_say_nothing(retraces):
    f = jn.compile(lambda x: x + 1)
    f(f32(3))
    f(f32(3))
    assert retraces() == []


def test_shape_dtype_and_scalar_changes_name_the_argument(retraces):
    @jn.compile
    def step(params, x, lr):
        return params["w"] * x * lr

    step({"w": f32(3)}, f32(3), 0.1)
    step({"w": f32(3)}, f32(5, 3), 0.2)  # a new scalar value is no new signature
    step({"w": np.ones(3)}, f32(5, 3), np.float32(0.2))
    first, second = retraces()
    assert first.endswith("(trace 2): x: shape (3,) -> (5, 3)")
    assert "params['w']: dtype float32 -> float64" in second
    assert "lr: a Python scalar (float64) -> float32[]" in second


def test_static_value_structure_and_argument_count(retraces):
    def body(x, n, *rest):
        return x * n + len(rest)

    f = jn.compile(body, static_argnums=1)
    f(f32(2), 3)
    f(f32(2), 4)
    f(f32(2), 4, f32(2))
    f(f32(2), 4, f32(2), f32(2))
    g = jn.compile(lambda x, t: x + sum(t))
    g(f32(2), (f32(2),))
    g(f32(2), (f32(2), f32(2)))
    logged = retraces()
    assert logged[0].endswith("n: static value 3 -> 4")
    assert logged[1].endswith("2 -> 3 arguments")
    assert logged[2].endswith("3 -> 4 arguments")
    assert logged[3].endswith("t: pytree structure changed (1 -> 2 leaves)")


def test_captured_array_change(retraces):
    w = jn.asarray(f32(3))
    f = jn.compile(lambda x: x * w)
    f(f32(3))
    # no public API changes an Array's shape (assign keeps it): swap in another's storage and shape
    one = jn.asarray(np.full(1, 2, np.float32))
    w._storage, w.shape = one._storage, one.shape
    np.testing.assert_array_equal(np.asarray(f(f32(3))), np.full(3, 2, np.float32))
    (logged,) = retraces()
    assert logged.endswith(
        "<lambda> traced again (trace 2): a captured array (a closure or global) changed shape or dtype"
    )


def test_backend_change_is_named():
    log = Retraces(lambda x: x, ())
    old = Signature((tuple, (None,)), (((3,), "f", False),), (), 1, "cpu")
    assert log.changes(old, old._replace(backend="cuda")) == [("", "backend cpu -> cuda")]


def test_debug_prints_the_reason(monkeypatch, capsys):
    monkeypatch.setenv("JITNET_DEBUG", "1")
    f = jn.compile(lambda x: x * 2)
    f(f32(2))
    f(f32(4))
    err = capsys.readouterr().err
    assert "<lambda> traced again (trace 2): x: shape (2,) -> (4,)" in err
    assert err.count("jitnet: compiled test_debug_prints_the_reason.<locals>.<lambda>") == 2


def test_warning_after_many_signatures_names_the_argument():
    @jn.compile
    def model(weights, batch):
        return batch @ weights

    with warnings.catch_warnings():
        warnings.simplefilter("error", RetraceWarning)
        for n in range(1, WARN_AFTER):  # WARN_AFTER - 1 signatures: quiet
            model(f32(3, 2), f32(n, 3))
    with pytest.warns(RetraceWarning, match=r"traced for 8 signatures, mostly because argument 'batch' changed") as w:
        model(f32(3, 2), f32(WARN_AFTER, 3))
    assert "drop_last" in str(w[0].message) and "static_argnums" in str(w[0].message)
    assert w[0].filename == __file__  # the user's line, not jitnet's
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetraceWarning)
        model(f32(3, 2), f32(WARN_AFTER + 1, 3))  # once per function


def test_peak_bytes_matches_a_run(backend, monkeypatch):
    """The peak `inspect` reports is what a run holds at most, counted at the device's pool."""
    x, w = f32(64, 32), f32(32, 16)

    def net(x, w):
        h = jn.tanh(x @ w)  # (64, 16) intermediates; the products and sums need buffers of their own
        return jn.sum(h * h, axis=0), jn.exp(h @ h.T).sum()

    f = jn.compile(net, backend=backend)
    compiled = f.lower(x, w)
    pool = device(backend).pool
    live, peak = [0], [0]
    take, give = pool.take, pool.give

    def counting_take(size, dtype):
        buf = take(size, dtype)
        live[0] += buf.nbytes
        peak[0] = max(peak[0], live[0])
        return buf

    def counting_give(buf):
        live[0] -= buf.nbytes
        give(buf)

    monkeypatch.setattr(pool, "take", counting_take)
    monkeypatch.setattr(pool, "give", counting_give)
    inputs = [compiled.device.put(a.reshape(-1)) for a in (x, w)]
    compiled.program.execute(compiled.program.bind(inputs, []))
    assert compiled.program.peak_bytes() == peak[0] > 64 * 64 * 4
    reads = x.nbytes + w.nbytes + sum(buf.nbytes for _, buf in compiled.program.consts)
    assert compiled.peak_bytes == peak[0] + reads
    assert f"peak device bytes: {peak[0] + reads} " in f.inspect(x, w)


def test_eager_ops_see_many_shapes_without_a_warning():
    """An eager op compiles per shape by design (its per-op cache), so it never warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetraceWarning)
        for n in range(1, WARN_AFTER + 3):
            np.testing.assert_allclose(np.asarray(jn.exp(jn.asarray(f32(n)))), np.exp(f32(n)), rtol=1e-6)


def test_the_warning_points_at_the_users_line_through_jitnet_calls():
    """grad(f)(x) compiles inside jitnet: the warning still names the caller's line."""
    loss = jn.grad(lambda w: jn.sum(w * w))
    with pytest.warns(RetraceWarning) as w:
        for n in range(1, WARN_AFTER + 1):
            loss(f32(n))
    assert [x.filename for x in w] == [__file__]
    assert "grad(test_the_warning_points_at_the_users_line_through_jitnet_calls.<locals>.<lambda>)" in str(w[0].message)


def test_the_reason_is_against_the_nearest_compiled_signature(retraces):
    """Batches of 4 then 2 rows compiled; labels of another dtype on a 4-row batch: only the
    dtype is new."""
    f = jn.compile(lambda x, y: x.sum() + y.sum())
    f(f32(4, 3), np.zeros(4, np.int64))
    f(f32(2, 3), np.zeros(2, np.int64))
    f(f32(4, 3), np.zeros(4, np.int32))
    assert retraces()[-1].endswith("(trace 3): y: dtype int64 -> int32")
