"""CPU source for max_pool2d / avg_pool2d (kernel, stride, padding) and their gradients.

Every kernel is a chunked parallel kernel (cpu/parallel.py) over the N*C planes (each plane is independent, so the gradients'
scatter-adds of overlapping windows never race), with the window clipped to the input: padding is
-inf for max pooling and 0 for average pooling, which counts padded zeros (PyTorch's default
count_include_pad=True), so padded cells are skipped rather than read.

Ties in max pooling go to the first maximum in window order (row-major over the window), as the
reference and ARCHITECTURE say; a NaN in a window is its maximum (numpy's max propagates NaN) and
the first NaN takes the gradient. A window whose first cell is padding and whose every other cell
is -inf has its maximum (-inf) on the padding: its gradient is dropped, as in the reference.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cpu.matmul import IMPORTS, _Lines
from jitnet.backends.cpu.parallel import chunked_kernel, jit_flags

POOL_OPS = ("max_pool2d", "avg_pool2d", "max_pool2d_vjp", "avg_pool2d_vjp")


def _geometry(in_shape, kernel, stride, padding):
    n, c, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"pool kernel {kernel} does not fit input {in_shape[2:]}")
    return n * c, h, w, kh, kw, sh, sw, ph, pw, ho, wo


ARGS = {"max_pool2d": ("x",), "avg_pool2d": ("x",), "max_pool2d_vjp": ("x", "g"), "avg_pool2d_vjp": ("g",)}


def _header(op: str, in_shape, kernel, stride, padding, ho: int, wo: int) -> list[str]:
    return [
        f"# jitnet cpu {op} over x {tuple(in_shape)}: kernel {kernel} stride {stride} padding {padding} -> {ho} x {wo}",
        *IMPORTS,
        "",
    ]


def _module(op: str, dt: np.dtype, in_shape, geo, lines: list[str], header: list[str]) -> str:
    """The chunked kernel: each thread takes a run of planes (q)."""
    planes = geo[0]
    buffers = [("out", dt)] + [(a, dt) for a in ARGS[op]]
    sig = f"void({dt.name}[::1], {', '.join(f'readonly({dt.name})' for _ in ARGS[op])})"
    threads = "num_threads()" if planes > 1 else "1"
    return "\n".join(header + chunked_kernel(buffers, sig, lines, jit_flags(), threads=threads)) + "\n"


def _window(e, ind: int, geo) -> None:
    """Open the loops over output cells (y, xx) and clip the window to the input: rows [h0, h1),
    columns [w0, w1); `first` is whether the window's first cell is inside the input."""
    _, h, w, kh, kw, sh, sw, ph, pw, ho, wo = geo
    e(ind, f"for y in range({ho}):")
    e(ind + 1, f"h0 = y * {sh} - {ph}")
    e(ind + 1, f"h1 = min(h0 + {kh}, {h})")
    e(ind + 1, f"for xx in range({wo}):")
    e(ind + 2, f"w0 = xx * {sw} - {pw}")
    e(ind + 2, f"w1 = min(w0 + {kw}, {w})")
    e(ind + 2, "first = h0 >= 0 and w0 >= 0")
    e(ind + 2, "h0c = max(h0, 0)")
    e(ind + 2, "w0c = max(w0, 0)")


def _argmax(e, ind: int, dt: np.dtype, w: int) -> None:
    """best, at = the window's maximum and its flat plane offset (-1: on the padding)."""
    e(ind, f"best = -np.inf if not first else ld(x, xo + h0 * {w} + w0)")
    e(ind, f"at = -1 if not first else h0 * {w} + w0")
    e(ind, "for hh in range(h0c, h1):")
    e(ind + 1, "for ww in range(w0c, w1):")
    e(ind + 2, f"v = ld(x, xo + hh * {w} + ww)")
    e(ind + 2, "if v > best or (v != v and best == best):")
    e(ind + 3, "best = v")
    e(ind + 3, f"at = hh * {w} + ww")


UNROLL_MAX = 16  # windows up to this many cells are unrolled when there is no padding


def _unpadded_cells(e, ind: int, geo) -> list[str]:
    """Without padding every window lies inside the input: open the loops over output cells with
    c0 = the window's first cell, and return the expressions of its cells' offsets in window order."""
    _, _, w, kh, kw, sh, sw, _, _, ho, wo = geo
    e(ind, f"for y in range({ho}):")
    e(ind + 1, f"for xx in range({wo}):")
    e(ind + 2, f"c0 = xo + y * {sh * w} + xx * {sw}")
    return [f"c0 + {i * w + j}" if i * w + j else "c0" for i in range(kh) for j in range(kw)]


def pool_source(op: str, in_shape, kernel, stride, padding, dtype) -> str:
    """Module source of the kernel of `op`: max_pool2d / avg_pool2d `kernel(out, x)`,
    max_pool2d_vjp `kernel(out, x, g)`, avg_pool2d_vjp `kernel(out, g)` (out: the input's gradient).
    Windows without padding and of at most UNROLL_MAX cells are unrolled (LeNet's 2 x 2 pools:
    3-4x faster than the clipped loops); others run loops clipped to the input."""
    if op not in ARGS:
        raise ValueError(f"not a pooling op: {op}")
    dt = np.dtype(dtype)
    geo = _geometry(in_shape, kernel, stride, padding)
    _, h, w, kh, kw, _, _, ph, pw, ho, wo = geo
    header = _header(op, in_shape, kernel, stride, padding, ho, wo)
    e = _Lines()
    e(1, f"for q in range(t * {geo[0]} // nt, (t + 1) * {geo[0]} // nt):")
    e(2, f"xo = q * {h * w}")
    e(2, f"go = q * {ho * wo}")
    if op.endswith("_vjp"):
        e(2, f"for i in range({h * w}):")
        e(3, "st(out, xo + i, 0.0)")
    b, gout = 4, f"go + y * {wo} + xx"
    acc = "np.float64" if dt == np.float32 else f"np.{dt.name}"
    if ph == pw == 0 and kh * kw <= UNROLL_MAX:
        cells = _unpadded_cells(e, 2, geo)
        if op.startswith("max_pool2d"):  # branch-free: on random data branches mispredict (5x slower)
            for k, cell in enumerate(cells):
                e(b, f"v{k} = ld(x, {cell})")
            e(b, "best = v0")
            for k in range(1, len(cells)):
                e(b, f"best = fmaximum(best, v{k})")  # NaN wins, as numpy's max
            if op == "max_pool2d":
                e(b, f"st(out, {gout}, best)")
            else:  # the first cell equal to the maximum (or NaN, if it is NaN): a reverse scan of selects
                e(b, "at = c0")
                for k in range(len(cells) - 1, -1, -1):
                    e(b, f"at += ({cells[k]} - at) * ((v{k} == best) | (v{k} != v{k}))")
                e(b, f"st(out, at, ld(out, at) + ld(g, {gout}))")
        elif op == "avg_pool2d":
            e(b, f"s = {acc}(ld(x, {cells[0]}))")
            for cell in cells[1:]:
                e(b, f"s += ld(x, {cell})")
            e(b, f"st(out, {gout}, s / {kh * kw})")
        else:
            e(b, f"share = ld(g, {gout}) / np.{dt.name}({kh * kw})")
            for cell in cells:
                e(b, f"st(out, {cell}, ld(out, {cell}) + share)")
        return _module(op, dt, in_shape, geo, e.lines, header)
    _window(e, 2, geo)
    if op == "max_pool2d":
        _argmax(e, b, dt, w)
        e(b, f"st(out, {gout}, best)")
    elif op == "max_pool2d_vjp":
        _argmax(e, b, dt, w)
        e(b, "if at >= 0:")
        e(b + 1, f"st(out, xo + at, ld(out, xo + at) + ld(g, {gout}))")
    elif op == "avg_pool2d":
        e(b, f"s = {acc}(0)")
        e(b, "for hh in range(h0c, h1):")
        e(b + 1, "for ww in range(w0c, w1):")
        e(b + 2, f"s += ld(x, xo + hh * {w} + ww)")
        e(b, f"st(out, {gout}, s / {kh * kw})")
    else:  # avg_pool2d_vjp
        e(b, f"share = ld(g, {gout}) / np.{dt.name}({kh * kw})")
        e(b, "for hh in range(h0c, h1):")
        e(b + 1, "for ww in range(w0c, w1):")
        e(b + 2, f"o = xo + hh * {w} + ww")
        e(b + 2, "st(out, o, ld(out, o) + share)")
    return _module(op, dt, in_shape, geo, e.lines, header)
