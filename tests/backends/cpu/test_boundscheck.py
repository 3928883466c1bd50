"""Checked mode (JITNET_BOUNDSCHECK=1, cpu/parallel.py): out-of-bounds accesses of generated CPU
kernels raise IndexError at the kernel's call, from chunks on numba's threads and from the GEMM
core, whose raw-pointer accesses are checked against the extents its caller passed."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from jitnet.backends.cpu import conv, gemm, parallel
from jitnet.backends.cpu.matmul import IMPORTS, Tile, _Lines, gemm_call
from jitnet.codegen import cache


@pytest.fixture
def checked(monkeypatch):
    monkeypatch.setenv(parallel.BOUNDSCHECK, "1")
    assert parallel.checked()


def kernel(body: list[str], n: int = 1000, head: list[str] = ()) -> str:
    """kernel(out, x) over n float32 elements: every chunk runs `body`, the last one (t == nt - 1)
    with `last` = 1."""
    buffers = [("out", np.float32), ("x", np.float32)]
    sig = "void(float32[::1], readonly(float32))"
    body = ["    last = 1 if t == nt - 1 else 0", *body]
    lines = parallel.chunked_kernel(buffers, sig, body, parallel.jit_flags())
    return "\n".join([*IMPORTS, *head, "", *lines]) + "\n"


def run(source: str, n: int = 1000) -> np.ndarray:
    out = np.zeros(n, np.float32)
    cache.load(source)(out, np.ones(n, np.float32))
    return out


# The last chunk reads or writes one element past the end of a buffer, each way a kernel can.
PAST_THE_END = {
    "indexing": ["    for i in range(t * 1000 // nt, (t + 1) * 1000 // nt + last):", "        out[i] = x[i] * 2"],
    "ld": ["    for i in range(t * 1000 // nt, (t + 1) * 1000 // nt + last):", "        out[i] = ld(x, i)"],
    "st": ["    for i in range(t * 1000 // nt, (t + 1) * 1000 // nt + last):", "        st(out, i, 1.0)"],
    "vload_n": ["    v = vload_n(x, 992 * last, 8 + last, 16)", "    vstore_n(out, 0, v, 1)"],
    "vstore_n": ["    vstore_n(out, 992 * last, vsplat(float32(1), 16), 8 + last)"],
    "negative": ["    st(out, -last, 1.0)"],
}


@pytest.mark.parametrize("access", sorted(PAST_THE_END))
def test_an_access_past_the_end_raises_from_any_chunk(checked, access):
    """In a worker thread's chunk too: numba only prints an exception raised in a cfunc."""
    head = ["from jitnet.backends.cpu.intrinsics import vload_n, vsplat, vstore_n"]
    for threads in sorted({1, numba.get_num_threads()}):
        with numba_threads(threads), pytest.raises(IndexError, match="out of bounds"):
            run(kernel(PAST_THE_END[access], head=head))


def test_in_bounds_kernels_run_unchanged(checked):
    body = ["    for i in range(t * 1000 // nt, (t + 1) * 1000 // nt):", "        st(out, i, ld(x, i) * 2)"]
    assert "boundscheck=True" in kernel(body)
    np.testing.assert_array_equal(run(kernel(body)), 2)
    run(kernel(PAST_THE_END["st"]).replace("+ last", "+ 0"))  # the failure word was cleared


def test_unchecked_kernels_carry_no_checks(monkeypatch):
    monkeypatch.delenv(parallel.BOUNDSCHECK, raising=False)
    source = kernel(PAST_THE_END["ld"])
    assert "boundscheck" not in source and "try:" not in source and "take_failure()" not in source


def gemm_kernel(m: int, n: int, k: int, r_hi: str | None = None) -> str:
    """kernel(out, x): out[:m*n] = A @ B with A = x[:m*k] (m x k), B = x[m*k:] (k x n), through the
    GEMM core (r_hi: the last row panel, default all)."""
    t = Tile(4, 16, 64, 64)
    e = _Lines()
    rows = r_hi or str(-(-m // t.mr))
    gemm_call(
        e,
        1,
        np.dtype(np.float32),
        t,
        [("out", "0"), ("x", "0"), ("x", str(m * k))],
        (m, n, k),
        (False, False, False, False),
        ("0", rows, "0", str(-(-n // t.nr))),
    )
    sig = "void(float32[::1], readonly(float32))"
    lines = parallel.chunked_kernel(
        [("out", np.float32), ("x", np.float32)], sig, e.lines, parallel.jit_flags(), threads="1"
    )
    return "\n".join([*IMPORTS, gemm.require_line(np.float32, t.mr, t.nr), "", *lines]) + "\n"


def test_gemm_operands_are_checked_against_their_buffers(checked):
    m, n, k = 5, 7, 3
    x = np.random.default_rng(0).standard_normal(m * k + k * n).astype(np.float32)
    out = np.zeros(m * n, np.float32)
    cache.load(gemm_kernel(m, n, k))(out, x)
    np.testing.assert_allclose(out.reshape(m, n), x[: m * k].reshape(m, k) @ x[m * k :].reshape(k, n), rtol=1e-5)
    with pytest.raises(IndexError, match="out of bounds"):  # C (m x n) does not fit in out
        cache.load(gemm_kernel(m, n, k))(np.zeros(m * n - 1, np.float32), x)


def test_the_gemm_core_checks_its_own_accesses(checked):
    """Row panels past M: the core reads A before its start (the caller's spans are right)."""
    m, n, k = 5, 7, 3
    x = np.ones(m * k + k * n, np.float32)
    with pytest.raises(IndexError, match="out of bounds"):
        cache.load(gemm_kernel(m, n, k, r_hi="3"))(np.zeros(m * n, np.float32), x)


def test_serial_kernels_raise_directly(checked):
    source = (
        "\n".join(
            [
                *IMPORTS,
                f"@njit(void(float32[::1]), {parallel.jit_flags()})",
                "def kernel(out):",
                "    st(out, out.size, 1.0)",
            ]
        )
        + "\n"
    )
    with pytest.raises(IndexError, match="out of bounds"):
        cache.load(source)(np.zeros(4, np.float32))


def test_checked_conv_of_thin_images_is_right(checked):
    """The strided conv that once wrote past its buffers, in checked mode: no access out of bounds."""
    x = np.random.default_rng(1).standard_normal((2, 1, 5, 1)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((1, 1, 3, 1)).astype(np.float32)
    source = conv.conv2d_source(x.shape, w.shape, (2, 1), (0, 0), np.float32)
    assert "boundscheck=True" in source
    out = np.full(2 * 2, np.nan, np.float32)
    cache.load(source)(out, x.ravel(), w.ravel())
    want = np.stack([x[:, 0, 0:3, 0] @ w[0, 0, :, 0], x[:, 0, 2:5, 0] @ w[0, 0, :, 0]], axis=1)
    np.testing.assert_allclose(out.reshape(2, 2), want, rtol=1e-5)


class numba_threads:
    def __init__(self, n: int):
        self.n, self.before = n, numba.get_num_threads()

    def __enter__(self):
        numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        numba.set_num_threads(self.before)
