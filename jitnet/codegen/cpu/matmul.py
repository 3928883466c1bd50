"""CPU source for batched matrix products: out[z] = A[z] @ B[z], Goto/BLIS style, in numba.

`matmul_source(m, n, k, batch, dtype, a_trans, b_trans, tile=None)` returns a module whose
`kernel(out, a, b)` runs on flat, contiguous float32 or float64 buffers:
- a: (batch, m, k) row-major, or (batch, k, m) when `a_trans` (A is read transposed, no copy);
- b: (batch, k, n), or (batch, n, k) when `b_trans`;
- out: (batch, m, n) row-major.
Shapes are constants of the generated source (which is the kernel's cache key).

The generated module
--------------------
- `micro(c, co, ap, ao, bp, bo, kc, mr, nr, first)`: the MR x NR block of C at c[co:] (row stride
  N) from kc steps of a packed A micro-panel (kc x MR, k-major) and a packed B micro-panel (kc x NR,
  k-major). The MR * NR/W accumulators (W = 16 float32 or 8 float64 lanes: one zmm register) are
  separate SIMD variables written out one per line; every k step loads NR/W vectors of B,
  broadcasts MR scalars of A and issues MR * NR/W vector FMAs (`llvm.fma.v16f32` -> `vfmadd231ps
  zmm`). The first K block stores C, later ones add to it; an edge block (mr < MR rows or nr < NR
  columns) stores with masked vector stores.
- `pack_b` / `pack_a`: copy a (kc x NR) column panel of B / (MR x kc) row panel of A into the
  k-major micro-panel layout, zero-padded past N / M (so `micro` always computes a full block and
  only its stores are cut to the edge). Row-major B and transposed A are plain vector copies;
  transposed B and row-major A are transposed by scalar loops.
- `kernel(out, a, b)`: per batch item, B is packed whole (K blocks of about KC, each a row of NR
  panels) by a `prange` over panels; then a `prange` over the threads, each owning a block of row
  panels (or of column panels, whichever split balances better at run time), does for each K block
  and each chunk of MC rows: pack its A chunk (MC x kc, stays in L2), then for every B micro-panel
  (kc x NR, stays in L1) run `micro` down the A chunk. Small problems run the same loops without
  `prange` (one thread); batches of small matrices run one matrix per `prange` iteration.

Why the SIMD intrinsics (`vload`, `vfma`, ...) rather than scalar accumulators for LLVM's SLP
vectoriser: numba turns the SLP vectoriser off by default (`NUMBA_SLP_VECTORIZE=0`, after LLVM
miscompilations, numba PR #8852), so MR x NR scalar accumulators compile to scalar `vfmadd231ss`
(6 GFLOP/s for 6 x 32). With SLP switched on they do become `vfmadd231ps zmm` and run as fast as the
intrinsics, but compile in 4-11 s instead of 0.7 s, and flipping a process-wide numba switch is not
a kernel's business. The intrinsics make the vector width explicit: LLVM keeps the accumulators in
zmm registers, folds nothing away, and needs no fast-math flag (an FMA intrinsic is always fused;
NaN and inf propagate as in numpy).

Tile measurements (AMD EPYC Zen 4, 2 cores; FMA peak measured at ~225 GFLOP/s float32 for 2 cores,
~113 per core: one 512-bit FMA per cycle at ~3.5 GHz. See bench/matmul_cpu.py):
  micro-kernel alone, one core, operands in L1, float32, kc=256 (GFLOP/s):
    MR x NR:  6x32 116 | 8x32 113 | 4x48 113 | 4x64 116 | 14x16 114 | 28x16 114 | 12x32 49 (spills)
  TUNING_TABLE below: whole kernel, 2 threads.

ROUTING (`choose_path`): a matrix-vector product (m == 1) or a product with n <= BLAS_MAX_N
columns goes to BLAS, which streams A once at memory speed; everything else runs the generated
kernel, which matches or beats OpenBLAS from 8 columns up (1024^3 float32: 207.7 GFLOP/s against
numpy's 196.4, `python -m bench.matmul_cpu`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

# ---------------------------------------------------------------------------------------------
# SIMD vectors for numba: a value type lowered to an LLVM vector, and the few operations a GEMM
# micro-kernel needs. Indices are element offsets into flat contiguous arrays, unchecked (no
# bounds check, no negative wraparound): the generated code computes them.
# ---------------------------------------------------------------------------------------------


class Vec(types.Type):
    """`lanes` x `dtype` as one LLVM vector value (`<16 x float>` is a zmm register)."""

    def __init__(self, dtype: types.Float, lanes: int):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec({dtype} x {lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _literal(t) -> int | None:
    return t.literal_value if isinstance(t, types.IntegerLiteral) else None


def _element_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


def _vec_ptr(context, builder, arrty, arr, idx, vt: Vec):
    ptr = _element_ptr(context, builder, arrty, arr, idx)
    return builder.bitcast(ptr, context.get_value_type(vt).as_pointer())


def _mask(builder, n, lanes: int):
    """<lanes x i1>: lane l is on when l < n (n is clamped to [0, lanes] by the caller)."""
    # (1 << n) - 1 built in 64 bits: in `lanes` bits the shift by n == lanes would be poison.
    wide = ir.IntType(64)
    n = builder.zext(n, wide) if n.type.width < 64 else n
    m = builder.sub(builder.shl(ir.Constant(wide, 1), n), ir.Constant(wide, 1))
    return builder.bitcast(builder.trunc(m, ir.IntType(lanes)), _mask_type(lanes))


def _is_array(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and isinstance(t.dtype, types.Float)


@intrinsic(prefer_literal=True)
def vload(typingctx, arr, i, lanes):
    """arr[i : i + lanes] as a vector (unaligned load)."""
    n = _literal(lanes)
    if n is None or not _is_array(arr) or not isinstance(i, types.Integer):
        return None
    vt = Vec(arr.dtype, n)

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)

    return vt(arr, i, lanes), codegen


@intrinsic(prefer_literal=True)
def vload_n(typingctx, arr, i, count, lanes):
    """arr[i : i + count] in the first `count` lanes (0 <= count <= lanes), zeros after; reads
    nothing past arr[i + count - 1] (a masked load)."""
    n = _literal(lanes)
    if n is None or not _is_array(arr) or not isinstance(i, types.Integer) or not isinstance(count, types.Integer):
        return None
    vt = Vec(arr.dtype, n)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        fnty = ir.FunctionType(vty, [ptr.type, ir.IntType(32), _mask_type(n), vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{_vname(vt)}.p0")
        align = ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, _mask(builder, args[2], n), ir.Constant(vty, None)])

    return vt(arr, i, count, lanes), codegen


def _vname(vt: Vec) -> str:
    """The LLVM intrinsic suffix of a vector type: v16f32."""
    return f"v{vt.lanes}f{vt.dtype.bitwidth}"


def _mask_type(lanes: int):
    return ir.VectorType(ir.IntType(1), lanes)


@intrinsic
def vstore(typingctx, arr, i, v):
    """arr[i : i + lanes] = v (unaligned store)."""
    if not (isinstance(v, Vec) and _is_array(arr) and arr.dtype == v.dtype and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], v)
        builder.store(args[2], ptr, align=v.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def vstore_n(typingctx, arr, i, v, count):
    """arr[i : i + count] = v[:count] (0 <= count <= lanes; a masked store)."""
    if not (isinstance(v, Vec) and _is_array(arr) and arr.dtype == v.dtype and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(v)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], v)
        fnty = ir.FunctionType(ir.VoidType(), [vty, ptr.type, ir.IntType(32), _mask_type(v.lanes)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.{_vname(v)}.p0")
        align = ir.Constant(ir.IntType(32), v.dtype.bitwidth // 8)
        builder.call(fn, [args[2], ptr, align, _mask(builder, args[3], v.lanes)])
        return context.get_dummy_value()

    return types.void(arr, i, v, count), codegen


@intrinsic(prefer_literal=True)
def vsplat(typingctx, x, lanes):
    """A vector with x in every lane."""
    n = _literal(lanes)
    if n is None or not isinstance(x, types.Float):
        return None
    vt = Vec(x, n)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)
        return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), zeros)

    return vt(x, lanes), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused (one rounding), lane by lane."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.{_vname(a)}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def ld(typingctx, arr, i):
    """arr[i], unchecked."""
    if not (_is_array(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))

    return arr.dtype(arr, i), codegen


@intrinsic
def st(typingctx, arr, i, x):
    """arr[i] = x, unchecked (x is converted to the array's dtype)."""
    if not (_is_array(arr) and isinstance(i, types.Integer) and isinstance(x, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], arr.dtype)
        builder.store(val, _element_ptr(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()

    return types.void(arr, i, x), codegen


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint: bring the cache line of arr[i] into L1 for writing (`prefetchw`); never faults."""
    if not (_is_array(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@intrinsic
def align_skip(typingctx, arr):
    """Elements to skip from arr[0] to the next 64-byte boundary (a zmm load from there does not
    straddle two cache lines)."""
    if not _is_array(arr):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        addr = builder.ptrtoint(data, ir.IntType(64))
        pad = builder.and_(builder.sub(ir.Constant(ir.IntType(64), 0), addr), ir.Constant(ir.IntType(64), 63))
        return builder.udiv(pad, ir.Constant(ir.IntType(64), arr.dtype.bitwidth // 8))

    return types.int64(arr), codegen


@intrinsic
def num_threads(typingctx):
    """numba's thread count for parallel regions (`numba.get_num_threads()`), read through the
    threading layer's C symbol: `numba.get_num_threads` goes through a ctypes pointer, which keeps
    numba from caching the kernel on disk."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()  # registers the threading layer's symbols with LLVM

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(cgutils.intp_t, []), "get_num_threads")
        return builder.call(fn, [])

    return types.intp(), codegen


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


# Chosen by measurement (bench/matmul_cpu.py --sweep); the docstring's table records the sweep.
TILES = {
    "float32": Tile(4, 64, 512, 96),
    "float64": Tile(4, 32, 512, 96),
}

SERIAL_MAX_WORK = 64**3  # m*n*k*batch below this: one thread, no prange
BLAS_MAX_N = 4  # choose_path: products with n <= BLAS_MAX_N (or m == 1) go to BLAS


def lanes_of(dtype) -> int:
    return 64 // np.dtype(dtype).itemsize


def choose_tile(m: int, n: int, k: int, dtype) -> Tile:
    """The tile for a shape: TILES[dtype] (4 rows x 4 vectors), unless a narrower block pads n less:
    n <= 1 vector (W = 16 float32, 8 float64): 8 rows x 1 vector (1024 x 8 x 1024 float32: 165 us,
    340 with 6 x 32); otherwise 6 rows x 2 vectors when that pads n to fewer columns than 4 vectors
    (n = 80: 96 columns instead of 128)."""
    w = lanes_of(dtype)
    big = TILES[np.dtype(dtype).name]
    if n <= w:
        return Tile(8, w, big.kc, big.mc)
    if _cdiv(n, 2 * w) * 2 * w < _cdiv(n, big.nr) * big.nr:
        return Tile(6, 2 * w, big.kc, big.mc)
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


def packing(
    m: int, n: int, k: int, a_trans: bool, b_trans: bool, tile: Tile, itemsize: int = 4, threads: int = 2
) -> tuple[bool, bool]:
    """(pack A, pack B), measured (bench/matmul_cpu.py --sweep --tiles :ab :b :a :):
    - A is read in place: broadcasts from MR rows of A (or MR contiguous values of a row of A^T)
      stream fine, and packing A never won a measurement (1024^3: 10.6 ms packed, 10.4 in place).
    - B is packed when it is transposed (its rows run along k), and when a thread's B block
      (kc x its columns) is about L2 size or more and each packed panel serves PACK_B_MIN_REUSE or more
      A micro-panels: read in place, a B micro-panel with a row stride of 4 KB maps kc rows onto a
      few cache sets and is fetched from L3 again for every A micro-panel (1024^3: 14.0 ms in place,
      10.4 packed), while a block that fits in L2 is faster in place (256^3: 149 us vs 173)."""
    mp, np_ = _cdiv(m, tile.mr), _cdiv(n, tile.nr)
    kc = _cdiv(k, max(1, _cdiv(k, tile.kc)))
    by_rows = thread_split(m, n, tile, threads)
    reuse = mp / threads if by_rows else mp  # row panels of a thread that meet each B panel
    cols = n if by_rows else _cdiv(np_, threads) * tile.nr
    big = kc * cols * itemsize >= PACK_B_MIN_BYTES
    return False, b_trans or (big and reuse >= PACK_B_MIN_REUSE)


def choose_path(m: int, n: int, k: int, batch: int = 1) -> str:
    """'numba' or 'blas' for a product of this shape: the rule ROUTING in the module docstring."""
    return "blas" if m == 1 or n <= BLAS_MAX_N else "numba"


def matmul_blas(
    out: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    m: int,
    n: int,
    k: int,
    batch: int = 1,
    a_trans: bool = False,
    b_trans: bool = False,
) -> None:
    """The numpy (BLAS) route on the same flat buffers as `kernel`: no allocation; the transposes
    are views, which BLAS reads as transposed operands."""
    a3 = a.reshape(batch, k, m).transpose(0, 2, 1) if a_trans else a.reshape(batch, m, k)
    b3 = b.reshape(batch, n, k).transpose(0, 2, 1) if b_trans else b.reshape(batch, k, n)
    np.matmul(a3, b3, out=out.reshape(batch, m, n))


# ---------------------------------------------------------------------------------------------
# Source generation
# ---------------------------------------------------------------------------------------------


IMPORTS = [  # what a generated module (matmul's, or one that embeds `block_fn`) imports
    "import numpy as np",
    "from numba import njit, prange",
    "from numba.types import void, boolean, int8, int16, int32, int64, uint8, float32, float64",
    "",
    "from jitnet.codegen.cpu import vmath as vm  # for fused epilogues",
    "from jitnet.codegen.cpu.intrinsics import fmaximum, fminimum",
    "from jitnet.codegen.cpu.signature import readonly",
    "from jitnet.codegen.cpu.matmul import align_skip, ld, num_threads, prefetch, st",
    "from jitnet.codegen.cpu.matmul import vadd, vfma, vload, vload_n, vsplat, vstore, vstore_n",
]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _off(base: str, const: int) -> str:
    return base if const == 0 else f"{base} + {const}"


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
    pack: str | None = None,
    epilogue=None,
    a_batch: tuple[int, ...] | None = None,
    b_batch: tuple[int, ...] | None = None,
    accumulate: bool = False,
    block_only: bool = False,
) -> str:
    """The module source of `kernel(out, a, b, *epilogue.params)` for out[z] = A[z] @ B[z] (see
    the module docstring). `parallel` forces (True) or forbids (False) threads, `pack` ("ab", "a",
    "b" or "") which operands are packed; None decides by the rules (SERIAL_MAX_WORK, `packing`).

    `batch` is the number of products or the output's batch shape; `a_batch` / `b_batch` are the
    operands' batch shapes when they broadcast against it (numpy rules, size-1 dims are read
    again for every index: no copy). `epilogue` (see `Epilogue`) rewrites each finished element
    of C while its tile is in L1. `accumulate`: C += A @ B instead of C = A @ B. `block_only`:
    only the function `block_fn(out, coff, a, aoff, b, boff, r_lo, r_hi, j_lo, j_hi, *params)`
    (one thread, rows panels [r_lo, r_hi) x column panels [j_lo, j_hi) of one product, C at
    out[coff:], z = coff // (M * N)), without imports, for other generators to call."""
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
    MR, NR, NV = t.mr, t.nr, t.nr // W
    T = dt.name
    work = M * N * K
    if parallel is None:
        parallel = work * B >= SERIAL_MAX_WORK
    MP, NP = _cdiv(M, MR), _cdiv(N, NR)  # row panels of A, column panels of B
    NBLK = max(1, _cdiv(K, t.kc))  # K blocks of nearly equal size
    KCM = _cdiv(K, NBLK)  # the largest K block
    MCP = max(1, t.mc // MR)  # row panels per A chunk
    if pack is None:
        pack_a, pack_b = packing(M, N, K, a_trans, b_trans, t, dt.itemsize)
    else:
        pack_a, pack_b = "a" in pack, "b" in pack
    if b_trans and not pack_b:
        raise ValueError("a transposed B is always packed")
    a_str = f"a: ({B}, {K}, {M}) (A transposed)" if a_trans else f"a: ({B}, {M}, {K})"
    b_str = f"b: ({B}, {N}, {K}) (B transposed)" if b_trans else f"b: ({B}, {K}, {N})"
    mode = "parallel" if parallel else "serial"
    packed = " and ".join(x for x, f in (("A", pack_a), ("B", pack_b)) if f) or "nothing"
    e = _Lines()
    pdecl = "".join(f", {p}" for p in params)  # epilogue buffers, after the kernel's own arguments
    ptypes = "".join(f", readonly({t})" for t in _param_types(epilogue, T))
    header = [
        f"# jitnet cpu matmul: out ({B}, {M}, {N}) {T} = A @ B; {a_str}; {b_str}",
        f"# tile MR={MR} NR={NR} KC={t.kc} MC={MCP * MR}; {NBLK} K block(s) of <= {KCM}; {mode}; packed: {packed}",
        *IMPORTS,
        "",
        f"BUF = {T}[::1]",
        f"IN = readonly({T})",
        "",
    ]
    if M == 0 or N == 0 or K == 0:  # nothing to multiply: out is empty, or all zeros (or unchanged)
        if block_only:
            raise ValueError("block_only needs M, N, K > 0")
        e(0, f"@njit(void(BUF, IN, IN{ptypes}), cache=True)")
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

    flags = 'cache=True, error_model="numpy"'
    step_p, step_i = (M, 1) if a_trans else (1, K)  # A[i, p] is a[aoff + p * step_p + i * step_i]

    def emit_pack_b(ind: int, boff: str, j_lo: str) -> None:
        """Pack B's column panel j (K rows p0..p0+kc, columns j*NR..) as kc rows of NR (k-major) at
        bp[b0 + (j - j_lo) * kc * NR:], zeros past N."""
        e(ind, f"d = b0 + (j - {j_lo}) * kc * {NR}")
        e(ind, f"j0 = j * {NR}")
        e(ind, f"w = min({NR}, {N} - j0)")
        if not b_trans:  # rows of B are contiguous along n: vector copies (masked at the edge)
            e(ind, f"s = {boff} + p0 * {N} + j0")
            for v in range(NV):
                e(ind, f"w{v} = min(max(w - {v * W}, 0), {W})")
            e(ind, "for p in range(kc):")
            for v in range(NV):
                e(ind + 1, f"vstore(bp, {_off('d', v * W)}, vload_n(b, {_off('s', v * W)}, w{v}, {W}))")
            e(ind + 1, f"s += {N}")
            e(ind + 1, f"d += {NR}")
        else:  # B^T rows are contiguous along k: read them, write columns of the panel
            e(ind, "for jj in range(w):")
            e(ind + 1, f"s = {boff} + (j0 + jj) * {K} + p0")
            e(ind + 1, "for p in range(kc):")
            e(ind + 2, f"st(bp, d + p * {NR} + jj, ld(b, s + p))")
            e(ind, f"for jj in range(w, {NR}):")
            e(ind + 1, "for p in range(kc):")
            e(ind + 2, f"st(bp, d + p * {NR} + jj, 0.0)")

    def emit_block(ind: int, coff: str, aoff: str, boff: str, r_lo: str, r_hi: str, j_lo: str, j_hi: str) -> None:
        """Row panels [r_lo, r_hi) x column panels [j_lo, j_hi) of one matrix of out: per K block,
        pack this thread's B panels, then per chunk of MC rows pack A, then the micro-kernels."""
        if pack_b:
            e(ind, f"bp = np.empty(({j_hi} - {j_lo}) * {KCM * NR} + {W}, np.{T})")
            e(ind, "b0 = align_skip(bp)")
        if pack_a:
            e(ind, f"ap = np.empty({MCP * MR * KCM + W}, np.{T})")
            e(ind, "a0 = align_skip(ap)")
        e(ind, f"for blk in range({NBLK}):")
        e(ind + 1, f"p0 = blk * {K} // {NBLK}")
        e(ind + 1, f"kc = (blk + 1) * {K} // {NBLK} - p0")
        if pack_b:
            e(ind + 1, f"for j in range({j_lo}, {j_hi}):")
            emit_pack_b(ind + 2, boff, j_lo)
        e(ind + 1, f"for ic in range({r_lo}, {r_hi}, {MCP}):")
        i3 = ind + 2
        e(i3, f"ie = min(ic + {MCP}, {r_hi})")
        if pack_a:  # row panel r (MR rows from r*MR, K columns p0..) as kc rows of MR at ap[a0 + (r-ic)*kc*MR:]
            e(i3, "for r in range(ic, ie):")
            e(i3 + 1, f"d = a0 + (r - ic) * kc * {MR}")
            e(i3 + 1, f"i0 = r * {MR}")
            e(i3 + 1, f"h = min({MR}, {M} - i0)")
            e(i3 + 1, f"s = {aoff} + p0 * {step_p} + i0 * {step_i}")
            e(i3 + 1, f"if h == {MR}:")
            e(i3 + 2, "for p in range(kc):")
            for i in range(MR):
                e(i3 + 3, f"st(ap, {_off('d', i)}, ld(a, {_off('s', i * step_i)}))")
            e(i3 + 3, f"s += {step_p}")
            e(i3 + 3, f"d += {MR}")
            e(i3 + 1, "else:")
            e(i3 + 2, "for p in range(kc):")
            e(i3 + 3, "for i in range(h):")
            e(i3 + 4, f"st(ap, d + i, ld(a, s + i * {step_i}))")
            e(i3 + 3, f"for i in range(h, {MR}):")
            e(i3 + 4, "st(ap, d + i, 0.0)")
            e(i3 + 3, f"s += {step_p}")
            e(i3 + 3, f"d += {MR}")
        # the micro-kernel, for each B micro-panel down the A chunk
        e(i3, f"for j in range({j_lo}, {j_hi}):")
        e(i3 + 1, f"nr = min({NR}, {N} - j * {NR})")
        for v in range(NV):  # lanes of C stored (n) and loaded (l: none on the first K block)
            e(i3 + 1, f"n{v} = min(max(nr - {v * W}, 0), {W})")
            e(i3 + 1, f"l{v} = n{v}" if accumulate else f"l{v} = 0 if blk == 0 else n{v}")
        e(i3 + 1, "for r in range(ic, ie):")
        ME = M % MR  # rows of the last row panel, when it is not full: a micro-kernel of its own
        if ME == 0:
            emit_micro(i3 + 2, MR, coff, aoff, boff, j_lo)
        else:
            e(i3 + 2, f"if r < {M // MR}:")
            emit_micro(i3 + 3, MR, coff, aoff, boff, j_lo)
            e(i3 + 2, "else:")
            emit_micro(i3 + 3, ME, coff, aoff, boff, j_lo)

    def emit_micro(ind: int, rows: int, coff: str, aoff: str, boff: str, j_lo: str) -> None:
        """C rows r*MR .. r*MR+rows (rows <= MR), columns j*NR.. (nr of them, masked lanes at the
        edge): kc rank-1 updates of rows x NV vector accumulators, then C (+)= them."""
        e(ind, f"co = {coff} + r * {MR * N} + j * {NR}")
        if pack_a:
            e(ind, f"ao = a0 + (r - ic) * kc * {MR}")
        else:
            e(ind, f"ao = {aoff} + p0 * {step_p} + r * {MR * step_i}")
        if pack_b:
            e(ind, f"bo = b0 + (j - {j_lo}) * kc * {NR}")
        else:
            e(ind, f"bo = {boff} + p0 * {N} + j * {NR}")
        for i in range(rows):  # the C block is read and written after the k loop: fetch it meanwhile
            for off in sorted({*range(0, NR, W), NR - 1}):
                e(ind, f"prefetch(out, {_off('co', i * N + off)})")
        for i in range(rows):
            for v in range(NV):
                e(ind, f"c{i}_{v} = vsplat({T}(0), {W})")
        e(ind, "for p in range(kc):")
        for v in range(NV):
            if pack_b:
                e(ind + 1, f"y{v} = vload(bp, {_off('bo', v * W)}, {W})")
            elif N % NR:
                e(ind + 1, f"y{v} = vload_n(b, {_off('bo', v * W)}, n{v}, {W})")
            else:
                e(ind + 1, f"y{v} = vload(b, {_off('bo', v * W)}, {W})")
        for i in range(rows):
            if pack_a:
                e(ind + 1, f"x{i} = vsplat(ld(ap, {_off('ao', i)}), {W})")
            else:
                e(ind + 1, f"x{i} = vsplat(ld(a, {_off('ao', i * step_i)}), {W})")
            for v in range(NV):
                e(ind + 1, f"c{i}_{v} = vfma(x{i}, y{v}, c{i}_{v})")
        e(ind + 1, f"ao += {MR if pack_a else step_p}")
        e(ind + 1, f"bo += {NR if pack_b else N}")
        store = "vstore_n" if N % NR else "vstore"
        for i in range(rows):
            for v in range(NV):
                idx = _off("co", i * N + v * W)
                cnt = f", n{v}" if N % NR else ""
                e(ind, f"{store}(out, {idx}, vadd(vload_n(out, {idx}, l{v}, {W}), c{i}_{v}){cnt})")
        if epilogue is not None:  # the finished tile, still in L1: element by element
            ind2 = ind
            if NBLK > 1:
                e(ind, f"if blk == {NBLK - 1}:")
                ind2 += 1
            e(ind2, f"for ii in range({rows}):")
            e(ind2 + 1, "for jj in range(nr):")
            e(ind2 + 2, f"o_ep = co + ii * {N} + jj")
            e(ind2 + 2, "v_ep = ld(out, o_ep)")
            lines, val = epilogue.render("v_ep", ["z", f"(r * {MR} + ii)", f"(j * {NR} + jj)"])
            for line in lines:
                e(ind2 + 2, line)
            e(ind2 + 2, f"st(out, o_ep, {val})")

    # ---- the kernel ----
    # A serial kernel is one function with everything inline. numba compiles every prange body into
    # a function of its own (its IR passes are slow on big bodies) and every function again into
    # each caller that links it, so a parallel kernel's prange body only calls `block_fn`. Each
    # thread packs the B panels it uses itself: one parallel region per call, no barrier between
    # packing and computing (on a shared machine, a barrier can wait a scheduler tick for a
    # descheduled thread).
    if parallel or block_only:
        e(0, f"@njit(void(BUF, int64, IN, int64, IN, int64, int64, int64, int64, int64{ptypes}), {flags})")
        e(0, f"def block_fn(out, coff, a, aoff, b, boff, r_lo, r_hi, j_lo, j_hi{pdecl}):")
        if epilogue is not None:
            e(1, f"z = coff // {M * N}")
        emit_block(1, "coff", "aoff", "boff", "r_lo", "r_hi", "j_lo", "j_hi")
        if block_only:
            return "\n".join(e.lines) + "\n"
        e(0, "")
        e(0, "")
    e(0, f"@njit(void(BUF, IN, IN{ptypes}), parallel={bool(parallel)}, {flags})")
    e(0, f"def kernel(out, a, b{pdecl}):")
    # offsets of out[z], a[z], b[z] (a broadcast batch dim adds nothing)
    zo = (f"z * {M * N}", _batch_offset(out_batch, a_batch, M * K), _batch_offset(out_batch, b_batch, K * N))
    if not parallel:
        e(1, f"for z in range({B}):")
        emit_block(2, *zo, "0", str(MP), "0", str(NP))
    else:
        e(1, "nt = num_threads()")
        # split rows or columns among the threads: the split that leaves the busiest thread less
        # work; on a tie, the one that packs less twice (rows: every thread packs all of B)
        e(1, f"rows = ({MP} + nt - 1) // nt * {NP}")
        e(1, f"cols = ({NP} + nt - 1) // nt * {MP}")
        e(1, f"by_rows = rows < cols or (rows == cols and {N <= M})")
        e(1, "tm = nt if by_rows else 1")
        e(1, "tn = 1 if by_rows else nt")
        e(1, "for t in prange(nt):")
        e(2, "ti = t // tn")
        e(2, "tj = t - ti * tn")
        e(2, f"for z in range({B}):")
        e(
            3,
            f"block_fn(out, {zo[0]}, a, {zo[1]}, b, {zo[2]}, ti * {MP} // tm, (ti + 1) * {MP} // tm, "
            f"tj * {NP} // tn, (tj + 1) * {NP} // tn{pdecl})",
        )
    return "\n".join(header + e.lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The engine's entry: one matmul node -> a function on flat buffers
# ---------------------------------------------------------------------------------------------


class Epilogue(Protocol):
    """What a generator needs of a fused elementwise epilogue (the fuser builds these).

    `params`: names of extra flat buffers, appended to the kernel's arguments after its own;
    `dtypes` (optional attribute): their dtypes, else the output's. `render(v, idx)`: given
    the name of a scalar variable holding a finished output element and the source expressions of
    its multi-index (matmul: [z, i, j] = flat batch, row, column; conv: [n, o, y, x]), the Python
    statements to insert (no indent; names they bind should start with `ep_`) and the expression
    of the value to store."""

    params: list[str]

    def render(self, v: str, idx: list[str]) -> tuple[list[str], str]: ...


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
    one pass with rows in parallel: the BLAS and numpy routes' epilogue, right after the product."""
    dt = np.dtype(dtype)
    t = {"bool": "boolean"}.get(dt.name, dt.name)
    ptypes = "".join(f", readonly({p})" for p in _param_types(epilogue, t))
    pdecl = "".join(f", {p}" for p in epilogue.params)
    parallel = batch * m * n >= 1 << 15
    e = _Lines()
    for line in [f"# jitnet cpu matmul epilogue over out ({batch}, {m}, {n}) {dt.name}", *IMPORTS, ""]:
        e(0, line)
    e(0, f'@njit(void({t}[::1]{ptypes}), parallel={parallel}, cache=True, error_model="numpy")')
    e(0, f"def kernel(out{pdecl}):")
    e(1, f"for r in {'prange' if parallel else 'range'}({batch * m}):")
    e(2, f"z = r // {m}")
    e(2, f"i = r - z * {m}")
    e(2, f"for j in range({n}):")
    e(3, f"o_ep = r * {n} + j")
    e(3, "v_ep = out[o_ep]")
    lines, val = epilogue.render("v_ep", ["z", "i", "j"])
    for line in lines:
        e(3, line)
    e(3, f"out[o_ep] = {val}")
    return "\n".join(e.lines) + "\n"


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
