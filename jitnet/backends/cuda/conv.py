"""CUDA source for conv2d (NCHW input, OIHW filter, stride, padding) as an implicit GEMM.

`conv2d_source(x_shape, w_shape, stride, padding, dtype, tile=None, epilogue=None)` returns a
module whose `launch(out, x, w, *epilogue.params)` runs on flat, contiguous device buffers.

    out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] * x[n, c, y*sh - ph + i, x*sw - pw + j]

is the product Out (O x P) = W (O x K) @ X' (K x P) with P = N*Ho*Wo output pixels and K = C*kh*kw
filter taps: W is the filter as it lies in memory (row-major O x K), and X' (im2col) is never
built: the B tile of each K step is gathered from x straight into shared memory, zero where a tap
falls in the padding. Everything else is the matmul kernel of `matmul.py` (`TiledBody`): the
filter tile and the gathered input tile in shared memory, 2-D register tiling, prefetch of the
next K step, the tile rule over (O, P, K), guarded edges.

Orientation: GEMM rows are output channels and columns are pixels, so the consecutive threads of a
warp gather consecutive output pixels (consecutive x addresses when the stride is 1) and store
consecutive addresses of the NCHW output (coalesced), and the filter, the small operand, is the
one read k-contiguously. Per thread and load slot the pixel's decomposition (n, y, x) is computed
once; each K step decomposes its tap index (c, i, j) with constant divisors.

The backward pass needs nothing more: conv2d's VJP (jitnet/ir/opdefs.py) writes the input gradient as
a conv2d of the dilated, padded cotangent with the flipped, transposed filter (a transposed conv)
and the weight gradient as a conv2d of the transposed input with the transposed cotangent (a
correlation), and both run through this kernel.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from jitnet.backends.cuda.launch import plan_source, single_source
from jitnet.backends.cuda.matmul import (
    MIN_BLOCKS,
    SIM_MIN_BLOCKS,
    SMEM_LIMIT,
    SOURCE_IMPORTS,
    Tile,
    TiledBody,
    _cdiv,
    _layout,
    _plus,
    emit_store,
    epilogue_signature,
    resolve_tile,
)
from jitnet.codegen.epilogue import Epilogue

SPLIT_MIN_STEPS = 2 if simulator() else 16  # K steps a split-K block runs at least


def conv2d_out_shape(x_shape, w_shape, stride, padding) -> tuple[int, int, int, int]:
    (n, c, h, wd), (o, wc, kh, kw) = x_shape, w_shape
    (sh, sw), (ph, pw) = stride, padding
    if c != wc or min(sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"conv2d kernel: x {x_shape}, w {w_shape}, stride {stride}, padding {padding}")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d kernel: filter {(kh, kw)} does not fit input {(h, wd)} with padding {padding}")
    return n, o, ho, wo


def split_count(tile: Tile, m: int, n: int, k: int) -> int:
    """Split K across the grid's z dimension when the output has too few tiles to fill the GPU
    (a weight gradient: O x C*kh*kw outputs, N*Ho*Wo deep): enough splits for MIN_BLOCKS blocks,
    each keeping at least SPLIT_MIN_STEPS K steps; no split range left empty."""
    min_blocks = SIM_MIN_BLOCKS if simulator() else MIN_BLOCKS
    blocks, steps = _cdiv(m, tile.bm) * _cdiv(n, tile.bn), _cdiv(k, tile.bk)
    splits = min(_cdiv(min_blocks, blocks), steps // SPLIT_MIN_STEPS)
    if blocks >= min_blocks or splits < 2:
        return 1
    return _cdiv(steps, _cdiv(steps, splits))


def _module(kind: str, body_cls, names, dims, out_shape, geometry, dtype, tile, epilogue, describe) -> str:
    """The module source of one of the three implicit GEMMs (see the module doc)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{kind} kernel: float32 or float64, not {dtype}")
    m_, n_, k_ = dims
    ty = dtype.name
    epi_names, epi_types = epilogue_signature(epilogue, dtype)
    n_params = 1 + len(names) + len(epi_names)  # out, the operands, the epilogue's buffers
    header = [f"# jitnet cuda kernel: {kind} {describe}, {ty}", f"# implicit GEMM: M={m_}, N={n_}, K={k_}"]
    if epilogue is not None:
        header.append(f"# epilogue params: {', '.join(epi_names)}")
    if m_ == 0 or n_ == 0:
        return "\n".join(header + SOURCE_IMPORTS + [plan_source(n_params), ""])
    t = resolve_tile(tile, m_, n_, k_)
    sa, sb = _layout(t, dtype.itemsize, False, False)
    smem = t.bk * (sa + sb) * dtype.itemsize
    if smem > SMEM_LIMIT:
        raise ValueError(f"{kind} tile {t.name} needs {smem} bytes of shared memory for {ty} (at most {SMEM_LIMIT})")
    splits = split_count(t, m_, n_, k_)
    header.append(
        f"# tile {t.name}: {t.threads} threads, CGMA {t.cgma(dtype.itemsize):.1f} flop/byte, "
        f"shared As[{t.bk}][{sa}] Bs[{t.bk}][{sb}]" + (f", K split {splits} ways" if splits > 1 else "")
    )
    body = body_cls(t, ty, sa, sb, epilogue, dims, *geometry)
    size = m_ * n_
    if splits > 1:
        body.split_k(splits, size)
    grid = (_cdiv(m_, t.bm) * _cdiv(n_, t.bn), 1, splits)
    gemm_args = ", ".join(["out", *names] + ([] if splits > 1 else epi_names))
    sig = f"void({', '.join([f'{ty}[::1]'] * 3 + ([] if splits > 1 else epi_types))})"
    lines = [f"@cuda.jit({sig}, cache=True)", f"def kernel({gemm_args}):", *body.lines(), "", ""]
    if splits == 1:
        lines += [single_source("kernel", grid, t.threads, n_params), ""]
        return "\n".join(header + SOURCE_IMPORTS + lines)
    finish_sig = f"void({', '.join([f'{ty}[::1]'] * 2 + epi_types)})"
    lines += [f"@cuda.jit({finish_sig}, cache=True)", f"def finish({', '.join(['out', 'part', *epi_names])}):"]
    lines += _finish_body(out_shape, splits, epilogue)
    operands, epi = range(1, 1 + len(names)), range(1 + len(names), n_params)
    launches = [
        ("kernel", grid, t.threads, [n_params, *operands]),  # into the partials (scratch buffer n_params)
        ("finish", max(1, min(MAX_BLOCKS, _cdiv(size, BLOCK))), BLOCK, [0, n_params, *epi]),
    ]
    lines += ["", "", plan_source(n_params, launches, [(splits * size, ty)]), ""]
    return "\n".join(header + SOURCE_IMPORTS + lines)


def _finish_body(out_shape, splits: int, epilogue: Epilogue | None) -> list[str]:
    """Sum the split-K partials of each output element in split order (deterministic), then the
    epilogue at the element's multi-index."""
    size = int(np.prod(out_shape))
    lines = [
        f"    for el in range(cuda.grid(1), {size}, cuda.gridsize(1)):",
        "        acc = part[u64(el)]",
        f"        for z in range(1, {splits}):",
        f"            acc += part[u64(z * {size} + el)]",
    ]
    idx, inner = [], 1
    for d in reversed(out_shape):
        idx.insert(0, f"(el // {inner}) % {d}" if inner > 1 else f"el % {d}")
        inner *= d
    idx[0] = f"el // {inner // out_shape[0]}"
    emit_store(lambda ind, line: lines.append("    " * ind + line), 2, "out[u64(el)]", "acc", idx, epilogue)
    return lines


def conv2d_source(
    x_shape: tuple[int, int, int, int],
    w_shape: tuple[int, int, int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dtype,
    tile: Tile | str | None = None,
    epilogue: Epilogue | None = None,
) -> str:
    """`launch(out, x, w, *epilogue.params)`: out (N, O, Ho, Wo) = conv2d(x, w). Epilogue index [n, o, y, x]."""
    n, o, ho, wo = conv2d_out_shape(x_shape, w_shape, stride, padding)
    _, c, kh, kw = w_shape
    dims = (o, n * ho * wo, c * kh * kw)
    describe = (
        f"out{(n, o, ho, wo)} = x{tuple(x_shape)} * w{tuple(w_shape)}, stride {tuple(stride)}, padding {tuple(padding)}"
    )
    geometry = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding))
    return _module("conv2d", _Forward, ("x", "w"), dims, (n, o, ho, wo), geometry, dtype, tile, epilogue, describe)


def conv2d_input_grad_source(
    g_shape, w_shape, stride, padding, in_shape, dtype, tile: Tile | str | None = None, epilogue: Epilogue | None = None
) -> str:
    """`launch(out, g, w, *epilogue.params)`: out (N, C, H, W) = the gradient of conv2d(x, w) by x for
    the cotangent g (a transposed convolution). Epilogue index [n, c, h, w]."""
    if conv2d_out_shape(in_shape, w_shape, stride, padding) != tuple(g_shape):
        raise ValueError(
            f"conv2d_input_grad kernel: cotangent {g_shape} and weight {w_shape} do not fit input {in_shape}"
        )
    (n, c, h, wd), (o, _, kh, kw) = in_shape, w_shape
    dims = (c, n * h * wd, o * kh * kw)
    describe = f"out{tuple(in_shape)} from g{tuple(g_shape)}, w{tuple(w_shape)}, stride {tuple(stride)}, padding {tuple(padding)}"
    geometry = (tuple(in_shape), tuple(w_shape), tuple(stride), tuple(padding))
    return _module(
        "conv2d_input_grad", _InputGrad, ("g", "w"), dims, tuple(in_shape), geometry, dtype, tile, epilogue, describe
    )


def conv2d_weight_grad_source(
    x_shape, g_shape, stride, padding, w_shape, dtype, tile: Tile | str | None = None, epilogue: Epilogue | None = None
) -> str:
    """`launch(out, x, g, *epilogue.params)`: out (O, C, kh, kw) = the gradient of conv2d(x, w) by w for
    the cotangent g (the correlation of x with g). Epilogue index [o, c, i, j]."""
    n, o, ho, wo = conv2d_out_shape(x_shape, w_shape, stride, padding)
    if (n, o, ho, wo) != tuple(g_shape):
        raise ValueError(
            f"conv2d_weight_grad kernel: input {x_shape} and cotangent {g_shape} do not fit weight {w_shape}"
        )
    _, c, kh, kw = w_shape
    dims = (o, c * kh * kw, n * ho * wo)
    describe = f"out{tuple(w_shape)} from x{tuple(x_shape)}, g{tuple(g_shape)}, stride {tuple(stride)}, padding {tuple(padding)}"
    geometry = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding))
    return _module(
        "conv2d_weight_grad", _WeightGrad, ("x", "g"), dims, tuple(w_shape), geometry, dtype, tile, epilogue, describe
    )


def _axpb(expr: str, a: int, b: int) -> str:
    """`expr * a + b` with the trivial parts left out."""
    out = f"({expr}) * {a}" if a != 1 else expr
    return f"{out} + {b}" if b > 0 else f"{out} - {-b}" if b < 0 else out


def _divmod(expr: str, d: int) -> tuple[str, str]:
    """(expr // d, expr % d) as source, folded for d == 1."""
    return (expr, "0") if d == 1 else (f"{expr} // {d}", f"{expr} % {d}")


class _Conv(TiledBody):
    """The geometry shared by the three GEMMs; x-side bounds tests only where padding or a last
    window past the bottom/right edge make them needed."""

    def __init__(self, t: Tile, ty, sa, sb, epilogue, dims, x_shape, w_shape, stride, padding):
        super().__init__(t, *dims, ty, False, False, sa, sb, epilogue)
        (self.batch, self.c, self.h, self.wd), (self.o, _, self.kh, self.kw) = x_shape, w_shape
        _, _, self.ho, self.wo = conv2d_out_shape(x_shape, w_shape, stride, padding)
        (self.sh, self.sw), (self.ph, self.pw) = stride, padding
        self.taps, self.hw, self.ohw = self.kh * self.kw, self.h * self.wd, self.ho * self.wo
        self.top, self.left = self.ph > 0, self.pw > 0
        self.bottom = (self.ho - 1) * self.sh - self.ph + self.kh - 1 >= self.h
        self.right = (self.wo - 1) * self.sw - self.pw + self.kw - 1 >= self.wd

    def _outer(self) -> None:
        self._gemm(1)

    def _x_bounds(self, yy: str, xx: str) -> list[str]:
        conds = [f"{yy} >= 0"] if self.top else []
        conds += [f"{yy} < {self.h}"] if self.bottom else []
        conds += [f"{xx} >= 0"] if self.left else []
        return conds + ([f"{xx} < {self.wd}"] if self.right else [])

    def _kq(self, ind: int, which: str, s: int, k0: str) -> str:
        """The K index of slot s at the step k0, in a variable."""
        self.emit(ind, f"kq{which}{s} = {f'k{which}{s}' if k0 == '0' else f'{k0} + k{which}{s}'}")
        return f"kq{which}{s}"

    def _row_gather_slots(self, row_stride: int) -> None:
        """A slots when A's K index is decomposed per step: ga = row * row_stride, ka = k in the step."""
        t, e = self.t, self.emit
        for s in range(self.na):
            c, r = self._divmod_slot(s, t.bk, "a")  # along k: consecutive threads, consecutive k
            e(1, f"ga{s} = (m0 + {r}) * {row_stride}")
            e(1, f"sa{s} = {c} * {self.sa} + {r}")
            e(1, f"ka{s} = {c}")
            if self.m % t.bm:
                e(1, f"pa{s} = m0 + {r} < {self.m}")
            self.a_guard.append((self._thread_guard(s, t.bm * t.bk), f"pa{s}" if self.m % t.bm else None))

    def _pixel_slots(self, plane: int, width: int, coords) -> None:
        """B slots whose column is an output-side pixel (n, y, x) of a `plane`-sized image of `width`:
        p, its position in the image, and what coords(s, row, col) computes from them, once."""
        t, e = self.t, self.emit
        for s in range(self.nb):
            col, kc = self._divmod_slot(s, t.bn, "b")  # col = e % BN (pixel in the tile), kc = e // BN
            e(1, f"pp{s} = n0 + {col}")
            e(1, f"pq{s} = pp{s} % {plane}")
            coords(s, f"pq{s} // {width}", f"pq{s} % {width}", f"pp{s} // {plane}")
            e(1, f"sb{s} = {kc} * {self.sb} + {col}")
            e(1, f"kb{s} = {kc}")
            if self.n % t.bn:
                e(1, f"pb{s} = pp{s} < {self.n}")
            self.b_guard.append((self._thread_guard(s, t.bk * t.bn), f"pb{s}" if self.n % t.bn else None))

    # stores for a pixel-column GEMM: out[n, row, pixel] with pixels of a `plane` of `width`
    def _pixel_store(self, ind: int, plane: int) -> None:
        e = self.emit
        for j in range(self.t.tn):
            e(ind, f"op{j} = {_plus('n0 + tx', j * self.t.ntx)}")
            e(ind, f"on{j} = op{j} // {plane}")
            e(ind, f"oq{j} = op{j} % {plane}")
            e(ind, f"ob{j} = on{j} * {self.m * plane} + oq{j}")

    def _pixel_target(self, j: int, row: str, width: int):
        guard = f"op{j} < {self.n}" if self.n % self.t.bn else None
        idx = [f"on{j}", f"({row})", f"(oq{j} // {width})", f"(oq{j} % {width})"]
        return f"ob{j} + orow", idx, guard


class _Forward(_Conv):
    """out (O x N*Ho*Wo) = w (O x C*kh*kw, as stored) @ x gathered: column (n, y, x), K index (c, i, j)."""

    def _a_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        step = "" if k0 == "0" else f" + {k0}"
        return f"w[u64(ga{s}{step})]", []

    def _b_slots(self) -> None:
        def coords(s, y, x, n):  # the input offset of the window's first tap (may be in the padding)
            self.emit(1, f"iy{s} = {_axpb(y, self.sh, -self.ph)}")
            self.emit(1, f"ix{s} = {_axpb(x, self.sw, -self.pw)}")
            self.emit(1, f"gb{s} = ({n}) * {self.c * self.hw} + iy{s} * {self.wd} + ix{s}")

        self._pixel_slots(self.ohw, self.wo, coords)

    def _b_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        kq = self._kq(ind, "b", s, k0)
        ci, kr = _divmod(kq, self.taps)
        fi, fj = _divmod(kr if kr == "0" else f"({kr})", self.kw)
        self.emit(ind, f"fi{s} = {fi}")
        self.emit(ind, f"fj{s} = {fj}")
        address = f"gb{s} + ({ci}) * {self.hw} + fi{s} * {self.wd} + fj{s}"
        return f"x[u64({address})]", self._x_bounds(f"iy{s} + fi{s}", f"ix{s} + fj{s}")

    def _store_setup(self, ind: int) -> None:
        self._pixel_store(ind, self.ohw)

    def _row_setup(self, ind: int, row: str) -> None:
        self.emit(ind, f"orow = ({row}) * {self.ohw}")

    def _target(self, j: int, row: str):
        return self._pixel_target(j, row, self.wo)


class _InputGrad(_Conv):
    """gx (C x N*H*W) = w^T gathered (C x O*kh*kw) @ g gathered: column (n, h, w), K index (o, i, j);
    tap (i, j) of output cell (y, x) reads input pixel (y*sh - ph + i, x*sw - pw + j), so pixel (h, w)
    takes g at y = (h + ph - i) / sh where that is a whole number in [0, Ho) (and x likewise)."""

    def _a_slots(self) -> None:
        self._row_gather_slots(self.taps)  # w[o, c, i, j]: row c, K index (o, (i, j))

    def _a_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        ko, kr = _divmod(self._kq(ind, "a", s, k0), self.taps)
        return f"w[u64(ga{s} + ({ko}) * {self.c * self.taps} + {kr})]", []

    def _b_slots(self) -> None:
        def coords(s, y, x, n):
            self.emit(1, f"hy{s} = {_axpb(y, 1, self.ph)}")
            self.emit(1, f"wx{s} = {_axpb(x, 1, self.pw)}")
            self.emit(1, f"gb{s} = ({n}) * {self.o * self.ohw}")

        self._pixel_slots(self.hw, self.wd, coords)

    def _b_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        e = self.emit
        ko, kr = _divmod(self._kq(ind, "b", s, k0), self.taps)
        fi, fj = _divmod(kr if kr == "0" else f"({kr})", self.kw)
        e(ind, f"ty{s} = hy{s} - {fi}" if fi != "0" else f"ty{s} = hy{s}")
        e(ind, f"tx{s} = wx{s} - {fj}" if fj != "0" else f"tx{s} = wx{s}")
        conds = []
        for v, k, p, stride, size, img in (
            (f"ty{s}", self.kh, self.ph, self.sh, self.ho, self.h),
            (f"tx{s}", self.kw, self.pw, self.sw, self.wo, self.wd),
        ):
            if k - 1 > p:  # a tap below the pixel's padded coordinate
                conds.append(f"{v} >= 0")
            if (img - 1 + p) // stride >= size:  # a pixel past the last window
                conds.append(f"{v} < {size * stride}")
            if stride > 1:
                conds.append(f"{v} % {stride} == 0")
        gy = f"ty{s} // {self.sh}" if self.sh > 1 else f"ty{s}"
        gx = f"tx{s} // {self.sw}" if self.sw > 1 else f"tx{s}"
        return f"g[u64(gb{s} + ({ko}) * {self.ohw} + ({gy}) * {self.wo} + {gx})]", conds

    def _store_setup(self, ind: int) -> None:
        self._pixel_store(ind, self.hw)

    def _row_setup(self, ind: int, row: str) -> None:
        self.emit(ind, f"orow = ({row}) * {self.hw}")

    def _target(self, j: int, row: str):
        return self._pixel_target(j, row, self.wd)


class _WeightGrad(_Conv):
    """gw (O x C*kh*kw, as stored) = g gathered (O x N*Ho*Wo) @ x gathered: column (c, i, j), K index
    (n, y, x). M and N are small and K large: few blocks, each with a long K loop."""

    def _a_slots(self) -> None:
        self._row_gather_slots(self.ohw)  # g[n, o, y, x]: row o, K index (n, (y, x))

    def _a_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        kn, kp = _divmod(self._kq(ind, "a", s, k0), self.ohw)
        return f"g[u64(ga{s} + ({kn}) * {self.o * self.ohw} + {kp})]", []

    def _b_slots(self) -> None:
        t, e = self.t, self.emit
        for s in range(self.nb):
            col, kc = self._divmod_slot(s, t.bn, "b")
            e(1, f"bc{s} = n0 + {col}")  # the tap (c, i, j), fixed per slot
            fi, fj = _divmod(f"(bc{s} % {self.taps})" if self.taps > 1 else "0", self.kw)
            e(1, f"wi{s} = {_axpb(fi, 1, -self.ph)}")
            e(1, f"wj{s} = {_axpb(fj, 1, -self.pw)}")
            e(1, f"gb{s} = (bc{s} // {self.taps}) * {self.hw} + wi{s} * {self.wd} + wj{s}")
            e(1, f"sb{s} = {kc} * {self.sb} + {col}")
            e(1, f"kb{s} = {kc}")
            if self.n % t.bn:
                e(1, f"pb{s} = bc{s} < {self.n}")
            self.b_guard.append((self._thread_guard(s, t.bk * t.bn), f"pb{s}" if self.n % t.bn else None))

    def _b_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        e = self.emit
        kn, kp = _divmod(self._kq(ind, "b", s, k0), self.ohw)
        ky, kx = _divmod(kp if kp == "0" else f"({kp})", self.wo)
        e(ind, f"yy{s} = {_axpb(ky, self.sh, 0)}")
        e(ind, f"xx{s} = {_axpb(kx, self.sw, 0)}")
        address = f"gb{s} + ({kn}) * {self.c * self.hw} + yy{s} * {self.wd} + xx{s}"
        return f"x[u64({address})]", self._x_bounds(f"wi{s} + yy{s}", f"wj{s} + xx{s}")

    def _row_setup(self, ind: int, row: str) -> None:
        self.emit(ind, f"orow = ocol + ({row}) * {self.n}")

    def _target(self, j: int, row: str):
        target, _, guard = super()._target(j, row)
        col = f"({_plus('n0 + tx', j * self.t.ntx)})"
        ij = f"{col} % {self.taps}"
        idx = [f"({row})", f"{col} // {self.taps}", f"({ij}) // {self.kw}", f"{col} % {self.kw}"]
        return target, idx, guard
