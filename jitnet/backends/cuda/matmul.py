"""CUDA source for batched matrix products: out[z] = A[z] @ B[z], shared-memory and register tiled.

`matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile=None, *, a_batch, b_batch, epilogue)`
returns a module whose `launch(out, a, b, *epilogue.params)` runs on flat, contiguous device buffers:
- a: (batch, m, k) row-major, or (batch, k, m) when `a_trans` (A is then read transposed, no copy);
- b: (batch, k, n), or (batch, n, k) when `b_trans`;
- out: (batch, m, n) row-major.
`batch` may be a shape, and `a_batch`/`b_batch` the operands' batch shapes broadcasting against it
(size-1 dims: each block computes its operands' batch offsets from z). An `Epilogue` (bias,
activation, scale, residual: elementwise work the fuser hands over) runs at each element's store.
float32/float64 take the tiled kernel below; int32/int64 a simple one (a thread per output).
`TiledBody` is the tiled kernel's body, which conv.py's implicit GEMMs subclass; it can also split
K over the grid's z dimension (`split_k`) for outputs with too few tiles to fill the GPU.
Shapes, strides and the launch configuration are constants of the generated source (which is the
kernel's cache key), so every index is constant arithmetic and every edge test that a shape makes
unnecessary is left out of the source.

The kernel (siboehm's SGEMM ladder, step "2-D block tiling": ~69% of cuBLAS in CUDA C)
-------------------------------------------------------------------------------------
- A block of T = (BM/TM) * (BN/TN) threads computes a BM x BN tile of out. It walks K in steps of
  BK; each step every thread loads (BM*BK)/T elements of A and (BK*BN)/T of B from global memory
  into shared memory, the block synchronises, and every thread does BK rank-1 updates of its
  TM x TN outputs, held in TM*TN scalar registers (generated as separate variables, so nothing
  can fall into local memory).
- Thread (tx, ty), tx = t % (BN/TN), ty = t // (BN/TN), owns rows ty + i*(BM/TM) and columns
  tx + j*(BN/TN) of the tile (interleaved, not a contiguous TM x TN block): in the inner loop the
  threads of a warp read consecutive words of a B row (conflict-free) and one or two words of an
  A row (broadcast), and in the epilogue consecutive threads store consecutive columns (coalesced).
- Shared memory holds both operands k-major: As[kk][m] (BK rows of BM + pad) and Bs[kk][n] (BK
  rows of BN + pad), so the inner loop reads both as rows. A (when not `a_trans`) and B (when
  `b_trans`) are k-contiguous in global memory: they are loaded along k (consecutive threads read
  consecutive addresses: coalesced) and stored transposed, which would put a warp's stores in a
  few banks; those rows get a pad chosen at generation time by simulating the banks of each warp
  (`smem_conflicts`), so stores and reads are all conflict-free for the tiles in TILES.
- Global loads are guarded only where the shape needs it (rows past M, columns past N) and write
  zeros to shared memory instead; full K steps run unguarded and a final partial step (K % BK)
  loads with a k guard and runs only K % BK rank-1 updates. Stores are guarded likewise.
- Prefetch (Tile.prefetch, on by default): the global loads of step s+1 go into registers right
  after step s's tile is in shared memory, before its rank-1 updates, so their latency hides
  behind the arithmetic; one shared buffer, two barriers per step.
- The BK rank-1 updates are unrolled in the source, and every array index is cast to uint64
  (`u64(...)`): numba emits negative-index wraparound code for signed indices, which would cost
  ~5 integer instructions per shared load; unsigned, each read is `LDS [reg + constant]`.
  ptxas (sm_90, numba-cuda 0.30) on 128x128x8_8x8 float32 at 4096^3: 96 registers, no spills
  (128 with ragged edges and a partial K step), the K loop 512 FFMA, 128 LDS, 8 LDG, 8 STS and
  ~20 other instructions.
- Blocks: a 1-D grid over the (M/BM) x (N/BN) tiles in groups of GROUP_M tile rows (the blocks
  running together share A row panels and B column panels in L2), batch on the z grid dimension
  (a loop over z when batch exceeds the grid's z limit).

Arithmetic intensity: per K step a block loads BK*(BM + BN) elements and does 2*BM*BN*BK flops, so
CGMA = 2*BM*BN*BK / (s*BK*(BM + BN)) = 2*BM*BN / (s*(BM + BN)) flops per byte of global loads
(s = 4 for float32; BK cancels): 32 for 128x128, 21.3 for 128x64, 16 for 64x64, 8 for 32x32,
4 for 16x16 (float64: half). Per thread and per kk: TM + TN shared loads for TM*TN FMAs.

Tile choice: `choose_tile` (the rule, with MIN_BLOCKS and MIN_EFFICIENCY) over TILES, in order;
`tile=` (a Tile or a name) overrides it. Under numba's CUDA simulator (`simulator()`) the set is
SIM_TILES: tiny tiles of 16 threads, since the simulator runs a Python thread per CUDA thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from jitnet.backends.cuda.device import simulator
from jitnet.backends.cuda.kernels import BLOCK, MAX_BLOCKS
from jitnet.backends.cuda.launch import IMPORT, plan_source, single_source
from jitnet.codegen.epilogue import Epilogue
from jitnet.codegen.source import numba_type, prod

# Rule constants (tune on the GPU): a tile is taken only if its grid has at least MIN_BLOCKS blocks
# (one per SM of an H100: fewer leaves SMs idle) and at least MIN_EFFICIENCY of its computed
# outputs are real ones (the rest is padding past M and N).
MIN_BLOCKS = 132
SIM_MIN_BLOCKS = 4  # the same rule over SIM_TILES, at simulator sizes
MIN_EFFICIENCY = 0.75
GROUP_M = 2 if simulator() else 8  # tile rows per group of the block order (L2 reuse)
MAX_GRID_Z = 3 if simulator() else 65535  # the z grid limit; more batches loop (small under the simulator, to test it)
SMEM_LIMIT = 48 * 1024  # static shared memory per block


@dataclass(frozen=True)
class Tile:
    """BM x BN outputs per block, BK deep K steps, TM x TN outputs per thread."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    prefetch: bool = True  # load the next K step into registers before computing this one

    def __post_init__(self):
        if min(self.bm, self.bn, self.bk, self.tm, self.tn) < 1 or self.bm % self.tm or self.bn % self.tn:
            raise ValueError(f"bad matmul tile {self}: BM % TM and BN % TN must be 0")
        if self.threads > 1024:
            raise ValueError(f"matmul tile {self.name} needs {self.threads} threads per block (at most 1024)")

    @property
    def name(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}" + ("" if self.prefetch else "_noprefetch")

    @property
    def ntx(self) -> int:  # threads along N
        return self.bn // self.tn

    @property
    def nty(self) -> int:  # threads along M
        return self.bm // self.tm

    @property
    def threads(self) -> int:
        return self.ntx * self.nty

    def cgma(self, itemsize: int = 4) -> float:
        """Flops per byte loaded from global memory: 2*BM*BN*BK / (itemsize*(BM*BK + BK*BN))."""
        return 2 * self.bm * self.bn * self.bk / (itemsize * (self.bm * self.bk + self.bk * self.bn))


def _tiles(*tiles: Tile) -> dict[str, Tile]:
    return {t.name: t for t in tiles}


# The GPU set, in order of preference (largest CGMA first); every tile has 256 threads.
TILES = _tiles(
    Tile(128, 128, 8, 8, 8),  # large: CGMA 32, 64 accumulators per thread
    Tile(128, 64, 8, 8, 4),  # large M, fewer blocks along N: CGMA 21.3
    Tile(64, 64, 8, 4, 4),  # medium: CGMA 16
    Tile(32, 32, 16, 2, 2),  # small: CGMA 8
    Tile(16, 16, 16, 1, 1),  # tiny or skinny: CGMA 4
)
# The simulator's set: 16 threads a block (it runs a Python thread per CUDA thread).
SIM_TILES = _tiles(
    Tile(8, 8, 4, 2, 2),
    Tile(8, 4, 2, 2, 1),
    Tile(4, 4, 4, 1, 1),
)


def tile_set() -> dict[str, Tile]:
    return SIM_TILES if simulator() else TILES


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def choose_tile(m: int, n: int, k: int, batch: int = 1, tiles: dict[str, Tile] | None = None) -> Tile:
    """The rule: the first tile of the set (largest first) whose grid has at least MIN_BLOCKS blocks
    and whose padding past M and N wastes at most 1 - MIN_EFFICIENCY of the work; else, for
    problems too small to fill the GPU with any tile, the one with the most blocks (the smallest).
    K does not enter: it sets the length of each block's loop, not the grid."""
    tiles = tiles or tile_set()
    min_blocks = SIM_MIN_BLOCKS if tiles is SIM_TILES else MIN_BLOCKS
    tiles = list(tiles.values())

    def blocks(t: Tile) -> int:
        return batch * _cdiv(m, t.bm) * _cdiv(n, t.bn)

    def efficiency(t: Tile) -> float:
        return (m * n) / (_cdiv(m, t.bm) * t.bm * _cdiv(n, t.bn) * t.bn) if m and n else 1.0

    for t in tiles:
        if blocks(t) >= min_blocks and efficiency(t) >= MIN_EFFICIENCY:
            return t
    return max(tiles, key=lambda t: (blocks(t), efficiency(t), t.cgma()))


def resolve_tile(tile: Tile | str | None, m: int, n: int, k: int, batch: int = 1) -> Tile:
    if tile is None:
        return choose_tile(m, n, k, batch)
    if isinstance(tile, Tile):
        return tile
    for table in (TILES, SIM_TILES):
        if tile in table:
            return table[tile]
    raise ValueError(f"unknown matmul tile {tile!r}; expected a Tile or one of {[*TILES, *SIM_TILES]}")


# ---- thread -> element maps (shared by the generator and the bank analysis) ----


def _a_slot(tile: Tile, a_trans: bool, t: int, slot: int) -> tuple[int, int] | None:
    """(r, c): the A tile element (row r < BM, k index c < BK) that thread t loads in `slot`, or
    None. Consecutive threads take consecutive addresses of the global layout: along k for A (m, k),
    along m for A^T (k, m)."""
    e = t + slot * tile.threads
    if e >= tile.bm * tile.bk:
        return None
    return (e % tile.bm, e // tile.bm) if a_trans else (e // tile.bk, e % tile.bk)


def _b_slot(tile: Tile, b_trans: bool, t: int, slot: int) -> tuple[int, int] | None:
    """(c, col): the B tile element (k index c < BK, column col < BN) that thread t loads."""
    e = t + slot * tile.threads
    if e >= tile.bk * tile.bn:
        return None
    return (e % tile.bk, e // tile.bk) if b_trans else (e // tile.bn, e % tile.bn)


def _warp_degree(addresses: list[int | None], itemsize: int) -> int:
    """The most distinct words one bank serves for one warp's shared-memory access (1 = conflict-free).
    32 banks of 4 bytes; 8-byte accesses are served a half-warp at a time."""
    group = words = 128 // max(itemsize, 4)
    worst = 1
    for g in range(0, len(addresses), group):
        banks: dict[int, set[int]] = {}
        for addr in addresses[g : g + group]:
            if addr is not None:
                banks.setdefault(addr % words, set()).add(addr)
        worst = max([worst, *(len(s) for s in banks.values())])
    return worst


def _store_degree(tile: Tile, itemsize: int, stride: int, coords) -> int:
    worst = 1
    slots = _cdiv(max(tile.bm, tile.bn) * tile.bk, tile.threads)
    for slot in range(slots):
        for w in range(0, tile.threads, 32):
            addrs = []
            for t in range(w, min(w + 32, tile.threads)):
                rc = coords(t, slot)
                addrs.append(None if rc is None else rc[0] * stride + rc[1])
            worst = max(worst, _warp_degree(addrs, itemsize))
    return worst


def _pad(tile: Tile, itemsize: int, width: int, coords) -> int:
    """The smallest row pad (elements) of a k-major tile [BK][width] that makes its stores conflict-free
    (or least conflicted); coords(t, slot) -> (kk, x)."""
    best = min(range(33), key=lambda p: (_store_degree(tile, itemsize, width + p, coords), p))
    return best


@functools.cache
def _layout(tile: Tile, itemsize: int, a_trans: bool, b_trans: bool) -> tuple[int, int]:
    """(SA, SB): the row strides of As[BK][SA] and Bs[BK][SB]."""
    pad_a = _pad(tile, itemsize, tile.bm, lambda t, s: _swap(_a_slot(tile, a_trans, t, s)))
    pad_b = _pad(tile, itemsize, tile.bn, lambda t, s: _b_slot(tile, b_trans, t, s))
    return tile.bm + pad_a, tile.bn + pad_b


def _swap(rc):
    return None if rc is None else (rc[1], rc[0])


def smem_conflicts(tile: Tile, dtype, a_trans: bool, b_trans: bool) -> dict[str, int]:
    """Worst bank-conflict degree (1 = none) of each shared-memory access of the generated kernel."""
    itemsize = np.dtype(dtype).itemsize
    sa, sb = _layout(tile, itemsize, a_trans, b_trans)
    a_store = _store_degree(tile, itemsize, sa, lambda t, s: _swap(_a_slot(tile, a_trans, t, s)))
    b_store = _store_degree(tile, itemsize, sb, lambda t, s: _b_slot(tile, b_trans, t, s))

    def read(fn) -> int:
        worst = 1
        for w in range(0, tile.threads, 32):
            worst = max(worst, _warp_degree([fn(t) for t in range(w, min(w + 32, tile.threads))], itemsize))
        return worst

    a_read = max(read(lambda t, i=i: t // tile.ntx + i * tile.nty) for i in range(tile.tm))
    b_read = max(read(lambda t, j=j: t % tile.ntx + j * tile.ntx) for j in range(tile.tn))
    return {"a_store": a_store, "b_store": b_store, "a_read": a_read, "b_read": b_read}


# ---- epilogues: elementwise work fused into the store of each output element ----


def epilogue_signature(epilogue: Epilogue | None, dtype: np.dtype) -> tuple[list[str], list[str]]:
    """(names, numba array types) of an epilogue's extra kernel parameters."""
    if epilogue is None:
        return [], []
    names = list(epilogue.params)
    dts = getattr(epilogue, "dtypes", None) or [dtype] * len(names)
    if len(dts) != len(names):
        raise ValueError(f"epilogue has {len(names)} params {names} but {len(dts)} dtypes")
    return names, [f"{numba_type(np.dtype(d))}[::1]" for d in dts]


def emit_store(emit, indent: int, target: str, value: str, idx: list[str], epilogue: Epilogue | None) -> None:
    """`target = value`, through the epilogue when there is one."""
    if epilogue is not None:
        lines, value = epilogue.render(value, idx)
        for line in lines:
            emit(indent, line)
    emit(indent, f"{target} = {value}")


SOURCE_IMPORTS = [
    "import math",
    "",
    "import numpy as np",
    "from numba import cuda",
    "from numpy import uint64 as u64  # unsigned indices: no negative-index wraparound code",
    "from numba.types import void, boolean, int32, int64, float32, float64",
    "",
    "from jitnet.backends.cuda import devmath as dm  # for fused epilogues",
    IMPORT,
    "",
    "",
]


# ---- batch broadcasting ----


def _batch_shape(shape, out_batch: tuple[int, ...], which: str) -> tuple[int, ...]:
    """An operand's batch dims, left-padded with 1s to the output's rank; each 1 or the output's size."""
    if shape is None:
        return out_batch
    shape = (1,) * (len(out_batch) - len(shape)) + tuple(int(d) for d in shape)
    if len(shape) != len(out_batch) or any(d not in (1, o) for d, o in zip(shape, out_batch)):
        raise ValueError(f"matmul kernel: batch dims {shape} of {which} do not broadcast to {out_batch}")
    return shape


def batch_index(z: str, out_batch: tuple[int, ...], in_batch: tuple[int, ...]) -> str:
    """The linear batch index of an operand whose batch dims broadcast (size 1) against `out_batch`,
    as an expression of the output's linear batch index `z`."""
    if in_batch == out_batch:
        return z
    terms, inner, stride = [], 1, 1  # inner: product of the output dims after d; stride: the operand's
    for d in reversed(range(len(out_batch))):
        size = out_batch[d]
        if in_batch[d] == size and size > 1:
            coord = f"{z} // {inner}" if inner > 1 else z
            if d > 0:
                coord = f"({coord}) % {size}"
            terms.append(f"({coord}) * {stride}" if stride > 1 else f"({coord})")
            stride *= size
        inner *= size
    return " + ".join(reversed(terms)) or "0"


# ---- source ----


def matmul_source(
    m: int,
    n: int,
    k: int,
    batch: int | tuple[int, ...],
    dtype,
    a_trans: bool = False,
    b_trans: bool = False,
    tile: Tile | str | None = None,
    *,
    a_batch: tuple[int, ...] | None = None,
    b_batch: tuple[int, ...] | None = None,
    epilogue: Epilogue | None = None,
) -> str:
    """Module source defining `launch(out, a, b, *epilogue.params)`: out (batch, m, n) = A @ B (see
    the module doc). `batch` is the output's batch count or shape; `a_batch`/`b_batch` the operands'
    batch shapes when they broadcast (size-1 dims), default the output's. float32/float64 get the
    tiled kernel; int32/int64 a simple one (a thread per output, a K loop, wrapping like numpy)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64, np.int32, np.int64):
        raise TypeError(f"matmul kernel: float32, float64, int32 or int64, not {dtype}")
    out_batch = (int(batch),) if isinstance(batch, (int, np.integer)) else tuple(int(d) for d in batch)
    a_batch, b_batch = _batch_shape(a_batch, out_batch, "a"), _batch_shape(b_batch, out_batch, "b")
    nbatch = prod(out_batch)
    if min(m, n, k, *out_batch, 0) < 0:
        raise ValueError(f"matmul kernel: negative size in batch {out_batch}, (m, n, k) {(m, n, k)}")
    ty = dtype.name
    names, types = epilogue_signature(epilogue, dtype)
    args = ", ".join(["out", "a", "b", *names])
    sig = f"void({', '.join([f'{ty}[::1]'] * 3 + types)})"
    header = [
        f"# jitnet cuda kernel: matmul out{(*out_batch, m, n)} = A @ B, {ty}",
        f"# a: {(*a_batch, k, m)} read as A^T" if a_trans else f"# a: {(*a_batch, m, k)}",
        f"# b: {(*b_batch, n, k)} read as B^T" if b_trans else f"# b: {(*b_batch, k, n)}",
    ]
    if epilogue is not None:
        header.append(f"# epilogue params: {', '.join(names)}")
    if m == 0 or n == 0 or nbatch == 0:  # nothing to write
        return "\n".join(header + SOURCE_IMPORTS + [plan_source(3 + len(names)), ""])
    if dtype.kind == "i":
        body, launch = _integer_body(m, n, k, out_batch, a_batch, b_batch, ty, a_trans, b_trans, epilogue)
        header.append("# integer kernel: one thread per output element, a K loop")
    else:
        t = resolve_tile(tile, m, n, k, nbatch)
        sa, sb = _layout(t, dtype.itemsize, a_trans, b_trans)
        smem = t.bk * (sa + sb) * dtype.itemsize
        if smem > SMEM_LIMIT:
            raise ValueError(
                f"matmul tile {t.name} needs {smem} bytes of shared memory for {ty} (at most {SMEM_LIMIT})"
            )
        header.append(
            f"# tile {t.name}: {t.threads} threads, CGMA {t.cgma(dtype.itemsize):.1f} flop/byte, "
            f"shared As[{t.bk}][{sa}] Bs[{t.bk}][{sb}]"
        )
        gemm = _MatmulBody(t, m, n, k, ty, a_trans, b_trans, sa, sb, epilogue, out_batch, a_batch, b_batch)
        body = gemm.lines()
        launch = ((_cdiv(m, t.bm) * _cdiv(n, t.bn), 1, min(nbatch, MAX_GRID_Z)), t.threads)
    lines = [f"@cuda.jit({sig}, cache=True)", f"def kernel({args}):", *body, "", ""]
    lines += [single_source("kernel", *launch, 3 + len(names)), ""]
    return "\n".join(header + SOURCE_IMPORTS + lines)


def _integer_body(m, n, k, out_batch, a_batch, b_batch, ty, a_trans, b_trans, epilogue) -> tuple[list[str], str]:
    """Integer products: a grid-stride loop, one output element per thread per step, a plain K loop
    accumulating in the dtype (the sum wraps as numpy's does)."""
    total = prod(out_batch) * m * n
    za, zb = batch_index("z", out_batch, a_batch), batch_index("z", out_batch, b_batch)
    a_row, a_step = ("i", m) if a_trans else (f"i * {k}", 1)
    b_col, b_step = (f"j * {k}", 1) if b_trans else ("j", n)
    lines = [
        f"    for el in range(cuda.grid(1), {total}, cuda.gridsize(1)):",
        f"        z = el // {m * n}",
        f"        i = (el // {n}) % {m}",
        f"        j = el % {n}",
        f"        ai = ({za}) * {m * k} + {a_row}",
        f"        bi = ({zb}) * {k * n} + {b_col}",
        f"        acc = np.{ty}(0)",
        f"        for kk in range({k}):",
        f"            acc += a[u64(ai + kk * {a_step})] * b[u64(bi + kk * {b_step})]",
    ]
    emit = lambda indent, line: lines.append("    " * indent + line)
    emit_store(emit, 2, "out[u64(el)]", f"np.{ty}(acc)", ["z", "i", "j"], epilogue)
    blocks = max(1, min(MAX_BLOCKS, _cdiv(total, BLOCK)))
    return lines, (blocks, BLOCK)


def _plus(expr: str, const: int) -> str:
    return f"{expr} + {const}" if const else expr


class TiledBody:
    """The body of a tiled GEMM kernel: an out tile (BM x BN) of A (M x K) @ B (K x N), see the module
    doc. Subclasses (conv's implicit GEMM) change where operands are read from (`_a_slots`,
    `_b_slots`, `_a_load`, `_b_load`), the outer loop (`_outer`) and where outputs go (`_store_setup`,
    `_target`)."""

    def __init__(self, t: Tile, m, n, k, ty, a_trans, b_trans, sa, sb, epilogue: Epilogue | None):
        self.t, self.m, self.n, self.k, self.ty = t, m, n, k, ty
        self.a_trans, self.b_trans, self.sa, self.sb = a_trans, b_trans, sa, sb
        self.epilogue = epilogue
        self.out: list[str] = []
        self.zero = f"np.{ty}(0.0)"
        self.na = _cdiv(t.bm * t.bk, t.threads)  # load slots per thread
        self.nb = _cdiv(t.bk * t.bn, t.threads)
        self.splits, self.split_len = 1, k  # split K: see `split_k`
        self.out_size = 0  # with splits, the size of one partial output (block z writes its own)

    def split_k(self, splits: int, out_size: int) -> None:
        """Run K in `splits` ranges of whole BK steps, one per grid z index, each block storing its
        partial tile (no epilogue) at z * out_size + the element's output offset."""
        self.splits, self.out_size = splits, out_size
        self.split_len = _cdiv(_cdiv(self.k, self.t.bk), splits) * self.t.bk

    def emit(self, indent: int, line: str) -> None:
        self.out.append("    " * indent + line)

    def lines(self) -> list[str]:
        t, m, n, ty = self.t, self.m, self.n, self.ty
        e = self.emit
        gm, gn = _cdiv(m, t.bm), _cdiv(n, t.bn)
        e(1, f"As = cuda.shared.array({t.bk * self.sa}, {ty})")
        e(1, f"Bs = cuda.shared.array({t.bk * self.sb}, {ty})")
        e(1, "t = cuda.threadIdx.x")
        e(1, f"tx = t % {t.ntx}")
        e(1, f"ty = t // {t.ntx}")
        # block -> tile (grouped order: GROUP_M tile rows share the B column panels in L2)
        e(1, "pid = cuda.blockIdx.x")
        if gm == 1:
            e(1, "m0 = 0")
            e(1, f"n0 = pid * {t.bn}")
        elif gn == 1:
            e(1, f"m0 = pid * {t.bm}")
            e(1, "n0 = 0")
        elif gm <= GROUP_M:
            e(1, f"m0 = (pid % {gm}) * {t.bm}")
            e(1, f"n0 = (pid // {gm}) * {t.bn}")
        else:
            per_group = GROUP_M * gn
            e(1, f"first = (pid // {per_group}) * {GROUP_M}")
            e(1, f"rows = min({gm} - first, {GROUP_M})")
            e(1, f"q = pid % {per_group}")
            e(1, f"m0 = (first + q % rows) * {t.bm}")
            e(1, f"n0 = (q // rows) * {t.bn}")
        self.a_guard, self.b_guard = [], []  # per slot: (thread guard or None, edge guard or None)
        self._a_slots()
        self._b_slots()
        self._outer()
        return self.out

    def _gemm(self, ind: int) -> None:
        """Zeroed accumulators, the K loop, the stores."""
        for i in range(self.t.tm):
            for j in range(self.t.tn):
                self.emit(ind, f"c{i}_{j} = {self.zero}")
        self._k_loop(ind)
        self._store(ind)

    def _thread_guard(self, s: int, size: int) -> str | None:
        lim = size - s * self.t.threads
        return f"t < {lim}" if lim < self.t.threads else None

    # per-thread load coordinates, computed once
    def _a_slots(self) -> None:
        t, e = self.t, self.emit
        for s in range(self.na):
            if self.a_trans:  # e = t + s*T: r = e % BM, c = e // BM
                r, c = self._divmod_slot(s, t.bm, "a")
                e(1, f"ga{s} = {c} * {self.m} + m0 + {r}")
            else:  # r = e // BK, c = e % BK
                c, r = self._divmod_slot(s, t.bk, "a")
                e(1, f"ga{s} = (m0 + {r}) * {self.k} + {c}")
            e(1, f"sa{s} = {c} * {self.sa} + {r}")
            e(1, f"ka{s} = {c}")
            if self.m % t.bm:
                e(1, f"pa{s} = m0 + {r} < {self.m}")
            self.a_guard.append((self._thread_guard(s, t.bm * t.bk), f"pa{s}" if self.m % t.bm else None))

    def _b_slots(self) -> None:
        t, e = self.t, self.emit
        for s in range(self.nb):
            if self.b_trans:  # c = e % BK, col = e // BK
                c, col = self._divmod_slot(s, t.bk, "b")
                e(1, f"gb{s} = (n0 + {col}) * {self.k} + {c}")
            else:  # c = e // BN, col = e % BN
                col, c = self._divmod_slot(s, t.bn, "b")
                e(1, f"gb{s} = {c} * {self.n} + n0 + {col}")
            e(1, f"sb{s} = {c} * {self.sb} + {col}")
            e(1, f"kb{s} = {c}")
            if self.n % t.bn:
                e(1, f"pb{s} = n0 + {col} < {self.n}")
            self.b_guard.append((self._thread_guard(s, t.bk * t.bn), f"pb{s}" if self.n % t.bn else None))

    def _divmod_slot(self, s: int, d: int, which: str) -> tuple[str, str]:
        """(e % d, e // d) for e = t + s*T, as expressions of t (constant offsets when T % d == 0)."""
        T = self.t.threads
        if T % d == 0:
            name_q, name_r = f"{which}q", f"{which}r"
            if s == 0:
                self.emit(1, f"{name_r} = t % {d}")
                self.emit(1, f"{name_q} = t // {d}")
            off = s * T // d
            return name_r, (f"({name_q} + {off})" if off else name_q)
        ex = f"(t + {s * T})" if s else "t"
        return f"({ex} % {d})", f"({ex} // {d})"

    def _outer(self) -> None:
        """The loop around one output tile's GEMM: here a single pass with no batch."""
        self.emit(1, "abase = 0")
        self.emit(1, "bbase = 0")
        self._gemm(1)

    def _k_loop(self, ind: int) -> None:
        """The K steps: F = K // BK full ones, then a partial one of K % BK (k-guarded loads).
        With prefetch, the global loads of step s+1 are issued into registers before the rank-1
        updates of step s, so their latency hides behind the arithmetic. Split K (`splits` > 1):
        block z runs the full steps of its own K range from ks = z * split_len, k-guarded against K
        only when the last range is short."""
        t, e, k = self.t, self.emit, self.k
        base = "0"
        full, tail = divmod(k, t.bk)
        if self.splits > 1:
            base, full, tail = "ks", self.split_len // t.bk, 0
            e(ind, f"ks = cuda.blockIdx.z * {self.split_len}")
        steps = full + (1 if tail else 0)
        if steps == 0:
            return

        def at(offset: int) -> str:
            return _plus(base, offset) if base != "0" else str(offset)

        if not t.prefetch:
            if full:
                e(ind, f"for k0 in range({base}, {at(full * t.bk)}, {t.bk}):")
                self._load(ind + 1, "k0", None)
                self._step(ind + 1, t.bk)
            if tail:
                self._load(ind, at(full * t.bk), tail)
                self._step(ind, tail)
            return
        self._load(ind, base, tail if full == 0 else None)
        if full >= 2:  # steps 0 .. full-2, each followed by a full step
            e(ind, f"for k0 in range({base}, {at((full - 1) * t.bk)}, {t.bk}):")
            self._step(ind + 1, t.bk, lambda i: self._load(i, f"k0 + {t.bk}", None))
        if full >= 1:  # the last full step, followed by the partial one if any
            self._step(ind, t.bk, (lambda i: self._load(i, at(full * t.bk), tail)) if tail else None)
        if tail:
            self._step(ind, tail)

    def _a_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        """(the global element of A slot s at the K step k0, extra conditions for it to exist)."""
        step = "" if k0 == "0" else f" + {k0} * {self.m}" if self.a_trans else f" + {k0}"
        return f"a[u64(abase + ga{s}{step})]", []

    def _b_load(self, ind: int, s: int, k0: str) -> tuple[str, list[str]]:
        step = "" if k0 == "0" else f" + {k0}" if self.b_trans else f" + {k0} * {self.n}"
        return f"b[u64(bbase + gb{s}{step})]", []

    def _load(self, ind: int, k0: str, tail: int | None) -> None:
        """The global elements of the K step at k0 into registers ra*, rb* (zero where guarded off)."""
        k0 = k0 if " " not in k0 else f"({k0})"
        for which, count, guards, load in (
            ("a", self.na, self.a_guard, self._a_load),
            ("b", self.nb, self.b_guard, self._b_load),
        ):
            for s in range(count):
                value, extra = load(ind, s, k0)
                slot, edge = guards[s]
                kguard = f"{k0} + k{which}{s} < {self.k}" if self.split_len * self.splits > self.k else None
                kguard = f"k{which}{s} < {tail}" if tail else kguard
                conds = [c for c in (slot, edge, kguard, *extra) if c]
                cond = f" if {' and '.join(conds)} else {self.zero}" if conds else ""
                self.emit(ind, f"r{which}{s} = {value}{cond}")

    def _step(self, ind: int, depth: int, prefetch=None) -> None:
        """Registers to shared memory, sync, [the next step's loads], `depth` rank-1 updates, sync."""
        t, e = self.t, self.emit
        stores = [("As", f"sa{s}", f"ra{s}", self.a_guard[s][0]) for s in range(self.na)]
        stores += [("Bs", f"sb{s}", f"rb{s}", self.b_guard[s][0]) for s in range(self.nb)]
        for smem, index, reg, slot in stores:
            if slot:  # this thread has no element in the last slot
                e(ind, f"if {slot}:")
                e(ind + 1, f"{smem}[u64({index})] = {reg}")
            else:
                e(ind, f"{smem}[u64({index})] = {reg}")
        e(ind, "cuda.syncthreads()")
        if prefetch:
            prefetch(ind)
        for kk in range(depth):  # unrolled: every shared read is a constant offset from ty or tx
            for i in range(t.tm):
                e(ind, f"a{i} = As[u64({_plus('ty', kk * self.sa + i * t.nty)})]")
            for j in range(t.tn):
                e(ind, f"b{j} = Bs[u64({_plus('tx', kk * self.sb + j * t.ntx)})]")
            for i in range(t.tm):
                for j in range(t.tn):
                    e(ind, f"c{i}_{j} = cuda.fma(a{i}, b{j}, c{i}_{j})")
        e(ind, "cuda.syncthreads()")

    # stores: rows ty + i*NTY, columns tx + j*NTX (consecutive threads, consecutive columns); one row
    # test around each row's stores, so that few predicates stay live across the K loop
    def _store(self, ind: int) -> None:
        t, e = self.t, self.emit
        if self.splits > 1:
            e(ind, f"zoff = cuda.blockIdx.z * {self.out_size}")
        self._store_setup(ind)
        for i in range(t.tm):
            row = _plus("m0 + ty", i * t.nty)
            inner = ind
            if self.m % t.bm:
                e(ind, f"if {row} < {self.m}:")
                inner += 1
            self._row_setup(inner, row)
            for j in range(t.tn):
                address, idx, guard = self._target(j, row)
                if guard:
                    e(inner, f"if {guard}:")
                if self.splits > 1:  # a partial result: the finishing kernel sums them and applies the epilogue
                    e(inner + (1 if guard else 0), f"out[u64(zoff + {address})] = c{i}_{j}")
                else:
                    emit_store(e, inner + (1 if guard else 0), f"out[u64({address})]", f"c{i}_{j}", idx, self.epilogue)

    def _store_setup(self, ind: int) -> None:
        self.emit(ind, "ocol = n0 + tx")

    def _row_setup(self, ind: int, row: str) -> None:
        self.emit(ind, f"orow = ocol + ({row}) * {self.n}")

    def _target(self, j: int, row: str) -> tuple[str, list[str], str | None]:
        """(the output offset of accumulator column j in `row`, its multi-index, its column guard)."""
        col = _plus("n0 + tx", j * self.t.ntx)
        guard = f"{col} < {self.n}" if self.n % self.t.bn else None
        return _plus("orow", j * self.t.ntx), ["0", f"({row})", f"({col})"], guard


class _MatmulBody(TiledBody):
    """Batched: the z grid dimension (a loop past the grid's z limit) over the output's batches, each
    operand's batch offset broadcast from z."""

    def __init__(self, t, m, n, k, ty, a_trans, b_trans, sa, sb, epilogue, out_batch, a_batch, b_batch):
        super().__init__(t, m, n, k, ty, a_trans, b_trans, sa, sb, epilogue)
        self.out_batch, self.a_batch, self.b_batch = out_batch, a_batch, b_batch

    def _outer(self) -> None:
        e, m, n, k = self.emit, self.m, self.n, self.k
        nbatch = prod(self.out_batch)
        if nbatch > MAX_GRID_Z:
            e(1, f"for z in range(cuda.blockIdx.z, {nbatch}, cuda.gridDim.z):")
            ind = 2
        else:
            e(1, "z = cuda.blockIdx.z")
            ind = 1
        e(ind, f"abase = {_scaled(batch_index('z', self.out_batch, self.a_batch), m * k)}")
        e(ind, f"bbase = {_scaled(batch_index('z', self.out_batch, self.b_batch), k * n)}")
        self._gemm(ind)

    def _store_setup(self, ind: int) -> None:
        self.emit(ind, f"ocol = z * {self.m * self.n} + n0 + tx")

    def _target(self, j: int, row: str) -> tuple[str, list[str], str | None]:
        target, idx, guard = super()._target(j, row)
        return target, ["z", *idx[1:]], guard


def _scaled(index: str, size: int) -> str:
    if index == "0":
        return "0"
    return f"{index} * {size}" if " " not in index else f"({index}) * {size}"
