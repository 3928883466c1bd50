"""CUDA source for 2-D pooling over NCHW and its backward: max_pool2d, avg_pool2d and their VJPs.

`pool2d_source(op, in_shape, kernel, stride, padding, dtype)` returns a module whose `launch` runs on
flat, contiguous device buffers (`in_shape` is always the forward input's (N, C, H, W)):
- max_pool2d / avg_pool2d: `launch(out, x)`, one output element per thread (a grid-stride loop,
  consecutive threads on consecutive outputs, so the window reads of a warp coalesce when the
  stride is 1 and hit the same lines otherwise);
- max_pool2d_vjp: `launch(out, x, g)`, avg_pool2d_vjp: `launch(out, g)`: one *input* element per
  thread, gathering from the windows that cover it (a gather rather than a scatter: no atomics,
  the same sums in the same order on every run, and overlapping windows need nothing special).

Pooling moves far more bytes than it computes (CGMA < 1): its floor is memory bandwidth, so the
kernels only make sure each element is read from global memory by neighbouring threads and
written once. Shapes are constants of the source; bounds tests appear only where padding or a
window past the bottom/right edge make them needed.

Semantics (the op table's references): max pads with -inf and propagates NaN (the first NaN wins);
avg counts padded zeros (PyTorch's count_include_pad=True). max_pool2d_vjp sends each window's
gradient to its first maximum in row-major window order (the first NaN if there is one; a padded
position when every value is -inf, so that window's gradient is dropped), which the gather
recomputes for every window covering the element.
"""

from __future__ import annotations

import numpy as np

from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from jitnet.backends.cuda.launch import plan_source, single_source
from jitnet.backends.cuda.matmul import SOURCE_IMPORTS, _cdiv

POOL_OPS = ("max_pool2d", "avg_pool2d", "max_pool2d_vjp", "avg_pool2d_vjp")


def pool2d_out_hw(in_shape, kernel, stride, padding) -> tuple[int, int]:
    (h, w), (kh, kw), (sh, sw), (ph, pw) = in_shape[2:], kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or ho <= 0 or wo <= 0:
        raise ValueError(f"pool kernel: window {kernel}, stride {stride}, padding {padding} on input {in_shape}")
    return ho, wo


def pool2d_source(op: str, in_shape, kernel, stride, padding, dtype) -> str:
    """Module source defining `launch` for `op` (see the module doc)."""
    if op not in POOL_OPS:
        raise ValueError(f"pool kernel: unknown op {op!r}; expected one of {POOL_OPS}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op} kernel: float32 or float64, not {dtype}")
    p = _Pool(op, tuple(in_shape), tuple(kernel), tuple(stride), tuple(padding), dtype.name)
    forward = not op.endswith("_vjp")
    total = p.n * p.c * (p.ho * p.wo if forward else p.h * p.w)
    args = {"max_pool2d": "out, x", "avg_pool2d": "out, x", "max_pool2d_vjp": "out, x, g", "avg_pool2d_vjp": "out, g"}
    header = [
        f"# jitnet cuda kernel: {op}, input {p.in_shape}, output {(p.n, p.c, p.ho, p.wo)}, {p.ty}",
        f"# window {p.kernel}, stride {p.stride}, padding {p.padding}",
    ]
    n_params = len(args[op].split(", "))
    if total == 0:
        return "\n".join(header + SOURCE_IMPORTS + [plan_source(n_params), ""])
    sig = f"void({', '.join([f'{p.ty}[::1]'] * n_params)})"
    body = {"max_pool2d": p.max_forward, "avg_pool2d": p.avg_forward}.get(op) or p.backward
    lines = [
        f"@cuda.jit({sig}, cache=True)",
        f"def kernel({args[op]}):",
        f"    for el in range(cuda.grid(1), {total}, cuda.gridsize(1)):",
        *("        " + line for line in body(op)),
        "",
        "",
        single_source("kernel", max(1, min(MAX_BLOCKS, _cdiv(total, BLOCK))), BLOCK, n_params),
        "",
    ]
    return "\n".join(header + SOURCE_IMPORTS + lines)


class _Pool:
    def __init__(self, op, in_shape, kernel, stride, padding, ty):
        if len(in_shape) != 4:
            raise ValueError(f"{op} kernel: needs an (N, C, H, W) input, got {in_shape}")
        self.in_shape, self.kernel, self.stride, self.padding, self.ty = in_shape, kernel, stride, padding, ty
        self.n, self.c, self.h, self.w = in_shape
        self.ho, self.wo = pool2d_out_hw(in_shape, kernel, stride, padding)
        (self.kh, self.kw), (self.sh, self.sw), (self.ph, self.pw) = kernel, stride, padding

    def _tap_conds(self, yy: str, xx: str) -> list[str]:
        """The bounds tests a window tap at (yy, xx) needs: only on the sides padding or the last
        window can cross."""
        conds = []
        if self.ph > 0:
            conds.append(f"{yy} >= 0")
        if (self.ho - 1) * self.sh - self.ph + self.kh > self.h:
            conds.append(f"{yy} < {self.h}")
        if self.pw > 0:
            conds.append(f"{xx} >= 0")
        if (self.wo - 1) * self.sw - self.pw + self.kw > self.w:
            conds.append(f"{xx} < {self.w}")
        return conds

    def _window(self, oy: str, ox: str, visit: list[str]) -> list[str]:
        """Loops over the window of output (oy, ox) in row-major order; `visit` runs for each tap
        (yy, xx) with `inside` telling whether it is in the input."""
        conds = self._tap_conds("yy", "xx")
        lines = [
            f"for i in range({self.kh}):",
            f"    yy = {oy} * {self.sh} - {self.ph} + i",
            f"    for j in range({self.kw}):",
            f"        xx = {ox} * {self.sw} - {self.pw} + j",
            f"        inside = {' and '.join(conds) if conds else 'True'}",
        ]
        return lines + ["        " + line for line in visit]

    def _out_coords(self) -> list[str]:
        return [
            f"ox = el % {self.wo}",
            f"oy = (el // {self.wo}) % {self.ho}",
            f"base = (el // {self.ho * self.wo}) * {self.h * self.w}",
        ]

    def max_forward(self, op: str) -> list[str]:
        visit = [
            "if inside:",
            f"    v = x[u64(base + yy * {self.w} + xx)]",
            "    if best == best and not (v <= best):  # a larger value or the first NaN",
            "        best = v",
        ]
        return [
            *self._out_coords(),
            f"best = np.{self.ty}(-np.inf)",
            *self._window("oy", "ox", visit),
            "out[u64(el)] = best",
        ]

    def avg_forward(self, op: str) -> list[str]:
        visit = ["if inside:", f"    acc += x[u64(base + yy * {self.w} + xx)]"]
        return [
            *self._out_coords(),
            f"acc = np.{self.ty}(0.0)",
            *self._window("oy", "ox", visit),
            f"out[u64(el)] = acc / np.{self.ty}({self.kh * self.kw})",
        ]

    def backward(self, op: str) -> list[str]:
        """Input element (nc, h, w) gathers from the windows (oy, ox) covering it: oy*sh - ph <= h <
        oy*sh - ph + kh, i.e. ceil((h + ph - kh + 1) / sh) <= oy <= (h + ph) // sh, within [0, Ho)."""
        lines = [
            f"wx = el % {self.w}",
            f"hy = (el // {self.w}) % {self.h}",
            f"nc = el // {self.h * self.w}",
            f"base = nc * {self.h * self.w}",
            f"gbase = nc * {self.ho * self.wo}",
            f"acc = np.{self.ty}(0.0)",
            f"for oy in range(max(0, (hy + {self.ph - self.kh + self.sh}) // {self.sh}), "
            f"min({self.ho}, (hy + {self.ph}) // {self.sh} + 1)):",
            f"    for ox in range(max(0, (wx + {self.pw - self.kw + self.sw}) // {self.sw}), "
            f"min({self.wo}, (wx + {self.pw}) // {self.sw} + 1)):",
        ]
        gval = f"g[u64(gbase + oy * {self.wo} + ox)]"
        if op == "avg_pool2d_vjp":
            return lines + [f"        acc += {gval}", f"out[u64(el)] = acc / np.{self.ty}({self.kh * self.kw})"]
        # the window's first maximum: pads are -inf candidates in window order, so when every value
        # is -inf a pad can be the first maximum (and the gradient goes nowhere), as in the reference
        visit = [
            f"v = x[u64(base + yy * {self.w} + xx)] if inside else np.{self.ty}(-np.inf)",
            "if best == best and not (v <= best):  # a larger value or the first NaN",
            "    best = v",
            "    by = yy",
            "    bx = xx",
        ]
        first = [
            f"best = np.{self.ty}(-np.inf)",
            f"by = oy * {self.sh} - {self.ph}",
            f"bx = ox * {self.sw} - {self.pw}",
        ]
        lines += ["        " + line for line in first + self._window("oy", "ox", visit)]
        lines += ["        if by == hy and bx == wx:", f"            acc += {gval}", "out[u64(el)] = acc"]
        return lines
