"""CPU source for conv2d (NCHW x OIHW, stride, padding) and its two gradients, as im2col + the
generated matmul micro-kernels (jitnet/codegen/cpu/matmul.py).

Each kernel is a `prange` over images (or over threads, each owning a run of images; the forward
splits an image's output channels among threads when there are fewer images than threads), and per image
one column matrix in a thread-private buffer (C*kh*kw x Ho*Wo: about 128 KB for LeNet's second conv,
so it stays in L2) that the serial matmul `block_fn` multiplies in place:
- forward:       out[n] (O x HoWo)     = W (O x CKK) @ col(x[n]) (CKK x HoWo), epilogue at the store;
- input grad:    col (CKK x HoWo)      = W^T @ g[n] (O x HoWo) (W read transposed, g in place),
                 then gx[n] = col2im(col) (every column entry added to the input pixel it came from);
- weight grad:   gw (O x CKK)          = sum over n of g[n] (O x HoWo) @ colT(x[n]) (HoWo x CKK): each
                 thread accumulates its images into a private gw (matmul `accumulate`), then the
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

from jitnet.codegen.cpu import matmul as mm


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


def _epilogue_args(epilogue, dt: np.dtype) -> tuple[str, str]:
    """(", p1, p2", ", readonly(t1), readonly(t2)"): the epilogue's buffers in a kernel's parameters
    and signature."""
    if epilogue is None:
        return "", ""
    return "".join(f", {p}" for p in epilogue.params), "".join(
        f", readonly({t})" for t in mm._param_types(epilogue, dt.name)
    )


def _apply_epilogue(e, ind: int, epilogue, target: str, offset: str, idx: list[str]) -> None:
    """target[offset] = epilogue(target[offset]) at the output index idx."""
    e(ind, f"o_ep = {offset}")
    e(ind, f"v_ep = ld({target}, o_ep)")
    lines, val = epilogue.render("v_ep", idx)
    for line in lines:
        e(ind, line)
    e(ind, f"st({target}, o_ep, {val})")


def _per_image_kernel(e, n: int, inputs: str, params: str, ptypes: str) -> None:
    """`kernel(out, <inputs>, *params)`: `image_fn` for every image, a `prange` over them (the
    prange body is one call, as in matmul's parallel kernel)."""
    e(0, "")
    e(0, "")
    e(0, f'@njit(void(BUF, IN, IN{ptypes}), parallel={n > 1}, cache=True, error_model="numpy")')
    e(0, f"def kernel(out, {inputs}{params}):")
    e(1, f"for nn in {'prange' if n > 1 else 'range'}({n}):")
    e(2, f"image_fn(out, {inputs}, nn{params})")


def _header(kind: str, dt: np.dtype, lines: list[str]) -> list[str]:
    return [
        f"# jitnet cpu conv2d {kind}",
        *(f"# {line}" for line in lines),
        *mm.IMPORTS,
        "",
        f"BUF = {dt.name}[::1]",
        f"IN = readonly({dt.name})",
        "",
        "",
    ]


def _im2col(e, ind: int, g: Geometry, transposed: bool) -> None:
    """Column matrix of image n of x into col: row (c, i, j), column (y, x) holds
    x[n, c, y*sh - ph + i, x*sw - pw + j] (0 in the padding). `transposed`: col is (HoWo x CKK)."""
    c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo
    ckk, yx = c * kh * kw, ho * wo
    e(ind, f"for c in range({c}):")
    e(ind + 1, f"for i in range({kh}):")
    e(ind + 2, f"for j in range({kw}):")
    b = ind + 3
    e(b, f"row = (c * {kh} + i) * {kw} + j")
    # columns x whose input column x*sw - pw + j is inside [0, W)
    e(b, f"x_lo = min(max(0, ({pw} - j + {sw - 1}) // {sw}), {wo})")
    e(b, f"x_hi = max(min({wo}, ({w - 1 + pw} - j) // {sw} + 1), x_lo)")
    e(b, f"for y in range({ho}):")
    e(b + 1, f"hy = y * {sh} - {ph} + i")
    dst, step = (f"row * {yx} + y * {wo}", "1") if not transposed else (f"y * {wo * ckk} + row", f"{ckk}")
    e(b + 1, f"d = {dst}")
    e(b + 1, f"if hy < 0 or hy >= {h}:")
    e(b + 2, f"for xx in range({wo}):")
    e(b + 3, f"st(col, d + xx * {step}, 0.0)")
    e(b + 1, "else:")
    e(b + 2, f"s = xoff + (c * {h} + hy) * {w} - {pw} + j")
    e(b + 2, "for xx in range(x_lo):")
    e(b + 3, f"st(col, d + xx * {step}, 0.0)")
    e(b + 2, "for xx in range(x_lo, x_hi):")
    e(b + 3, f"st(col, d + xx * {step}, ld(x, s + xx * {sw}))")
    e(b + 2, f"for xx in range(x_hi, {wo}):")
    e(b + 3, f"st(col, d + xx * {step}, 0.0)")


def _col2im(e, ind: int, g: Geometry) -> None:
    """gx[n] = the sum of col's entries over the pixels they came from (col: CKK x HoWo)."""
    c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo
    yx = ho * wo
    e(ind, f"for q in range({c * h * w}):")
    e(ind + 1, "st(out, xoff + q, 0.0)")
    e(ind, f"for c in range({c}):")
    e(ind + 1, f"for i in range({kh}):")
    e(ind + 2, f"for j in range({kw}):")
    b = ind + 3
    e(b, f"row = (c * {kh} + i) * {kw} + j")
    e(b, f"x_lo = min(max(0, ({pw} - j + {sw - 1}) // {sw}), {wo})")
    e(b, f"x_hi = max(min({wo}, ({w - 1 + pw} - j) // {sw} + 1), x_lo)")
    e(b, f"for y in range({ho}):")
    e(b + 1, f"hy = y * {sh} - {ph} + i")
    e(b + 1, f"if hy >= 0 and hy < {h}:")
    e(b + 2, f"s = row * {yx} + y * {wo}")
    e(b + 2, f"d = xoff + (c * {h} + hy) * {w} - {pw} + j")
    e(b + 2, "for xx in range(x_lo, x_hi):")
    e(b + 3, f"o_ = d + xx * {sw}")
    e(b + 3, "st(out, o_, ld(out, o_) + ld(col, s + xx))")


def conv2d_source(x_shape, w_shape, stride, padding, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, x, w, *epilogue.params)`: out (N, O, Ho, Wo) = conv2d(x, w).
    The epilogue renders with the output index [n, o, y, x]."""
    dt = np.dtype(dtype)
    g = _geometry(x_shape, w_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = g.n, g.c, g.h, g.w, g.o, g.kh, g.kw, g.ho, g.wo
    ckk, yx = c * kh * kw, ho * wo
    # the matmul's [z, i, j] = [image, channel, output pixel] is conv's [n, o, y, x]
    ep = (
        None
        if epilogue is None
        else mm.Reindexed(epilogue, lambda i: [i[0], i[1], f"({i[2]}) // {wo}", f"({i[2]}) % {wo}"])
    )
    t = mm.choose_tile(o, yx, ckk, dt)
    block = mm.matmul_source(o, yx, ckk, 1, dt, tile=t, parallel=False, epilogue=ep, block_only=True)
    params = "".join(f", {p}" for p in (ep.params if ep else []))
    ptypes = "".join(f", readonly({t_})" for t_ in mm._param_types(ep, dt.name))
    e = mm._Lines()
    mp = -(-o // t.mr)
    e(0, f'@njit(void(BUF, IN, IN, int64, int64, int64{ptypes}), cache=True, error_model="numpy")')
    e(0, f"def image_fn(out, x, w, nn, part, parts{params}):")
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, f"xoff = nn * {c * h * w}")
    _im2col(e, 1, g, transposed=False)
    e(1, f"r_lo = part * {mp} // parts")
    e(1, f"r_hi = (part + 1) * {mp} // parts")
    e(1, f"block_fn(out, nn * {o * yx}, w, 0, col, 0, r_lo, r_hi, 0, {-(-yx // t.nr)}{params})")
    e(0, "")
    e(0, "")
    # fewer images than threads: each image's output channels are split into `parts` (each part
    # builds the image's column matrix itself)
    e(0, f'@njit(void(BUF, IN, IN{ptypes}), parallel=True, cache=True, error_model="numpy")')
    e(0, f"def kernel(out, x, w{params}):")
    e(1, f"parts = min(max(1, num_threads() // {max(n, 1)}), {mp})")
    e(1, f"for task in prange({n} * parts):")
    e(2, "nn = task // parts")
    e(2, f"image_fn(out, x, w, nn, task - nn * parts, parts{params})")
    head = _header(
        "forward",
        dt,
        [
            f"x {x_shape}, w {w_shape}, stride {stride}, padding {padding} -> ({n}, {o}, {ho}, {wo})",
            f"per image: W ({o} x {ckk}) @ col ({ckk} x {yx})",
        ],
    )
    return "\n".join(head + block.splitlines() + ["", ""] + e.lines) + "\n"


def conv2d_input_grad_source(g_shape, w_shape, stride, padding, in_shape, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, g, w, *epilogue.params)`: out (N, C, H, W) = the gradient of
    conv2d's input for the output cotangent g (the transposed convolution). The epilogue renders
    with the index [n, c, h, w], over each image's gradient right after its col2im."""
    dt = np.dtype(dtype)
    geo = _geometry(in_shape, w_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = geo.n, geo.c, geo.h, geo.w, geo.o, geo.kh, geo.kw, geo.ho, geo.wo
    if tuple(g_shape) != (n, o, ho, wo):
        raise ValueError(f"conv2d input grad: cotangent {g_shape} does not match output {(n, o, ho, wo)}")
    ckk, yx = c * kh * kw, ho * wo
    t = mm.choose_tile(ckk, yx, o, dt)
    block = mm.matmul_source(ckk, yx, o, 1, dt, a_trans=True, tile=t, parallel=False, block_only=True)
    e = mm._Lines()
    params, ptypes = _epilogue_args(epilogue, dt)
    e(0, f'@njit(void(BUF, IN, IN, int64{ptypes}), cache=True, error_model="numpy")')
    e(0, f"def image_fn(out, g, w, nn{params}):")
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, f"block_fn(col, 0, w, 0, g, nn * {o * yx}, 0, {-(-ckk // t.mr)}, 0, {-(-yx // t.nr)})")
    e(1, f"xoff = nn * {c * h * w}")
    _col2im(e, 1, geo)
    if epilogue is not None:
        e(1, f"for q in range({c * h * w}):")
        e(2, f"cc = q // {h * w}")
        e(2, f"hh = q // {w} - cc * {h}")
        _apply_epilogue(e, 2, epilogue, "out", "xoff + q", ["nn", "cc", "hh", f"q % {w}"])
    _per_image_kernel(e, n, "g, w", params, ptypes)
    head = _header(
        "input gradient",
        dt,
        [
            f"g {tuple(g_shape)}, w {w_shape}, stride {stride}, padding {padding} -> {in_shape}",
            f"per image: col ({ckk} x {yx}) = W^T ({ckk} x {o}) @ g[n] ({o} x {yx}); col2im",
        ],
    )
    return "\n".join(head + block.splitlines() + ["", ""] + e.lines) + "\n"


def conv2d_weight_grad_source(x_shape, g_shape, stride, padding, w_shape, dtype, epilogue=None) -> str:
    """Module source of `kernel(out, x, g, *epilogue.params)`: out (O, C, kh, kw) = the gradient of
    conv2d's weight for the input x and the output cotangent g. The epilogue renders with the index
    [o, c, i, j], where the threads' partial sums are added."""
    dt = np.dtype(dtype)
    geo = _geometry(x_shape, w_shape, stride, padding)
    n, c, h, w, o, kh, kw, ho, wo = geo.n, geo.c, geo.h, geo.w, geo.o, geo.kh, geo.kw, geo.ho, geo.wo
    if tuple(g_shape) != (n, o, ho, wo):
        raise ValueError(f"conv2d weight grad: cotangent {g_shape} does not match output {(n, o, ho, wo)}")
    ckk, yx = c * kh * kw, ho * wo
    t = mm.choose_tile(o, ckk, yx, dt)
    block = mm.matmul_source(o, ckk, yx, 1, dt, tile=t, parallel=False, block_only=True, accumulate=True)
    e = mm._Lines()
    params, ptypes = _epilogue_args(epilogue, dt)
    e(0, '@njit(void(BUF, IN, IN, int64, int64), cache=True, error_model="numpy")')
    e(0, "def images_fn(acc, x, g, n0, n1):")
    e(1, f"col = np.empty({ckk * yx}, np.{dt.name})")
    e(1, "for nn in range(n0, n1):")
    e(2, f"xoff = nn * {c * h * w}")
    _im2col(e, 2, geo, transposed=True)
    e(2, f"block_fn(acc, 0, g, nn * {o * yx}, col, 0, 0, {-(-o // t.mr)}, 0, {-(-ckk // t.nr)})")
    e(0, "")
    e(0, "")
    e(0, f'@njit(void(BUF, IN, IN{ptypes}), parallel=True, cache=True, error_model="numpy")')
    e(0, f"def kernel(out, x, g{params}):")
    e(1, f"nt = max(1, min(num_threads(), {n}))  # no images: one zero partial sum")
    e(1, f"part = np.zeros((nt, {o * ckk}), np.{dt.name})")
    e(1, "for t in prange(nt):")
    e(2, f"images_fn(part[t], x, g, t * {n} // nt, (t + 1) * {n} // nt)")
    e(1, f"for q in range({o * ckk}):")
    e(2, "s = part[0, q]")
    e(2, "for t in range(1, nt):")
    e(3, "s += part[t, q]")
    e(2, "st(out, q, s)")
    if epilogue is not None:
        idx = [f"q // {ckk}", f"q // {kh * kw} % {c}", f"q // {kw} % {kh}", f"q % {kw}"]
        _apply_epilogue(e, 2, epilogue, "out", "q", idx)
    head = _header(
        "weight gradient",
        dt,
        [
            f"x {x_shape}, g {tuple(g_shape)}, stride {stride}, padding {padding} -> {w_shape}",
            f"per thread: gw ({o} x {ckk}) += g[n] ({o} x {yx}) @ colT ({yx} x {ckk})",
        ],
    )
    return "\n".join(head + block.splitlines() + ["", ""] + e.lines) + "\n"
