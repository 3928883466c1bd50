"""jitnet's generated matmul kernels called directly, without the engine (jitnet/backends/{cpu,cuda}/
matmul.py), at the tile the rules pick or a forced one, beside BLAS: for tuning the rules.

On the GPU they are part of the default run: matmul_kernel_1024 and _2048, and matmul_tiles (every
tile of the GPU set and the first without prefetch, at 4096^3). On the CPU they run by group name
(`python -m bench --only GROUP`, or `python -m bench.matmul_cpu`): matmul_sizes (256^3 to 2048^3),
matmul_tiles (the tile sweep at 1024^3), matmul_route (small and skinny shapes: the kernel the rules
pick, forced serial, forced parallel, and numpy: what decides choose_path and SERIAL_MAX_WORK), and
fma_peak (the machine's float32 FMA ceiling). CPU rows start each turn after a pause (settle_s).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bench.kernels_nn import MATMUL, cpu_tile_cgma, gpu_tile_cgma, matmul_flops, matmul_ref, operands
from bench.workload import F32, Impl, Workload

BLAS = [i for i in MATMUL.impls if i.requires]  # np.matmul, torch.matmul, cupy.matmul into preallocated outputs
SWEEP_CPU = ["6x32k256m96", "6x32k128m96", "6x32k384m96", "6x32k512m96", "6x32k256m48", "6x32k256m192"]
SWEEP_CPU += ["6x32k256m384", "8x32k256m96", "4x64k256m96", "4x48k256m96", "14x16k256m98", "8x48k256m96"]
ROUTE = [(s, s, s) for s in (4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 192, 256)] + [
    *[(s, 1024, 1024) for s in (1, 2, 4, 8, 16)] + [(1024, s, 1024) for s in (1, 2, 4, 8, 16)],
    *[(1024, 1024, 1), (1024, 1024, 8), (64, 4096, 64), (4096, 64, 64), (64, 64, 4096), (32, 512, 512)],
    *[(512, 32, 512), (128, 784, 256), (256, 128, 784), (784, 128, 256)],
]


def kernel(tile=None, parallel: bool | None = None):
    """jitnet's kernel at `tile` (None: the rule's); its output starts as NaN, so that an element it
    never writes fails the check. On the CPU `parallel` forces threads on or off."""

    def make(inp):
        from jitnet.codegen import cache

        a, b = inp["a"], inp["b"]
        (m, k), n = a.shape, b.shape[1]
        out = np.full(m * n, np.nan, F32)
        if isinstance(a, np.ndarray):
            from jitnet.backends.cpu import matmul as mm

            fn = cache.load(mm.matmul_source(m, n, k, 1, F32, tile=tile, parallel=parallel), "kernel")
        else:
            from numba import cuda

            from jitnet.backends.cuda import matmul as mm

            fn, out = cache.load(mm.matmul_source(m, n, k, 1, F32, False, False, tile), "launch"), cuda.to_device(out)
        a1, b1, result = a.reshape(-1), b.reshape(-1), out.reshape(m, n)
        return lambda: (fn(out, a1, b1), result)[1]

    return make


RULE = Impl("jitnet", kernel(), note="the generated kernel called directly, the rule's tile")
GPU_RULE = dataclasses.replace(RULE, requires="numba")  # on numba device arrays


def _workload(name: str, description: str, mnk: tuple, impls: list[Impl], quick_mnk=None, **fields) -> Workload:
    gpu = {"tol": 1e-5, "error_kind": "fro", "settle_s": 0.0}
    fields = {"tol": 1e-4, "error_kind": "rel", "max_samples": 30, "settle_s": 0.3, "gpu": gpu, **fields}
    return Workload(name, description, operands(*mnk, quick_mnk), matmul_flops, matmul_ref, impls, **fields)


def gpu() -> list[Workload]:
    from jitnet.backends.cuda import matmul as mm

    tiles = [*mm.TILES.values(), dataclasses.replace(next(iter(mm.TILES.values())), prefetch=False)]
    sweep = [GPU_RULE, *[Impl(f"tile {t.name}", kernel(t), "numba") for t in tiles], *BLAS]
    sizes = [
        _workload(
            f"matmul_kernel_{n}", f"float32 {n}^3; {gpu_tile_cgma(n)}", (n,) * 3, [GPU_RULE, *BLAS], (n // 2,) * 3
        )
        for n in (1024, 2048)
    ]
    return [
        w.on("cuda")
        for w in [*sizes, _workload("matmul_tiles", "tile sweep, float32 4096^3", (4096,) * 3, sweep, (1024,) * 3)]
    ]


# ---- the CPU ------------------------------------------------------------------------------------

PEAK_SOURCE = "\n".join(
    [
        "import numpy as np",
        "from numba import njit, prange",
        "from jitnet.backends.cpu.intrinsics import vsplat, vfma, vstore",
        "@njit(parallel=True, cache=True)",
        "def kernel(out, n):",
        "    for t in prange(2):",
        "        x = vsplat(np.float32(1.0000001), 16)",
        "        y = vsplat(np.float32(0.9999999), 16)",
        *[f"        c{i} = vsplat(np.float32({i}), 16)" for i in range(16)],
        "        for p in range(n):",
        *[f"            c{i} = vfma(x, c{i}, y)" for i in range(16)],
        *[f"        vstore(out, t * 256 + {i * 16}, c{i})" for i in range(16)],
        "",
    ]
)


def _fma_peak(inp):
    from jitnet.codegen import cache

    fn, out, steps = cache.load(PEAK_SOURCE, "kernel"), np.zeros(512, F32), int(inp["steps"][0])
    return lambda: (fn(out, steps), out)[1]


def _fma_peak_ref(inp):
    """c <- x c + y, `steps` times from c = the chain's number: x^n c + y (x^n - 1) / (x - 1)."""
    x, y, steps = float(F32(1.0000001)), float(F32(0.9999999)), int(inp["steps"][0])
    return np.tile(x**steps * np.repeat(np.arange(16.0), 16) + y * (x**steps - 1) / (x - 1), 2)


FMA_PEAK = Workload(
    "fma_peak",
    "2 threads of 16 independent 16-lane float32 FMA chains, no memory traffic: the FMA ceiling",
    lambda quick: {"steps": np.array([200_000 if quick else 2_000_000])},
    lambda inp: 2.0 * 2 * 16 * 16 * inp["steps"][0],
    _fma_peak_ref,
    [Impl("jitnet", _fma_peak, note="vsplat/vfma/vstore of jitnet.backends.cpu.intrinsics")],
    bytes=lambda inp: 512 * 4.0,
    tol=1e-2,  # relative: float32 rounding drifts ~2e-3 over 2M steps
    error_kind="rel",
    max_samples=7,
)


def cpu_groups() -> dict[str, list[Workload]]:
    from jitnet.backends.cpu.matmul import choose_path

    blas = [i for i in BLAS if i.requires != "cupy"]
    sweep = [RULE, *[Impl(f"tile {t}", kernel(t)) for t in SWEEP_CPU], *blas]
    forced = [
        Impl("serial", kernel(parallel=False), note="forced serial"),
        Impl("parallel", kernel(parallel=True), note="forced parallel"),
    ]

    def route(m: int, n: int, k: int) -> Workload:
        what = f"float32 ({m} x {k}) @ ({k} x {n}); choose_path: {choose_path(m, n, k)}"
        return _workload(f"matmul_route_{m}x{n}x{k}", what, (m, n, k), [RULE, *forced, blas[0]], unit="us")

    def size(s: int) -> Workload:
        return _workload(f"matmul_kernel_{s}", f"float32 {s}^3; {cpu_tile_cgma(s, s, s)}", (s,) * 3, [RULE, *blas])

    return {
        "matmul_sizes": [size(s) for s in (256, 512, 1024, 2048)],
        "matmul_tiles": [_workload("matmul_tiles", "tile sweep, float32 1024^3", (1024,) * 3, sweep)],
        "matmul_route": [route(*shape) for shape in ROUTE],
        "fma_peak": [FMA_PEAK],
    }
