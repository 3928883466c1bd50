"""CPU source for conv2d (NCHW x OIHW, stride, padding) and its two gradients, as im2col + the
GEMM core (cpu/gemm.py).

Each kernel is a chunked parallel kernel (cpu/parallel.py) whose threads own runs of images (the
forward splits an image's output channels among threads when there are fewer images than threads),
with per image one column matrix in a thread-private buffer (C*kh*kw x Ho*Wo: about 128 KB for
LeNet's second conv, so it stays in L2) that the core multiplies in place:
- forward:       out[n] (O x HoWo)     = W (O x CKK) @ col(x[n]) (CKK x HoWo), then the epilogue
                 over the thread's rows of out[n] while they are in cache;
- input grad:    col (CKK x HoWo)      = W^T @ g[n] (O x HoWo) (W read transposed, g in place),
                 then gx[n] = col2im(col) (every column entry added to the input pixel it came from);
- weight grad:   gw (O x CKK)          = sum over n of g[n] (O x HoWo) @ colT(x[n]) (HoWo x CKK): each
                 thread accumulates its images into a private gw (the core's `accumulate`), then the
                 threads' partial sums are added. (Stacking 8 images per product, K = 512 instead
                 of 64, measured no faster: 2.65 ms against 2.46 for LeNet's second conv, one thread.)
No copy of g or W is made; only the column matrices are written.

Direct loops against im2col (measured 18:47 UTC, one thread (NUMBA_NUM_THREADS=1), float32, LeNet's
shapes at batch 64, the machine shared with a load average of ~9 on 2 cores: minimum of 15 calls): a
direct loop nest (prange over images; per output channel an Ho*Wo accumulator row, loops over c, i, j,
y and an inner loop over output columns, fastmath reassoc/contract) took 14.7 ms for conv 1->20 5x5 on
28x28 and 73 ms for conv 20->50 5x5 on 12x12; im2col + the micro-kernel took 0.38 ms and 1.91 ms (97
and 107 GFLOP/s on one core). The short inner loops (24 and 8 columns) and one weight per pass do
not keep the FMA units busy; the micro-kernel's 4 x 64 register tile does. im2col is kept.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jitnet.backends.cpu import gemm
from jitnet.backends.cpu import matmul as mm
from jitnet.backends.cpu.parallel import chunked_kernel, jit_flags


class Geometry(NamedTuple):
    """x (n, c, h, w) * weight (o, c, kh, kw), stride (sh, sw), padding (ph, pw) -> (n, o, ho, wo)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    ho: int
    wo: int


def _geometry(x_shape, w_shape, stride, padding) -> Geometry:
    (n, c, h, w), (o, c2, kh, kw) = x_shape, w_shape
    if c != c2:
        raise ValueError(f"conv2d channels differ: x {x_shape}, w {w_shape}")
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d kernel {w_shape[2:]} does not fit input {x_shape[2:]} with padding {padding}")
    return Geometry(n, c, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo)


def _module(kind: str, notes: list[str], dt: np.dtype, tile, buffers, epilogue, body: list[str], **kw) -> str:
    """The chunked kernel's module (see parallel.chunked_kernel for `body` and **kw)."""
    head = [f"# jitnet cpu conv2d {kind}", *(f"# {line}" for line in notes), *mm.IMPORTS, ""]
    head.append(gemm.require_line(dt, tile.mr, tile.nr))
    buffers = buffers + mm.epilogue_buffers(epilogue, dt.name)
    return "\n".join(head + chunked_kernel(buffers, _signature(dt, epilogue), body, jit_flags(), **kw)) + "\n"


def _gradient_geometry(kind: str, x_shape, w_shape, g_shape, stride, padding) -> Geometry:
    """The forward conv's geometry, checking that the cotangent g has the forward output's shape."""
    g = _geometry(x_shape, w_shape, stride, padding)
    if tuple(g_shape) != (g.n, g.o, g.ho, g.wo):
        raise ValueError(f"conv2d {kind}: cotangent {g_shape} does not match output {(g.n, g.o, g.ho, g.wo)}")
    return g


def _signature(dt: np.dtype, epilogue) -> str:
    ptypes = "".join(f", readonly({t})" for t in mm._param_types(epilogue, dt.name))
    return f"void({dt.name}[::1], readonly({dt.name}), readonly({dt.name}){ptypes})"


def _gemm(e, ind: int, dt: np.dtype, t, c, a, b, mnk, rows, a_trans=False, accumulate=False) -> None:
    """The core's call for one image's product: C, A and B as (array, offset); all column panels,
    row panels `rows` (lo, hi)."""
    m, n, k = mnk
    flags = (a_trans, False, mm.packing(m, n, k, False, t, dt.itemsize), accumulate)
    block = (*rows, "0", str(-(-n // t.nr)))
    mm.gemm_call(e, ind, dt, t, (c, a, b), mnk, flags, block)


def _patch_rows(e, ind: int, g: Geometry) -> int:
    """Open the loops over the column matrix's rows (c, i, j) and the output rows y, with
    row = (c*kh + i)*kw + j, hy = the input row, and [x_lo, x_hi) the output columns whose input
    column x*sw - pw + j lies inside [0, W). Returns the body's indent."""
    e(ind, f"for c in range({g.c}):")
    e(ind + 1, f"for i in range({g.kh}):")
    e(ind + 2, f"for j in range({g.kw}):")
    b = ind + 3
    e(b, f"row = (c * {g.kh} + i) * {g.kw} + j")
    e(b, f"x_lo = min(max(0, ({g.pw} - j + {g.sw - 1}) // {g.sw}), {g.wo})")
    e(b, f"x_hi = max(min({g.wo}, ({g.w - 1 + g.pw} - j) // {g.sw} + 1), x_lo)")
    e(b, f"for y in range({g.ho}):")
    e(b + 1, f"hy = y * {g.sh} - {g.ph} + i")
    return b + 1


def _im2col(e, ind: int, g: Geometry, transposed: bool) -> None:
    """Column matrix of image n of x into col: row (c, i, j), column (y, x) holds
    x[n, c, y*sh - ph + i, x*sw - pw + j] (0 in the padding). `transposed`: col is (HoWo x CKK)."""
    ckk, yx = g.c * g.kh * g.kw, g.ho * g.wo
    b = _patch_rows(e, ind, g)
    dst, step = (f"row * {yx} + y * {g.wo}", "1") if not transposed else (f"y * {g.wo * ckk} + row", f"{ckk}")
    e(b, f"d = {dst}")
    e(b, f"if hy < 0 or hy >= {g.h}:")
    e(b + 1, f"for xx in range({g.wo}):")
    e(b + 2, f"st(col, d + xx * {step}, 0.0)")
    e(b, "else:")
    e(b + 1, f"s = xoff + (c * {g.h} + hy) * {g.w} - {g.pw} + j")
    e(b + 1, "for xx in range(x_lo):")
    e(b + 2, f"st(col, d + xx * {step}, 0.0)")
    e(b + 1, "for xx in range(x_lo, x_hi):")
    e(b + 2, f"st(col, d + xx * {step}, ld(x, s + xx * {g.sw}))")
    e(b + 1, f"for xx in range(x_hi, {g.wo}):")
    e(b + 2, f"st(col, d + xx * {step}, 0.0)")


def _col2im(e, ind: int, g: Geometry) -> None:
    """gx[n] = the sum of col's entries over the pixels they came from (col: CKK x HoWo)."""
    e(ind, f"for q in range({g.c * g.h * g.w}):")
    e(ind + 1, "st(out, xoff + q, 0.0)")
    b = _patch_rows(e, ind, g)
    e(b, f"if hy >= 0 and hy < {g.h}:")
    e(b + 1, f"s = row * {g.ho * g.wo} + y * {g.wo}")
    e(b + 1, f"d = xoff + (c * {g.h} + hy) * {g.w} - {g.pw} + j")
    e(b + 1, "for xx in range(x_lo, x_hi):")
    e(b + 2, f"o_ = d + xx * {g.sw}")
    e(b + 2, "st(out, o_, ld(out, o_) + ld(col, s + xx))")


def conv2d_source(x_shape, w_shape, stride, padding, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, x, w, *epilogue.params)`: out (N, O, Ho, Wo) = conv2d(x, w).
    The epilogue renders with the output index [n, o, y, x]."""
    dt = np.dtype(dtype)
    g = _geometry(x_shape, w_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = g.n, g.c, g.h, g.w, g.o, g.kh, g.kw, g.ho, g.wo
    ckk, yx = c * kh * kw, ho * wo
    t = mm.choose_tile(o, yx, ckk, dt)
    mp = -(-o // t.mr)
    e = mm._Lines()
    # fewer images than threads: each image's output channels are split into `parts` (each part
    # builds the image's column matrix itself)
    e(1, f"parts = min(max(1, nt // {max(n, 1)}), {mp})")
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, f"for task in range(t * {n} * parts // nt, (t + 1) * {n} * parts // nt):")
    e(2, "nn = task // parts")
    e(2, "part = task - nn * parts")
    e(2, f"xoff = nn * {c * h * w}")
    _im2col(e, 2, g, transposed=False)
    e(2, f"r_lo = part * {mp} // parts")
    e(2, f"r_hi = (part + 1) * {mp} // parts")
    _gemm(e, 2, dt, t, ("out", f"nn * {o * yx}"), ("w", "0"), ("col", "0"), (o, yx, ckk), ("r_lo", "r_hi"))
    if epilogue is not None:
        e(2, f"for i in range(r_lo * {t.mr}, min(r_hi * {t.mr}, {o})):")
        e(3, f"for j in range({yx}):")
        mm.apply_epilogue(e, 4, epilogue, "out", f"(nn * {o} + i) * {yx} + j", ["nn", "i", f"j // {wo}", f"j % {wo}"])
    notes = [
        f"x {x_shape}, w {w_shape}, stride {stride}, padding {padding} -> ({n}, {o}, {ho}, {wo})",
        f"per image: W ({o} x {ckk}) @ col ({ckk} x {yx})",
    ]
    buffers = [("out", dt), ("x", dt), ("w", dt)]
    return _module("forward", notes, dt, t, buffers, epilogue, e.lines)


def conv2d_input_grad_source(g_shape, w_shape, stride, padding, in_shape, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, g, w, *epilogue.params)`: out (N, C, H, W) = the gradient of
    conv2d's input for the output cotangent g (the transposed convolution). The epilogue renders
    with the index [n, c, h, w], over each image's gradient right after its col2im."""
    dt = np.dtype(dtype)
    geo = _gradient_geometry("input grad", in_shape, w_shape, g_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = geo.n, geo.c, geo.h, geo.w, geo.o, geo.kh, geo.kw, geo.ho, geo.wo
    ckk, yx = c * kh * kw, ho * wo
    t = mm.choose_tile(ckk, yx, o, dt)
    e = mm._Lines()
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, f"for nn in range(t * {n} // nt, (t + 1) * {n} // nt):")
    w_t, g_n = ("w", "0"), ("g", f"nn * {o * yx}")
    _gemm(e, 2, dt, t, ("col", "0"), w_t, g_n, (ckk, yx, o), ("0", str(-(-ckk // t.mr))), a_trans=True)
    e(2, f"xoff = nn * {c * h * w}")
    _col2im(e, 2, geo)
    if epilogue is not None:
        e(2, f"for q in range({c * h * w}):")
        e(3, f"cc = q // {h * w}")
        e(3, f"hh = q // {w} - cc * {h}")
        mm.apply_epilogue(e, 3, epilogue, "out", "xoff + q", ["nn", "cc", "hh", f"q % {w}"])
    notes = [
        f"g {tuple(g_shape)}, w {w_shape}, stride {stride}, padding {padding} -> {in_shape}",
        f"per image: col ({ckk} x {yx}) = W^T ({ckk} x {o}) @ g[n] ({o} x {yx}); col2im",
    ]
    buffers = [("out", dt), ("g", dt), ("w", dt)]
    threads = f"min(num_threads(), {max(n, 1)})"
    return _module("input gradient", notes, dt, t, buffers, epilogue, e.lines, threads=threads)


def conv2d_weight_grad_source(x_shape, g_shape, stride, padding, w_shape, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, x, g, *epilogue.params)`: out (O, C, kh, kw) = the gradient of
    conv2d's weight for the input x and the output cotangent g. The epilogue renders with the index
    [o, c, i, j], where the threads' partial sums are added."""
    dt = np.dtype(dtype)
    geo = _gradient_geometry("weight grad", x_shape, w_shape, g_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = geo.n, geo.c, geo.h, geo.w, geo.o, geo.kh, geo.kw, geo.ho, geo.wo
    ckk, yx = c * kh * kw, ho * wo
    t = mm.choose_tile(o, ckk, yx, dt)
    e = mm._Lines()
    e(1, f"for q in range({o * ckk}):")
    e(2, f"st(part, t * {o * ckk} + q, 0.0)")
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, f"for nn in range(t * {n} // nt, (t + 1) * {n} // nt):")
    e(2, f"xoff = nn * {c * h * w}")
    _im2col(e, 2, geo, transposed=True)
    acc, g_n = ("part", f"t * {o * ckk}"), ("g", f"nn * {o * yx}")
    _gemm(e, 2, dt, t, acc, g_n, ("col", "0"), (o, ckk, yx), ("0", str(-(-o // t.mr))), accumulate=True)
    after = mm._Lines()  # in the entry, once every thread's partial sum is done
    after(1, f"for q in range({o * ckk}):")
    after(2, "s = part[q]")
    after(2, "for tt in range(1, nt):")
    after(3, f"s += part[tt * {o * ckk} + q]")
    after(2, "st(out, q, s)")
    if epilogue is not None:
        idx = [f"q // {ckk}", f"q // {kh * kw} % {c}", f"q // {kw} % {kh}", f"q % {kw}"]
        mm.apply_epilogue(after, 2, epilogue, "out", "q", idx)
    notes = [
        f"x {x_shape}, g {tuple(g_shape)}, stride {stride}, padding {padding} -> {w_shape}",
        f"per thread: gw ({o} x {ckk}) += g[n] ({o} x {yx}) @ colT ({yx} x {ckk})",
    ]
    buffers = [("out", dt), ("x", dt), ("g", dt)]
    work, threads = [("part", dt, f"nt * {o * ckk}")], f"min(num_threads(), {max(n, 1)})"
    return _module(
        "weight gradient", notes, dt, t, buffers, epilogue, e.lines, work=work, after=after.lines, threads=threads
    )
