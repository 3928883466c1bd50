"""The GEMM core: one thread's block of C = A @ B (or C += A @ B), Goto/BLIS style, with the shapes
as run-time arguments. One core is compiled per (dtype, MR x NR register tile) and called by symbol
(cpu/parallel.py) from the matmul and conv kernels, which keep only their own loops, addressing
and epilogues: the core is compiled and cached once, not once per shape (a shape-specialised
module took 2.5-5 s to compile; the core's shape-specific constants bought nothing measurable,
see `python -m bench --only matmul_sizes`).

`gemm(c, a, b, M, N, K, a_trans, b_trans, pack_b, accumulate, r_lo, r_hi, j_lo, j_hi, kc, mcp)`,
all int64 (a C function):
- c, a, b: addresses of the product's C (M x N, row-major), A ((M, K), or (K, M) when a_trans) and
  B ((K, N), or (N, K) when b_trans);
- the block: row panels [r_lo, r_hi) (MR rows each) x column panels [j_lo, j_hi) (NR columns each);
- kc: the largest K block (K is cut into nearly equal blocks of at most kc); mcp: row panels per
  chunk of A that one sweep over the B panels reuses;
- pack_b: copy each K block of B's panels into a k-major buffer first (a transposed B must be,
  by W x W blocks transposed in registers: `vtranspose`, 1164 -> 949 us for 128 x 512 x 784 on
  one thread, as fast as packing a row-major B); accumulate: C += A @ B instead of C = A @ B.

The micro-kernel keeps MR x NR/W accumulators (W = 16 float32 or 8 float64 lanes: one zmm
register) in separate SIMD variables; every k step loads NR/W vectors of B (masked at the right
edge), broadcasts MR values of A read in place, and issues MR * NR/W vector FMAs
(`llvm.fma.v16f32` -> `vfmadd231ps zmm`). A row panel past M repeats the last row of A and stores
only its rows. The first K block stores C, later ones add to it.

Why the SIMD intrinsics (`vload`, `vfma`, ...) rather than scalar accumulators for LLVM's SLP
vectoriser: numba turns the SLP vectoriser off by default (`NUMBA_SLP_VECTORIZE=0`, after LLVM
miscompilations, numba PR #8852), so MR x NR scalar accumulators compile to scalar `vfmadd231ss`
(6 GFLOP/s for 6 x 32). With SLP switched on they do become `vfmadd231ps zmm`, but compile in 4-11
s instead of 0.7 s, and flipping a process-wide numba switch is not a kernel's business. The
intrinsics make the vector width explicit: LLVM keeps the accumulators in zmm registers, and
needs no fast-math flag (an FMA intrinsic is always fused; NaN and inf propagate as in numpy).
"""

from __future__ import annotations

import re

import numpy as np

from jitnet.backends.cpu import parallel

ARGS = "c_addr, a_addr, b_addr, M, N, K, a_trans, b_trans, pack_b, accumulate, r_lo, r_hi, j_lo, j_hi, kc_max, mcp"


def has_avx512() -> bool:
    """Whether the host has AVX-512's 32 vector registers (the register tile depends on it)."""
    from llvmlite import binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f", False))


def lanes_of(dtype) -> int:
    return 64 // np.dtype(dtype).itemsize


def symbol(dtype, mr: int, nr: int) -> str:
    """The core's symbol; checked mode has cores of its own (see `core_source`)."""
    return f"jitnet_gemm_{np.dtype(dtype).name}_{mr}x{nr}" + ("_checked" if parallel.checked() else "")


def require_line(dtype, mr: int, nr: int) -> str:
    """The line a generated module starts with to load and register the core it calls."""
    return f'gemm.require("{np.dtype(dtype).name}", {mr}, {nr})'


def required(source: str) -> set[tuple[str, int, int]]:
    """(dtype, mr, nr) of the cores a generated module loads (its `require_line`s)."""
    return {(dt, int(mr), int(nr)) for dt, mr, nr in _REQUIRE.findall(source)}


_REQUIRE = re.compile(r'^gemm\.require\("(\w+)", (\d+), (\d+)\)$', re.M)


def require(dtype, mr: int, nr: int) -> str:
    """Load (compile once, then from the disk cache) and register the core; its symbol."""
    name = symbol(dtype, mr, nr)
    if name not in parallel._registered:
        from jitnet.codegen import cache

        parallel.register(name, cache.load(core_source(dtype, mr, nr), "gemm"))
    return name


def core_source(dtype, mr: int, nr: int) -> str:
    """The module source of the core `gemm` for one dtype and register tile (see the docstring)."""
    dt = np.dtype(dtype)
    W = lanes_of(dt)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"the GEMM core supports float32 and float64, not {dt}")
    if nr % W or mr < 1 or nr < W:
        raise ValueError(f"bad register tile {mr}x{nr} for {dt} (nr must be a multiple of {W})")
    T, NV = dt.name, nr // W
    V = range(NV)
    lines = [
        f"# jitnet cpu GEMM core: {T}, register tile {mr} x {nr} ({mr} x {NV} vectors of {W})",
        "import numpy as np",
        "from numba import cfunc, njit",
        "from numba.types import float32, float64, int64, void",
        "",
        "from jitnet.backends.cpu.intrinsics import align_skip, ld, prefetch, st",
        "from jitnet.backends.cpu.intrinsics import vadd, vfma, vload_n, vsplat, vstore, vstore_n, vtranspose",
        "from jitnet.backends.cpu.parallel import array_at, fail",
        "",
        "",
    ]
    body = [
        f'    out = array_at(c_addr, "{T}", M * N)',
        f'    a = array_at(a_addr, "{T}", M * K)',
        f'    b = array_at(b_addr, "{T}", K * N)',
        "    nblk = max(1, (K + kc_max - 1) // kc_max)  # K blocks of nearly equal size",
        "    kcm = (K + nblk - 1) // nblk",
        "    step_p, step_i = (M, 1) if a_trans else (1, K)  # A[i, p] is a[p * step_p + i * step_i]",
        f"    bp = np.empty(((j_hi - j_lo) * kcm * {nr} if pack_b else 0) + {W}, np.{T})",
        "    b0 = align_skip(bp)",
        "    for blk in range(nblk):",
        "        p0 = blk * K // nblk",
        "        kc = (blk + 1) * K // nblk - p0",
        "        if pack_b:",
        "            for j in range(j_lo, j_hi):",
        f"                d = b0 + (j - j_lo) * kc * {nr}",
        f"                j0 = j * {nr}",
        f"                w = min({nr}, N - j0)",
        "                if b_trans:  # B^T rows run along k: W x W blocks transposed in registers",
        f"                    wf = w // {W} * {W}",
        f"                    kf = kc // {W} * {W}",
        f"                    for pb in range(0, kf, {W}):",
        f"                        for jb in range(0, wf, {W}):",
        f"                            vtranspose(b, (j0 + jb) * K + p0 + pb, K, bp, d + pb * {nr} + jb, {nr}, {W})",
        "                    for jj in range(wf):  # the K block's last kc % W rows",
        "                        for p in range(kf, kc):",
        f"                            st(bp, d + p * {nr} + jj, ld(b, (j0 + jj) * K + p0 + p))",
        "                    for jj in range(wf, w):  # the panel's last w % W columns",
        "                        for p in range(kc):",
        f"                            st(bp, d + p * {nr} + jj, ld(b, (j0 + jj) * K + p0 + p))",
        f"                    for jj in range(w, {nr}):  # past N: zeros",
        "                        for p in range(kc):",
        f"                            st(bp, d + p * {nr} + jj, 0.0)",
        "                else:  # rows of B: vector copies, zeros past N",
        "                    s = p0 * N + j0",
        *(f"                    w{v} = min(max(w - {v * W}, 0), {W})" for v in V),
        "                    for p in range(kc):",
        *(f"                        vstore(bp, d + {v * W}, vload_n(b, s + {v * W}, w{v}, {W}))" for v in V),
        "                        s += N",
        f"                        d += {nr}",
        "        for ic in range(r_lo, r_hi, mcp):",
        "            ie = min(ic + mcp, r_hi)",
        "            for j in range(j_lo, j_hi):",
        f"                nr = min({nr}, N - j * {nr})",
        *(f"                n{v} = min(max(nr - {v * W}, 0), {W})" for v in V),
        *(f"                l{v} = n{v} if accumulate or blk > 0 else 0  # lanes of C to add to" for v in V),
        "                if pack_b:",
        "                    bsrc = bp",
        f"                    bo0 = b0 + (j - j_lo) * kc * {nr}",
        f"                    bs = {nr}",
        *(f"                    q{v} = {W}" for v in V),
        "                else:",
        "                    bsrc = b",
        f"                    bo0 = p0 * N + j * {nr}",
        "                    bs = N",
        *(f"                    q{v} = n{v}" for v in V),
        "                for r in range(ic, ie):",
        f"                    rows = min({mr}, M - r * {mr})",
        f"                    co = r * {mr} * N + j * {nr}",
        f"                    ao = p0 * step_p + r * {mr} * step_i",
        *(f"                    a{i} = {f'min({i}, rows - 1) * step_i' if i else '0'}" for i in range(mr)),
        *(
            f"                    prefetch(out, co + {i} * N + {off})"
            for i in range(mr)
            for off in sorted({*range(0, nr, W), nr - 1})
        ),
        *(f"                    c{i}_{v} = vsplat({T}(0), {W})" for i in range(mr) for v in V),
        "                    bo = bo0",
        "                    for p in range(kc):",
        *(f"                        y{v} = vload_n(bsrc, bo + {v * W}, q{v}, {W})" for v in V),
    ]
    for i in range(mr):
        body.append(f"                        x{i} = vsplat(ld(a, ao + a{i}), {W})")
        body += [f"                        c{i}_{v} = vfma(x{i}, y{v}, c{i}_{v})" for v in V]
    body += ["                        ao += step_p", "                        bo += bs"]
    for i in range(mr):
        ind = "                    "
        if i:
            body.append(f"{ind}if rows > {i}:")
            ind += "    "
        for v in V:
            at = f"co + {i} * N + {v * W}"
            body.append(f"{ind}vstore_n(out, {at}, vadd(vload_n(out, {at}, l{v}, {W}), c{i}_{v}), n{v})")
    return "\n".join(lines + parallel.cfunc_source("gemm", ARGS.split(", "), parallel.jit_flags(), body)) + "\n"
