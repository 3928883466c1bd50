"""CPU batched matrix products: out[z] = A[z] @ B[z], on the GEMM core (cpu/gemm.py) or BLAS.

`matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile=None)` returns a module whose
`kernel(out, a, b, *epilogue params)` runs on flat, contiguous float32 or float64 buffers:
- a: (batch, m, k) row-major, or (batch, k, m) when `a_trans` (A is read transposed, no copy);
- b: (batch, k, n), or (batch, n, k) when `b_trans`;
- out: (batch, m, n) row-major.
The module is a chunked parallel kernel (cpu/parallel.py): each thread owns a block of row panels
(or of column panels, whichever split balances better at run time) of every product in the batch,
calls the core on it, then applies the fused epilogue to the block while it is in cache. Small
products run on one thread. This module decides everything shape-dependent (tile, packing,
threads, batch offsets, epilogue); the core only multiplies.

Tile measurements (AMD EPYC Zen 4, 2 cores; FMA peak measured at ~225 GFLOP/s float32 for 2 cores,
~113 per core: one 512-bit FMA per cycle at ~3.5 GHz. See `python -m bench --only fma_peak,matmul_tiles`):
  micro-kernel alone, one core, operands in L1, float32, kc=256 (GFLOP/s):
    MR x NR:  6x32 116 | 8x32 113 | 4x48 113 | 4x64 116 | 14x16 114 | 28x16 114 | 12x32 49 (spills)
On AVX2 (AMD EPYC Zen 3, 2 cores, no AVX-512: each v16f32 intrinsic becomes two ymm ops), the whole
kernel, float32, 2 threads, GFLOP/s (torch 2.13's matmul: 64-124 on the first three shapes), B read
in place as the rule then chose (it packs for this tile now, see `packing`):
    m x n x k:    2048x128x512  2048x512x128  2048x128x512 B^T  128x512x2048 A^T  1024^3
    4x64k512m96       54            32           39            31           42
    8x16k512m96       74            85           84            50           44
    6x16k256m96      119           106          106            67           60
    6x16k256m192     118            83          108            48           86
    4x32k512m96       70            60           65            37           43

ROUTING (`choose_path`): a matrix-vector product (m == 1) or a product with n <= BLAS_MAX_N
columns goes to BLAS, which streams A once at memory speed; everything else runs the core, which
matches or beats OpenBLAS from 8 columns up (`python -m bench --only matmul_route`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jitnet.backends.cpu import gemm
from jitnet.backends.cpu.gemm import lanes_of
from jitnet.backends.cpu.parallel import chunked_kernel, jit_flags
from jitnet.codegen.epilogue import Epilogue

# ---------------------------------------------------------------------------------------------
# Tiles and routing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """mr x nr: the register block of C (nr a multiple of the vector width); kc: the K block (a
    packed B micro-panel kc x nr should sit in L1); mc: rows of A packed per chunk (mc x kc in L2)."""

    mr: int
    nr: int
    kc: int
    mc: int

    @property
    def name(self) -> str:
        return f"{self.mr}x{self.nr}k{self.kc}m{self.mc}"


# Chosen by measurement (`python -m bench --only matmul_tiles`); the docstring's tables record the
# sweeps. The vector registers decide: 32 zmm (AVX-512) hold a 4 x 4-vector block of C with room for
# B's vectors; 16 ymm (AVX2) hold 6 x 2 ymm (12) plus 2 of B and a broadcast: the AVX-512 tile there
# needs 32 accumulators and spills (2-3x slower, see the docstring).
TILES_AVX512 = {
    "float32": Tile(4, 64, 512, 96),
    "float64": Tile(4, 32, 512, 96),
}
TILES_AVX2 = {
    "float32": Tile(6, 16, 256, 96),
    "float64": Tile(6, 8, 256, 96),
}
TILES = TILES_AVX512 if gemm.has_avx512() else TILES_AVX2

BATCH_SPLIT_MIN = 4  # products per thread from which threads split the batch, not each product
SERIAL_MAX_WORK = 64**3  # m*n*k*batch below this: one thread
BLAS_MAX_N = 4  # choose_path: products with n <= BLAS_MAX_N (or m == 1) go to BLAS


def choose_tile(m: int, n: int, k: int, dtype) -> Tile:
    """The tile for a shape: TILES[dtype], unless that pads n by a vector or more: then 8 rows x 1
    vector (W = 16 float32, 8 float64; on AVX-512, where TILES is 4 rows x 4 vectors). At most two
    tiles, so at most two GEMM cores to compile. Measured on AVX-512 (float32, 2 threads, GFLOP/s, 8x16 / 6x32 / 4x64): 1024 x 80 x 1024: 204 /
    166 / 139; 1024 x 48 x 1024: 226 / 159 / 173; 1024 x 25 x 1024: 166 / 160 / 87; and 4x64 where
    it pads little: 1024^3 211 / - / 220, 500 x 64 x 20 118 / - / 156."""
    w = lanes_of(dtype)
    big = TILES[np.dtype(dtype).name]
    if big.nr > w and _cdiv(n, big.nr) * big.nr - n >= w:
        return Tile(8, w, big.kc, big.mc)
    return big


def resolve_tile(tile: Tile | str | None, dtype, m: int = 0, n: int = 0, k: int = 0) -> Tile:
    if tile is None:
        return choose_tile(m, n, k, dtype) if n else TILES[np.dtype(dtype).name]
    if isinstance(tile, str):
        mr, rest = tile.split("x")
        nr, rest = rest.split("k")
        kc, mc = rest.split("m")
        return Tile(int(mr), int(nr), int(kc), int(mc))
    return tile


PACK_B_MIN_REUSE = 4  # pack B only if each packed panel serves at least this many A micro-panels
PACK_B_MIN_BYTES = 768 << 10  # ... and the B block a thread sweeps (kc x its columns) is this big (~L2)


def thread_split(m: int, n: int, tile: Tile, threads: int = 2) -> bool:
    """True: threads split the row panels, False: the column panels; the split that leaves the
    busiest thread less work, on a tie rows if n <= m (each thread packs all of B then, not all of A)."""
    mp, np_ = _cdiv(m, tile.mr), _cdiv(n, tile.nr)
    rows, cols = _cdiv(mp, threads) * np_, _cdiv(np_, threads) * mp
    return rows < cols or (rows == cols and n <= m)


def packing(m: int, n: int, k: int, b_trans: bool, tile: Tile, itemsize: int = 4, threads: int = 2) -> bool:
    """Whether B is packed, measured (`python -m bench --only matmul_tiles`):
    - A is always read in place: broadcasts from MR rows of A (or MR contiguous values of a row of
      A^T) stream fine, and packing A never won a measurement (1024^3: 10.6 ms packed, 10.4 in place).
    - B is packed when it is transposed (its rows run along k), and when a thread's B block
      (kc x its columns) is about L2 size or more and each packed panel serves PACK_B_MIN_REUSE or more
      A micro-panels: read in place, a B micro-panel with a row stride of 4 KB maps kc rows onto a
      few cache sets and is fetched from L3 again for every A micro-panel (1024^3: 14.0 ms in place,
      10.4 packed), while a block that fits in L2 is faster in place (256^3: 149 us vs 173).
    - ... and always (given the reuse) when a micro-panel's row of B is one cache line or less (the
      AVX2 tile's 16 float32): in place, every k step of the micro-kernel touches a new line of a
      new row. Measured on AVX2 (GFLOP/s, in place / packed): 1024^3 88 / 115, 2048 x 512 x 128
      88 / 114, 256^3 88 / 99, 64 x 512 x 784 76 / 86, 128^3 73 / 74, 512 x 96 x 128 90 / 89."""
    mp, np_ = _cdiv(m, tile.mr), _cdiv(n, tile.nr)
    kc = _cdiv(k, max(1, _cdiv(k, tile.kc)))
    by_rows = thread_split(m, n, tile, threads)
    reuse = mp / threads if by_rows else mp  # row panels of a thread that meet each B panel
    cols = n if by_rows else _cdiv(np_, threads) * tile.nr
    big = kc * cols * itemsize >= PACK_B_MIN_BYTES
    narrow = tile.nr * itemsize <= 64
    return b_trans or ((big or narrow) and reuse >= PACK_B_MIN_REUSE)


def choose_path(m: int, n: int, k: int, batch: int = 1) -> str:
    """'numba' or 'blas' for a product of this shape: the rule ROUTING in the module docstring."""
    return "blas" if m == 1 or n <= BLAS_MAX_N else "numba"


# ---------------------------------------------------------------------------------------------
# Source generation
# ---------------------------------------------------------------------------------------------


IMPORTS = [  # what a generated module (matmul's, conv's, pool's, or an epilogue pass) imports
    "import numpy as np",
    "from numba import njit",
    "from numba.types import void, boolean, int8, int16, int32, int64, uint8, float32, float64",
    "",
    "from jitnet.backends.cpu import gemm",
    "from jitnet.backends.cpu import vmath as vm  # for fused epilogues",
    "from jitnet.backends.cpu.intrinsics import fmaximum, fminimum, ld, st",
    "from jitnet.backends.cpu.signature import readonly",
]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _batch_offset(out_batch: tuple[int, ...], op_batch: tuple[int, ...], size: int) -> str:
    """Source of the flat offset of operand matrix z (z indexes out_batch row-major) when the operand's
    batch shape broadcasts against out_batch: size-1 (or missing leading) dims contribute nothing."""
    op_batch = (1,) * (len(out_batch) - len(op_batch)) + tuple(op_batch)
    if op_batch == out_batch:
        return f"z * {size}"
    terms, inner, stride = [], 1, size
    for d in range(len(out_batch) - 1, -1, -1):
        if op_batch[d] != 1:
            terms.append(f"(z // {inner} % {out_batch[d]}) * {stride}")
            stride *= op_batch[d]
        inner *= out_batch[d]
    return " + ".join(terms) if terms else "0"


def _param_types(epilogue, default: str) -> list[str]:
    """numba type names of the epilogue's buffers: `epilogue.dtypes` if it has them, else the
    output's dtype for each."""
    if epilogue is None:
        return []
    dts = getattr(epilogue, "dtypes", None)
    if dts is None:
        return [default] * len(epilogue.params)
    if len(dts) != len(epilogue.params):
        raise ValueError(f"epilogue has {len(epilogue.params)} params but {len(dts)} dtypes")
    return [{"bool": "boolean"}.get(np.dtype(t).name, np.dtype(t).name) for t in dts]


def epilogue_buffers(epilogue, default: str) -> list[tuple[str, str]]:
    """(name, dtype) of the epilogue's buffers, as chunked kernels pass them."""
    if epilogue is None:
        return []
    types = [{"boolean": "bool"}.get(t, t) for t in _param_types(epilogue, default)]
    return list(zip(epilogue.params, types))


def gemm_call(e: _Lines, ind: int, dt: np.dtype, t: Tile, operands, mnk, flags, block) -> None:
    """The core's call on one product: operands ((array, offset) of C, A, B: each is passed as a
    `span` of the elements the core addresses, checked in checked mode); flags (a_trans, b_trans,
    pack_b, accumulate); block (r_lo, r_hi, j_lo, j_hi)."""
    m, n, k = mnk
    spans = [f"span({x}, {o}, {size})" for (x, o), size in zip(operands, (m * n, m * k, k * n))]
    args = [*spans, *map(str, mnk), *(str(int(f)) for f in flags), *block, str(t.kc), str(max(1, t.mc // t.mr))]
    e(ind, f'call("{gemm.symbol(dt, t.mr, t.nr)}", {", ".join(args)})')


def apply_epilogue(e: _Lines, ind: int, epilogue, target: str, offset: str, idx: list[str]) -> None:
    """target[offset] = epilogue(target[offset]) at the output index idx."""
    e(ind, f"o_ep = {offset}")
    e(ind, f"v_ep = ld({target}, o_ep)")
    lines, val = epilogue.render("v_ep", idx)
    for line in lines:
        e(ind, line)
    e(ind, f"st({target}, o_ep, {val})")


def matmul_source(
    m: int,
    n: int,
    k: int,
    batch: int,
    dtype,
    a_trans: bool = False,
    b_trans: bool = False,
    tile: Tile | str | None = None,
    parallel: bool | None = None,
    pack_b: bool | None = None,
    epilogue=None,
    a_batch: tuple[int, ...] | None = None,
    b_batch: tuple[int, ...] | None = None,
    accumulate: bool = False,
) -> str:
    """The module source of `kernel(out, a, b, *epilogue.params)` for out[z] = A[z] @ B[z] (see
    the module docstring). `parallel` forces (True) or forbids (False) threads, `pack_b` packing B;
    None decides by the rules (SERIAL_MAX_WORK, `packing`).

    `batch` is the number of products or the output's batch shape; `a_batch` / `b_batch` are the
    operands' batch shapes when they broadcast against it (numpy rules, size-1 dims are read
    again for every index: no copy). `epilogue` (see `Epilogue`) rewrites each finished element
    of C while its block is in cache. `accumulate`: C += A @ B instead of C = A @ B."""
    out_batch = tuple(batch) if isinstance(batch, (tuple, list)) else (int(batch),)
    batch = int(np.prod(out_batch, dtype=np.int64))
    a_batch = out_batch if a_batch is None else tuple(a_batch)
    b_batch = out_batch if b_batch is None else tuple(b_batch)
    for name, shape in (("a", a_batch), ("b", b_batch)):
        padded = (1,) * (len(out_batch) - len(shape)) + shape
        if len(shape) > len(out_batch) or any(s not in (1, o) for s, o in zip(padded, out_batch)):
            raise ValueError(f"matmul {name} batch {shape} does not broadcast to {out_batch}")
    if accumulate and epilogue is not None:
        raise ValueError("an epilogue needs the final C: not with accumulate")
    params = list(epilogue.params) if epilogue is not None else []
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"cpu matmul kernel supports float32 and float64, not {dt}")
    t = resolve_tile(tile, dt, m, n, k)
    W = lanes_of(dt)
    if t.nr % W or t.mr < 1 or t.kc < 1 or t.mc < t.mr:
        raise ValueError(f"bad tile {t} for {dt} (nr must be a multiple of {W})")
    M, N, K, B = int(m), int(n), int(k), int(batch)
    T = dt.name
    if parallel is None:
        parallel = M * N * K * B >= SERIAL_MAX_WORK
    if pack_b is None:
        pack_b = packing(M, N, K, b_trans, t, dt.itemsize)
    if b_trans and not pack_b:
        raise ValueError("a transposed B is always packed")
    MP, NP = _cdiv(M, t.mr), _cdiv(N, t.nr)  # row panels of A, column panels of B
    a_str = f"a: ({B}, {K}, {M}) (A transposed)" if a_trans else f"a: ({B}, {M}, {K})"
    b_str = f"b: ({B}, {N}, {K}) (B transposed)" if b_trans else f"b: ({B}, {K}, {N})"
    header = [
        f"# jitnet cpu matmul: out ({B}, {M}, {N}) {T} = A @ B; {a_str}; {b_str}",
        f"# tile MR={t.mr} NR={t.nr} KC={t.kc} MC={t.mc}; {'parallel' if parallel else 'serial'}; "
        f"B {'packed' if pack_b else 'read in place'}",
        *IMPORTS,
        "",
    ]
    pdecl = "".join(f", {p}" for p in params)
    ptypes = "".join(f", readonly({p})" for p in _param_types(epilogue, T))
    sig = f"void({T}[::1], readonly({T}), readonly({T}){ptypes})"
    e = _Lines()
    if M == 0 or N == 0 or K == 0:  # nothing to multiply: out is empty, or all zeros (or unchanged)
        e(0, f"@njit({sig}, cache=True, {jit_flags()})")
        e(0, f"def kernel(out, a, b{pdecl}):")
        e(1, f"for z in range({B}):")
        e(2, f"for i in range({M}):")
        e(3, f"for j in range({N}):")
        e(4, f"v_ep = {'ld(out, (z * ' + str(M) + ' + i) * ' + str(N) + ' + j)' if accumulate else T + '(0)'}")
        ep_val = "v_ep"
        if epilogue is not None:
            lines, ep_val = epilogue.render("v_ep", ["z", "i", "j"])
            for line in lines:
                e(4, line)
        e(4, f"st(out, (z * {M} + i) * {N} + j, {ep_val})")
        return "\n".join(header + e.lines) + "\n"

    # a batch of at least BATCH_SPLIT_MIN products per thread: each thread takes whole products
    # (attention's 64 products of 128 x 128 x 32: no B panel packed by both threads, no product cut
    # into slivers); otherwise split rows or columns among the threads: the split that leaves the
    # busiest thread less work; on a tie, the one that packs less twice (rows: every thread packs all of B)
    e(1, f"if {B} >= {BATCH_SPLIT_MIN} * nt:")
    e(2, f"z_lo, z_hi, r_lo, r_hi, j_lo, j_hi = t * {B} // nt, (t + 1) * {B} // nt, 0, {MP}, 0, {NP}")
    e(1, "else:")
    e(2, f"z_lo, z_hi = 0, {B}")
    e(2, f"rows = ({MP} + nt - 1) // nt * {NP}")
    e(2, f"cols = ({NP} + nt - 1) // nt * {MP}")
    e(2, f"by_rows = rows < cols or (rows == cols and {N <= M})")
    e(2, "tm = nt if by_rows else 1")
    e(2, "tn = 1 if by_rows else nt")
    e(2, "ti = t // tn")
    e(2, "tj = t - ti * tn")
    e(2, f"r_lo = ti * {MP} // tm")
    e(2, f"r_hi = (ti + 1) * {MP} // tm")
    e(2, f"j_lo = tj * {NP} // tn")
    e(2, f"j_hi = (tj + 1) * {NP} // tn")
    e(1, "for z in range(z_lo, z_hi):")
    offsets = (f"z * {M * N}", _batch_offset(out_batch, a_batch, M * K), _batch_offset(out_batch, b_batch, K * N))
    operands = list(zip(("out", "a", "b"), offsets))
    flags, block = (a_trans, b_trans, pack_b, accumulate), ("r_lo", "r_hi", "j_lo", "j_hi")
    gemm_call(e, 2, dt, t, operands, (M, N, K), flags, block)
    if epilogue is not None:  # the finished block, still in cache
        e(2, f"for i in range(r_lo * {t.mr}, min(r_hi * {t.mr}, {M})):")
        e(3, f"for j in range(j_lo * {t.nr}, min(j_hi * {t.nr}, {N})):")
        apply_epilogue(e, 4, epilogue, "out", f"(z * {M} + i) * {N} + j", ["z", "i", "j"])
    buffers = [("out", T), ("a", T), ("b", T), *epilogue_buffers(epilogue, T)]
    body = chunked_kernel(buffers, sig, e.lines, jit_flags(), threads="num_threads()" if parallel else "1")
    return "\n".join(header + [gemm.require_line(dt, t.mr, t.nr)] + body) + "\n"


# ---------------------------------------------------------------------------------------------
# The engine's entry: one matmul node -> a function on flat buffers
# ---------------------------------------------------------------------------------------------


class Reindexed:
    """An epilogue seen through another index: `reindex` maps the kernel's index expressions to the
    ones the epilogue renders with (a folded product's rows, conv's output pixels)."""

    def __init__(self, epilogue, reindex: Callable[[list[str]], list[str]]):
        self.epilogue, self.reindex = epilogue, reindex
        self.params = list(epilogue.params)
        self.dtypes = getattr(epilogue, "dtypes", None)

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]:
        return self.epilogue.render(v, self.reindex(idx))


def epilogue_source(batch: int, m: int, n: int, dtype, epilogue) -> str:
    """Module source of `kernel(out, *params)`: the epilogue applied in place to out (batch, m, n),
    one pass over rows (threads take runs of them): the BLAS and numpy routes' epilogue, right
    after the product."""
    dt = np.dtype(dtype)
    t = {"bool": "boolean"}.get(dt.name, dt.name)
    ptypes = "".join(f", readonly({p})" for p in _param_types(epilogue, t))
    rows = batch * m
    e = _Lines()
    e(1, f"for r in range(t * {rows} // nt, (t + 1) * {rows} // nt):")
    e(2, f"z = r // {m}")
    e(2, f"i = r - z * {m}")
    e(2, f"for j in range({n}):")
    apply_epilogue(e, 3, epilogue, "out", f"r * {n} + j", ["z", "i", "j"])
    threads = "num_threads()" if rows * n >= 1 << 15 else "1"
    buffers = [("out", dt), *epilogue_buffers(epilogue, dt.name)]
    body = chunked_kernel(buffers, f"void({t}[::1]{ptypes})", e.lines, jit_flags(), threads=threads)
    return (
        "\n".join([f"# jitnet cpu matmul epilogue over out ({batch}, {m}, {n}) {dt.name}", *IMPORTS, "", *body]) + "\n"
    )


def matmul_kernel(
    out_shape, a_shape, b_shape, dtype, a_trans: bool = False, b_trans: bool = False, epilogue: Epilogue | None = None
) -> tuple[Callable, str]:
    """(fn(out, a, b, *epilogue.params), source) for out = a @ b on flat contiguous buffers, with
    numpy's batch broadcasting (operands of equal rank, size-1 batch dims broadcast). `a_shape` /
    `b_shape` are the buffers' shapes: with `a_trans` a's buffer holds (..., K, M) and is read as
    its transpose in place (likewise `b_trans`: (..., N, K)).

    Route: float32/float64 products run the generated kernel, except those `choose_path` sends to
    BLAS (np.matmul on views of the buffers, no copy); integer products run np.matmul (numpy's
    own loops: BLAS has no integer GEMM). An epilogue runs inside the generated kernel's stores,
    or, on the numpy routes, as one generated pass right after the product. A product (B, M, K) @
    (K, N) whose B operand is shared by the whole batch runs as one (B*M, K) @ (K, N)."""
    from jitnet.codegen import cache

    dt = np.dtype(dtype)
    out_shape, a_shape, b_shape = tuple(out_shape), tuple(a_shape), tuple(b_shape)
    sa = a_shape[:-2] + a_shape[-2:][::-1] if a_trans else a_shape  # logical (..., M, K)
    sb = b_shape[:-2] + b_shape[-2:][::-1] if b_trans else b_shape  # logical (..., K, N)
    m, k, n = sa[-2], sa[-1], sb[-1]
    if sb[-2] != k or out_shape[-2:] != (m, n):
        raise ValueError(f"matmul shapes do not fit: {sa} @ {sb} -> {out_shape}")
    out_batch = out_shape[:-2]
    batch = int(np.prod(out_batch, dtype=np.int64))
    if dt in (np.float32, np.float64) and choose_path(m, n, k, batch) == "numba":
        ep = epilogue
        a_full = sa[:-2] == out_batch
        if batch > 1 and a_full and not a_trans and int(np.prod(sb[:-2], dtype=np.int64)) == 1:
            if ep is not None:
                ep = Reindexed(
                    ep, lambda idx: [f"({idx[1]}) // {m}", f"({idx[1]}) % {m}", idx[2]]
                )  # row r: [r // M, r % M]
            source = matmul_source(batch * m, n, k, 1, dt, False, b_trans, epilogue=ep)
        else:
            source = matmul_source(
                m, n, k, out_batch or 1, dt, a_trans, b_trans, epilogue=ep, a_batch=sa[:-2], b_batch=sb[:-2]
            )
        return cache.load(source), source

    ep_fn = cache.load(epilogue_source(batch, m, n, dt, epilogue)) if epilogue is not None else None
    route = "BLAS" if dt in (np.float32, np.float64) else "numpy's integer loops"

    def run(out, a, b, *params):
        av, bv = a.reshape(a_shape), b.reshape(b_shape)
        np.matmul(
            np.swapaxes(av, -1, -2) if a_trans else av,
            np.swapaxes(bv, -1, -2) if b_trans else bv,
            out=out.reshape(out_shape),
        )
        if ep_fn is not None:
            ep_fn(out, *params)

    source = f"# extern matmul {sa} @ {sb} -> {out_shape} {dt.name}: np.matmul ({route}), choose_path\n"
    if epilogue is not None:
        source += epilogue_source(batch, m, n, dt, epilogue)
    return run, source
