"""CUDA source for batched matrix products: out[z] = A[z] @ B[z], shared-memory and register tiled.

`matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile=None)` returns a module whose
`launch(out, a, b)` runs on flat, contiguous device buffers:
- a: (batch, m, k) row-major, or (batch, k, m) when `a_trans` (A is then read transposed, no copy);
- b: (batch, k, n), or (batch, n, k) when `b_trans`;
- out: (batch, m, n) row-major.
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
`tile=` (a Tile or a name) overrides it. Under numba's CUDA simulator (SIMULATOR) the set is
SIM_TILES: tiny tiles of 16 threads, since the simulator runs a Python thread per CUDA thread.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

# Rule constants (tune on the GPU): a tile is taken only if its grid has at least MIN_BLOCKS blocks
# (one per SM of an H100: fewer leaves SMs idle) and at least MIN_EFFICIENCY of its computed
# outputs are real ones (the rest is padding past M and N).
MIN_BLOCKS = 132
SIM_MIN_BLOCKS = 4  # the same rule over SIM_TILES, at simulator sizes
MIN_EFFICIENCY = 0.75
GROUP_M = 2 if SIMULATOR else 8  # tile rows per group of the block order (L2 reuse)
MAX_GRID_Z = 3 if SIMULATOR else 65535  # the z grid limit; more batches loop (small under the simulator, to test it)
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
    return SIM_TILES if SIMULATOR else TILES


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


# ---- source ----


def matmul_source(
    m: int,
    n: int,
    k: int,
    batch: int,
    dtype,
    a_trans: bool = False,
    b_trans: bool = False,
    tile: Tile | str | None = None,
) -> str:
    """Module source defining `launch(out, a, b)`: out (batch, m, n) = A @ B (see the module doc)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"matmul kernel: float32 or float64, not {dtype}")
    if min(m, n, k, batch) < 0:
        raise ValueError(f"matmul kernel: negative size in {(batch, m, n, k)}")
    t = resolve_tile(tile, m, n, k, batch)
    ty, itemsize = dtype.name, dtype.itemsize
    sa, sb = _layout(t, itemsize, a_trans, b_trans)
    smem = t.bk * (sa + sb) * itemsize
    if smem > SMEM_LIMIT:
        raise ValueError(f"matmul tile {t.name} needs {smem} bytes of shared memory for {ty} (at most {SMEM_LIMIT})")

    header = [
        f"# jitnet cuda kernel: matmul out({batch}, {m}, {n}) = A @ B, {ty}",
        f"# a: ({batch}, {k}, {m}) read as A^T" if a_trans else f"# a: ({batch}, {m}, {k})",
        f"# b: ({batch}, {n}, {k}) read as B^T" if b_trans else f"# b: ({batch}, {k}, {n})",
        f"# tile {t.name}: {t.threads} threads, CGMA {t.cgma(itemsize):.1f} flop/byte, "
        f"shared As[{t.bk}][{sa}] Bs[{t.bk}][{sb}]",
        "import numpy as np",
        "from numba import cuda",
        "from numpy import uint64 as u64  # unsigned indices: no negative-index wraparound code",
        "from numba.types import void, float32, float64",
        "",
        "",
    ]
    sig = f"void({ty}[::1], {ty}[::1], {ty}[::1])"
    gm, gn = _cdiv(m, t.bm), _cdiv(n, t.bn)
    if m == 0 or n == 0 or batch == 0:  # nothing to write
        return "\n".join(header + ["def launch(out, a, b):", "    pass", ""])
    body = _Body(t, m, n, k, batch, ty, a_trans, b_trans, sa, sb)
    lines = [f"@cuda.jit({sig}, cache=True)", "def kernel(out, a, b):", *body.lines()]
    grid = (gm * gn, 1, min(batch, MAX_GRID_Z))
    lines += ["", "", f"launch = kernel[{grid}, {t.threads}]", ""]
    return "\n".join(header + lines)


def _plus(expr: str, const: int) -> str:
    return f"{expr} + {const}" if const else expr


class _Body:
    def __init__(self, t: Tile, m, n, k, batch, ty, a_trans, b_trans, sa, sb):
        self.batch = batch
        self.t, self.m, self.n, self.k, self.ty = t, m, n, k, ty
        self.a_trans, self.b_trans, self.sa, self.sb = a_trans, b_trans, sa, sb
        self.out: list[str] = []
        self.zero = f"np.{ty}(0.0)"
        self.na = _cdiv(t.bm * t.bk, t.threads)  # load slots per thread
        self.nb = _cdiv(t.bk * t.bn, t.threads)

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
        self._slots()
        self._batch_loop()
        return self.out

    # per-thread load coordinates, computed once
    def _slots(self) -> None:
        t, e = self.t, self.emit
        self.a_guard, self.b_guard = [], []  # per slot: (thread guard or None, edge guard or None)
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
            lim = t.bm * t.bk - s * t.threads
            self.a_guard.append((f"t < {lim}" if lim < t.threads else None, f"pa{s}" if self.m % t.bm else None))
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
            lim = t.bk * t.bn - s * t.threads
            self.b_guard.append((f"t < {lim}" if lim < t.threads else None, f"pb{s}" if self.n % t.bn else None))

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

    def _batch_loop(self) -> None:
        t, m, n, k, e = self.t, self.m, self.n, self.k, self.emit
        from_batch = self.batch
        if from_batch > MAX_GRID_Z:
            e(1, f"for z in range(cuda.blockIdx.z, {from_batch}, cuda.gridDim.z):")
            ind = 2
        else:
            e(1, "z = cuda.blockIdx.z")
            ind = 1
        e(ind, f"abase = z * {m * k}")
        e(ind, f"bbase = z * {k * n}")
        for i in range(t.tm):
            for j in range(t.tn):
                e(ind, f"c{i}_{j} = {self.zero}")
        self._k_loop(ind)
        # store: rows ty + i*NTY, columns tx + j*NTX (consecutive threads, consecutive columns); one
        # row test around each row's stores, so that few predicates stay live across the K loop
        e(ind, f"ocol = z * {m * n} + n0 + tx")
        for i in range(t.tm):
            row = _plus("m0 + ty", i * t.nty)
            inner = ind
            if m % t.bm:
                e(ind, f"if {row} < {m}:")
                inner += 1
            e(inner, f"orow = ocol + ({row}) * {n}")
            for j in range(t.tn):
                store = f"out[u64({_plus('orow', j * t.ntx)})] = c{i}_{j}"
                if n % t.bn:
                    e(inner, f"if {_plus('n0 + tx', j * t.ntx)} < {n}:")
                    e(inner + 1, store)
                else:
                    e(inner, store)

    def _k_loop(self, ind: int) -> None:
        """The K steps: F = K // BK full ones, then a partial one of K % BK (k-guarded loads).
        With prefetch, the global loads of step s+1 are issued into registers before the rank-1
        updates of step s, so their latency hides behind the arithmetic."""
        t, e, k = self.t, self.emit, self.k
        full, tail = divmod(k, t.bk)
        steps = full + (1 if tail else 0)
        if steps == 0:
            return
        if not t.prefetch:
            if full:
                e(ind, f"for k0 in range(0, {full * t.bk}, {t.bk}):")
                self._load(ind + 1, "k0", None)
                self._step(ind + 1, t.bk)
            if tail:
                self._load(ind, str(full * t.bk), tail)
                self._step(ind, tail)
            return
        self._load(ind, "0", tail if full == 0 else None)
        if full >= 2:  # steps 0 .. full-2, each followed by a full step
            e(ind, f"for k0 in range(0, {(full - 1) * t.bk}, {t.bk}):")
            self._step(ind + 1, t.bk, lambda i: self._load(i, f"k0 + {t.bk}", None))
        if full >= 1:  # the last full step, followed by the partial one if any
            self._step(ind, t.bk, (lambda i: self._load(i, str(full * t.bk), tail)) if tail else None)
        if tail:
            self._step(ind, tail)

    def _load(self, ind: int, k0: str, tail: int | None) -> None:
        """The global elements of the K step at k0 into registers ra*, rb* (zero where guarded off)."""
        e = self.emit
        k0 = k0 if " " not in k0 else f"({k0})"
        a_step = "" if k0 == "0" else f" + {k0} * {self.m}" if self.a_trans else f" + {k0}"
        b_step = "" if k0 == "0" else f" + {k0}" if self.b_trans else f" + {k0} * {self.n}"
        loads = [(f"ra{s}", f"a[u64(abase + ga{s}{a_step})]", f"ka{s}", self.a_guard[s]) for s in range(self.na)]
        loads += [(f"rb{s}", f"b[u64(bbase + gb{s}{b_step})]", f"kb{s}", self.b_guard[s]) for s in range(self.nb)]
        for reg, value, kidx, (slot, edge) in loads:
            conds = [c for c in (slot, edge, f"{kidx} < {tail}" if tail else None) if c]
            e(ind, f"{reg} = {value}" + (f" if {' and '.join(conds)} else {self.zero}" if conds else ""))

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
