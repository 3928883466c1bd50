"""Chunked parallel kernels and calls by symbol (jitnet/backends/cpu/parallel.py)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from jitnet.backends.cpu import parallel
from jitnet.backends.cpu.matmul import IMPORTS
from jitnet.codegen import cache


def chunked(body: list[str], n: int, threads: str = "num_threads()", **kw) -> str:
    """kernel(out, x) over n float32 elements with `body` as each chunk's work."""
    buffers = [("out", np.float32), ("x", np.float32)]
    sig = "void(float32[::1], readonly(float32))"
    return (
        "\n".join(
            [*IMPORTS, "", *parallel.chunked_kernel(buffers, sig, body, parallel.jit_flags(), threads=threads, **kw)]
        )
        + "\n"
    )


def test_chunks_cover_the_range_once_per_thread_count():
    n = 1000
    src = chunked([f"    for i in range(t * {n} // nt, (t + 1) * {n} // nt):", "        out[i] = x[i] * 2 + nt"], n)
    fn = cache.load(src)
    x = np.arange(n, dtype=np.float32)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            out = np.full(n, np.nan, np.float32)
            fn(out, x)
            np.testing.assert_array_equal(out, x * 2 + threads)  # every element once, nt as asked
    finally:
        numba.set_num_threads(before)


def test_chunk_ids_and_count():
    """Chunk t of nt writes t at its own slot; a constant `threads` of 1 calls the chunk directly."""
    for threads, want in (("num_threads()", numba.get_num_threads()), ("1", 1)):
        fn = cache.load(chunked(["    out[t] = t", "    out[100 + t] = nt"], 200, threads=threads))
        out = np.full(200, -1, np.float32)
        fn(out, np.zeros(200, np.float32))
        np.testing.assert_array_equal(out[:want], np.arange(want))
        assert (out[100 : 100 + want] == want).all() and (out[want:100] == -1).all()


def test_work_arrays_and_entry_lines():
    """Scratch arrays sized by nt are shared by the chunks and read by the entry afterwards."""
    body = [
        "    s = 0.0",
        "    for i in range(t * 100 // nt, (t + 1) * 100 // nt):",
        "        s += x[i]",
        "    part[t] = s",
    ]
    after = ["    total = 0.0", "    for tt in range(nt):", "        total += part[tt]", "    out[0] = total"]
    fn = cache.load(chunked(body, 100, work=[("part", np.float64, "nt")], after=after))
    out = np.zeros(100, np.float32)
    fn(out, np.arange(100, dtype=np.float32))
    assert out[0] == 4950


def test_symbols_are_unique_to_the_chunk_text():
    a, b = chunked(["    out[t] = 1"], 4), chunked(["    out[t] = 2"], 4)
    name = [line for line in a.splitlines() if line.startswith("register(")]
    assert name and name != [line for line in b.splitlines() if line.startswith("register(")]
    assert parallel.symbol("x") == parallel.symbol("x") != parallel.symbol("y")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_arg_array_and_address_round_trip(dtype):
    src = (
        "\n".join(
            [
                "import numpy as np",
                "from numba import njit",
                "from jitnet.backends.cpu.parallel import address, arg_array",
                "",
                "@njit",
                "def copy(src, dst):",
                "    table = np.empty(4, np.int64)",
                "    table[0] = address(src, 0)",
                "    table[1] = src.size",
                "    table[2] = address(dst, 0)",
                "    table[3] = dst.size",
                f"    a = arg_array(address(table, 0), 0, {dtype!r})",
                f"    b = arg_array(address(table, 0), 1, {dtype!r})",
                "    assert a.size == src.size and b.size == dst.size",
                "    for i in range(a.size):",
                "        b[i] = a[i]",
            ]
        )
        + "\n"
    )
    copy = cache.load(src, "copy")
    x = (np.arange(10) % 3).astype(dtype)
    y = np.zeros_like(x)
    copy(x, y)
    np.testing.assert_array_equal(x, y)
