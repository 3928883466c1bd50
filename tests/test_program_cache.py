"""Programs kept per compiled function (issue 12, item 6): the JITNET_CACHE_SIZE most recently used
signatures, and nothing global keeps a dropped function's or an evicted signature's program alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import jitnet as jn
from jitnet import compiler, ops


def shape(i: int) -> np.ndarray:
    return np.full((i + 1, 3), i, np.float32)


def test_least_recently_used_signature_is_evicted(monkeypatch):
    monkeypatch.setenv("JITNET_CACHE_SIZE", "3")
    f = jn.compile(lambda x: x * 2 + 1)
    for i in (0, 1, 2, 0, 3):  # 0 was used again, so 3 evicts 1
        np.testing.assert_array_equal(np.asarray(f(shape(i))), shape(i) * 2 + 1)
    assert len(f._table) == 3 and f.traces == 4
    f(shape(0))
    f(shape(2))
    f(shape(3))
    assert f.traces == 4
    f(shape(1))
    assert f.traces == 5


def test_evicted_and_dropped_programs_are_freed(monkeypatch):
    monkeypatch.setenv("JITNET_CACHE_SIZE", "2")
    f = jn.compile(lambda x: jn.exp(x) * 3)
    first = weakref.ref(f.lower(shape(0)).program)
    f(shape(1))
    last = weakref.ref(f.lower(shape(2)).program)
    gc.collect()
    assert first() is None and last() is not None
    del f
    gc.collect()
    assert last() is None


def test_eager_ops_keep_a_bounded_number_of_programs(monkeypatch):
    monkeypatch.setenv("JITNET_CACHE_SIZE", "4")
    monkeypatch.setattr(ops, "_eager_cache", {})  # only this test's eager programs (earlier tests filled others)
    for i in range(7):
        np.testing.assert_allclose(np.asarray(jn.sqrt(shape(i) + 40)), np.sqrt(shape(i) + 40), rtol=1e-6)
    tables = [f._table for f in ops._eager_cache.values() if f._table]
    assert tables and max(map(len, tables)) <= 4


def test_default_size_is_documented(monkeypatch):
    monkeypatch.delenv("JITNET_CACHE_SIZE", raising=False)
    assert compiler.cache_size() == compiler.DEFAULT_CACHE_SIZE == 64


@pytest.mark.parametrize("value", ["0", "-2", "lots"])
def test_bad_cache_size_is_named(monkeypatch, value):
    monkeypatch.setenv("JITNET_CACHE_SIZE", value)
    with pytest.raises(ValueError, match=f"JITNET_CACHE_SIZE must be a positive integer, got '{value}'"):
        jn.compile(lambda x: x + 1)(np.ones(2, np.float32))
