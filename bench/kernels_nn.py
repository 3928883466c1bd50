"""The extern kernels through the engine: matmul, matmul_bias_relu (an elementwise epilogue), LeNet's
conv stack (conv_lenet: forward; conv_lenet_bwd: and both weights' gradients), 1024^3 on the CPU,
4096^3 on the GPU (torch there with TF32 off: the same arithmetic); and jitnet's generated matmul
kernels called directly (jitnet/backends/{cpu,cuda}/matmul.py), at the rule's tile or a forced one,
beside BLAS, for tuning the rules: on the GPU in the default run, on the CPU by group (matmul_sizes,
matmul_tiles, matmul_route: what decides choose_path and SERIAL_MAX_WORK; fma_peak: the float32 FMA
ceiling), each CPU row's turn after a pause (settle_s). A matmul's CGMA depends on its tile, named in
the description: a register tile MR x NR loads MR + NR values per k step for 2*MR*NR FLOPs, a packed KC
x NR panel of B in L1 serves MC/MR micro-panels of A; a GPU block loads BM + BN values per k step for
2*BM*BN FLOPs. The CPU's LeNet inputs are integer-valued float32 (x in {0, 1}, weights in {-1, 0, 1}):
every forward value is exact, so every implementation and the float64 reference route a pooling
window's gradient to the same element, ties included. The GPU's are normal (cuDNN breaks ties its own
way): the Frobenius error."""

import dataclasses
from functools import partial

import numpy as np

import jitnet as jn
from bench.workload import F32, Impl, Workload, array_module, jitnet_impl, rng, run_ufuncs, torch
from jitnet.backends.cpu import matmul as cpu_matmul
from jitnet.codegen import cache


def cpu_tile_cgma(m: int, n: int, k: int) -> str:
    t = cpu_matmul.choose_tile(m, n, k, np.float32)
    reg, kc = 2 * t.mr * t.nr / (t.mr + t.nr), min(k, t.kc)
    l2 = 2 * t.mc * t.nr * kc / (kc * t.nr + t.mc * kc)  # one B panel (kc x nr) per mc/mr A micro-panels
    return f"tile {t.mr}x{t.nr} kc {t.kc} mc {t.mc}: CGMA {reg:.1f} from registers' loads, {l2:.1f} per L2 block"


def gpu_tile_cgma(n: int) -> str:
    from jitnet.backends.cuda import matmul as mm

    t = mm.choose_tile(n, n, n)
    return f"tile {t.name}: CGMA {t.cgma():.1f} flop per byte of global loads"


def operands(m: int, n: int, k: int, quick_mnk: tuple | None, bias: bool, quick: bool) -> dict:
    """a (m x k), b (k x n) and a bias row of n, normal float32; quick_mnk: their sizes in --quick."""
    (m, n, k), g = quick_mnk if quick and quick_mnk else (m, n, k), rng()
    inp = {"a": g.standard_normal((m, k), dtype=F32), "b": g.standard_normal((k, n), dtype=F32)}
    return inp | ({"bias": rng().standard_normal(n, dtype=F32)} if bias else {})


matmul_flops = lambda inp: 2.0 * inp["a"].shape[0] * inp["b"].shape[1] * inp["a"].shape[1]
matmul_ref = lambda inp: inp["a"].astype(np.float64) @ inp["b"].astype(np.float64)


def matmul_into(inp):
    """np.matmul, torch.matmul or cupy.matmul into a preallocated output."""
    a, b = inp["a"], inp["b"]
    lib, shape = array_module(a), (a.shape[0], b.shape[1])
    out = a.new_empty(shape) if lib.__name__ == "torch" else lib.empty(shape, a.dtype)
    return lambda: lib.matmul(a, b, out=out)


def _mbr_numpy(inp):
    a, b, bias = inp["a"], inp["b"], inp["bias"]
    out = np.empty((a.shape[0], b.shape[1]), F32)
    return partial(run_ufuncs, [(np.matmul, a, b, out), (np.add, out, bias, out), (np.maximum, out, F32(0), out)])


def _mbr_torch(inp):
    relu_, addmm = torch.relu_, torch.addmm
    return lambda a=inp["a"], b=inp["b"], bias=inp["bias"]: relu_(addmm(bias, a, b))


def _matmul_fields(gpu_description: str, bias: bool = False) -> dict:
    """What matmul and matmul_bias_relu share: on the GPU 4096^3, checked by the Frobenius error."""
    gpu = {"description": gpu_description, "make_inputs": partial(operands, 4096, 4096, 4096, (1024,) * 3, bias)}
    gpu.update(tol=1e-4, error_kind="fro")
    return {"tol": 1e-5, "error_kind": "rel", "max_samples": 30, "targets": {"beats": ("numpy",)}, "gpu": gpu}


MATMUL = Workload(
    "matmul",
    f"float32 (1024 x 1024) @ (1024 x 1024) on the CPU; {cpu_tile_cgma(1024, 1024, 1024)}",
    partial(operands, 1024, 1024, 1024, (512,) * 3, False),
    matmul_flops,
    matmul_ref,
    [
        jitnet_impl(lambda a, b: a @ b),
        Impl("numpy", matmul_into, "numpy", note="np.matmul(a, b, out=preallocated): OpenBLAS sgemm"),
        Impl("torch", matmul_into, "torch", note="torch.matmul(a, b, out=preallocated)"),
        Impl("cupy", matmul_into, "cupy", note="cupy.matmul(a, b, out=preallocated): cuBLAS"),
    ],
    **_matmul_fields("float32 4096^3 on the GPU"),
)
MATMUL_BIAS_RELU = Workload(
    "matmul_bias_relu",
    "relu(a @ b + bias), float32 1024^3 and a bias row: the matmul with an elementwise epilogue",
    partial(operands, 1024, 1024, 1024, (512,) * 3, True),
    lambda inp: matmul_flops(inp) + 2.0 * inp["a"].shape[0] * inp["b"].shape[1],
    lambda inp: np.maximum(matmul_ref(inp) + inp["bias"], 0),
    [
        jitnet_impl(lambda a, b, bias: jn.relu(a @ b + bias)),
        Impl("numpy", _mbr_numpy, "numpy", note="np.matmul(out=), then in-place add and maximum"),
        Impl("torch", _mbr_torch, "torch", note="torch.relu_(torch.addmm(bias, a, b))"),
    ],
    **_matmul_fields("relu(a @ b + bias), float32 4096^3 and a bias row on the GPU", bias=True),
)

S1, P0 = (1, 1), (0, 0)
POOL = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}
LENET = "LeNet convs, batch 64, float32: conv 1->20 5x5 on 28x28, maxpool 2, conv 20->50 5x5, maxpool 2"


def _lenet_inputs(quick: bool, gpu: bool = False) -> dict:
    n = 16 if quick else 64
    if gpu:  # normal
        g = rng(5)
        x, w1 = g.standard_normal((n, 1, 28, 28), dtype=F32), g.standard_normal((20, 1, 5, 5)) * 0.2
        return {"x": x, "w1": w1.astype(F32), "w2": (g.standard_normal((50, 20, 5, 5)) * 0.05).astype(F32)}
    g, shapes = rng(), {"x": ((n, 1, 28, 28), 0), "w1": ((20, 1, 5, 5), -1), "w2": ((50, 20, 5, 5), -1)}
    return {k: g.integers(low, 2, shape).astype(F32) for k, (shape, low) in shapes.items()}


def lenet(x, w1, w2):
    return jn.max_pool2d(jn.conv2d(jn.max_pool2d(jn.conv2d(x, w1), 2), w2), 2)


def _lenet_ref(inp, backward: bool):
    """float64 forward values, or the sum's value and both weights' gradients, from the op table's references."""
    from jitnet.ir.opdefs import OPS

    conv, pool, pool_vjp = OPS["conv2d"].ref, OPS["max_pool2d"].ref, OPS["max_pool2d_vjp"].ref
    x, w1, w2 = (inp[k].astype(np.float64) for k in ("x", "w1", "w2"))
    y1 = conv(x, w1, stride=S1, padding=P0)
    p1 = pool(y1, **POOL)
    y2 = conv(p1, w2, stride=S1, padding=P0)
    p2 = pool(y2, **POOL)
    if not backward:
        return p2
    g_y2 = pool_vjp(y2, np.ones_like(p2), **POOL, in_shape=y2.shape)
    gw2 = OPS["conv2d_weight_grad"].ref(p1, g_y2, stride=S1, padding=P0, w_shape=w2.shape)
    g_p1 = OPS["conv2d_input_grad"].ref(g_y2, w2, stride=S1, padding=P0, in_shape=p1.shape)
    g_y1 = pool_vjp(y1, g_p1, **POOL, in_shape=y1.shape)
    gw1 = OPS["conv2d_weight_grad"].ref(x, g_y1, stride=S1, padding=P0, w_shape=w1.shape)
    return np.asarray(p2.sum()), (gw1, gw2)


def _lenet_flops(inp, backward: bool) -> float:
    n = inp["x"].shape[0]
    c1, c2 = 2.0 * n * 20 * 24 * 24 * 1 * 25, 2.0 * n * 50 * 8 * 8 * 20 * 25  # 2 * N * O * Ho * Wo * C * kh * kw
    pools = n * 20 * 24 * 24 + n * 50 * 8 * 8  # one comparison per window element
    # backward: conv2's input and weight gradients, conv1's weight gradient, both pools' routing
    return c1 + c2 + pools + ((c2 + c2 + c1 + pools) if backward else 0.0)


# the numpy peer's im2col: windows (N, C, Ho, Wo, kh, kw) of x by sliding_window_view, contracted by tensordot
_np_windows = lambda x, k: np.lib.stride_tricks.sliding_window_view(x, k, axis=(2, 3))
_np_conv = lambda x, w: np.tensordot(_np_windows(x, w.shape[2:]), w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)
_np_weight_grad = lambda x, g, k: np.tensordot(g, _np_windows(x, k), axes=((0, 2, 3), (0, 2, 3)))


def _np_pool_windows(y):
    n, c, h, w = y.shape
    return y.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


def _np_pool_vjp(y, g):
    """Each window's gradient to its first maximum (argmax takes the first)."""
    n, c, h, w = y.shape
    gw = np.zeros((n, c, h // 2, w // 2, 4), y.dtype)
    np.put_along_axis(gw, _np_pool_windows(y).argmax(axis=-1)[..., None], g[..., None], axis=-1)
    return gw.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _np_input_grad(g, w, x_shape):
    gcol = np.tensordot(g, w, axes=(1, 0))  # (N, Ho, Wo, C, kh, kw)
    gx = np.zeros(x_shape, g.dtype)
    ho, wo = g.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            gx[:, :, i : i + ho, j : j + wo] += gcol[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return gx


def _lenet_numpy(inp, backward: bool = False):
    x, w1, w2 = inp["x"], inp["w1"], inp["w2"]

    def run():
        y1 = _np_conv(x, w1)
        p1 = _np_pool_windows(y1).max(-1)
        y2 = _np_conv(p1, w2)
        p2 = _np_pool_windows(y2).max(-1)
        if not backward:
            return p2
        g_y2 = _np_pool_vjp(y2, np.ones_like(p2))
        gw2 = _np_weight_grad(p1, g_y2, w2.shape[2:])
        g_y1 = _np_pool_vjp(y1, _np_input_grad(g_y2, w2, p1.shape))
        return p2.sum(dtype=np.float64), (_np_weight_grad(x, g_y1, w1.shape[2:]), gw2)

    return run


def _torch_lenet(x, w1, w2):
    F = torch.nn.functional
    return F.max_pool2d(F.conv2d(F.max_pool2d(F.conv2d(x, w1), 2), w2), 2)


def _lenet_torch(inp, backward: bool = False):
    def run():
        if not backward:
            with torch.no_grad():
                return _torch_lenet(inp["x"], inp["w1"], inp["w2"])
        w1, w2 = (inp[k].detach().requires_grad_(True) for k in ("w1", "w2"))
        value = _torch_lenet(inp["x"], w1, w2).sum()
        value.backward()
        return value.detach(), (w1.grad, w2.grad)

    return run


def _lenet(backward: bool, jitnet_fn, description: str, numpy_note: str, torch_note: str) -> Workload:
    numpy_impl = Impl("numpy", partial(_lenet_numpy, backward=backward), "numpy", note=numpy_note)
    torch_impl = Impl("torch", partial(_lenet_torch, backward=backward), "torch", note=torch_note)
    return Workload(
        "conv_lenet_bwd" if backward else "conv_lenet",
        f"{LENET}; {description}",
        _lenet_inputs,
        lambda inp: _lenet_flops(inp, backward),
        lambda inp: _lenet_ref(inp, backward),
        [jitnet_impl(jitnet_fn), numpy_impl, torch_impl],
        tol=1e-6,
        error_kind="rel",
        max_samples=30,
        targets={"beats": ("torch",)},
        gpu={
            "description": f"{LENET} (normal inputs) on the GPU; {description}",
            "make_inputs": lambda quick: _lenet_inputs(quick, gpu=True),
            "tol": 1e-4,
            "error_kind": "fro",
        },
    )


CONV_LENET = _lenet(
    False,
    lenet,
    "forward",
    "im2col by sliding_window_view + tensordot (BLAS), pools by reshape",
    "eager F.conv2d / F.max_pool2d under no_grad",
)
CONV_LENET_BWD = _lenet(
    True,
    lambda x, w1, w2: jn.value_and_grad(lambda *w: jn.sum(lenet(x, *w)), argnums=(0, 1))(w1, w2),
    "value_and_grad of the output's sum w.r.t. both weights",
    "by hand: tensordot im2col convs, argmax pool routing, col2im",
    "eager autograd: sum().backward() w.r.t. w1, w2",
)
WORKLOADS = [MATMUL, MATMUL_BIAS_RELU, CONV_LENET, CONV_LENET_BWD]

BLAS = [i for i in MATMUL.impls if i.requires]  # np.matmul, torch.matmul, cupy.matmul into preallocated outputs
SWEEP_CPU = ["6x32k256m96", "6x32k128m96", "6x32k384m96", "6x32k512m96", "6x32k256m48", "6x32k256m192"]
SWEEP_CPU += ["6x32k256m384", "8x32k256m96", "4x64k256m96", "4x48k256m96", "14x16k256m98", "8x48k256m96"]
ROUTE = [(s, s, s) for s in (4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 192, 256)] + [
    *[(s, 1024, 1024) for s in (1, 2, 4, 8, 16)] + [(1024, s, 1024) for s in (1, 2, 4, 8, 16)],
    *[(1024, 1024, 1), (1024, 1024, 8), (64, 4096, 64), (4096, 64, 64), (64, 64, 4096), (32, 512, 512)],
    *[(512, 32, 512), (128, 784, 256), (256, 128, 784), (784, 128, 256)],
]


def kernel(inp, tile=None, parallel: bool | None = None):
    """jitnet's kernel at `tile` (None: the rule's); its output starts as NaN, so that an element it
    never writes fails the check. On the CPU `parallel` forces threads on or off."""
    a, b = inp["a"], inp["b"]
    (m, k), n = a.shape, b.shape[1]
    out = np.full(m * n, np.nan, F32)
    if isinstance(a, np.ndarray):
        fn = cache.load(cpu_matmul.matmul_source(m, n, k, 1, F32, tile=tile, parallel=parallel), "kernel")
    else:
        from numba import cuda

        from jitnet.backends.cuda import matmul as mm

        fn, out = cache.load(mm.matmul_source(m, n, k, 1, F32, False, False, tile), "launch"), cuda.to_device(out)
    a1, b1, result = a.reshape(-1), b.reshape(-1), out.reshape(m, n)
    return lambda: (fn(out, a1, b1), result)[1]


RULE = Impl("jitnet", kernel, note="the generated kernel called directly, the rule's tile")
GPU_RULE = dataclasses.replace(RULE, requires="numba")  # on numba device arrays


def _workload(name: str, description: str, mnk: tuple, impls: list[Impl], quick_mnk=None, **fields) -> Workload:
    gpu = {"tol": 1e-5, "error_kind": "fro", "settle_s": 0.0}
    fields = {"tol": 1e-4, "error_kind": "rel", "max_samples": 30, "settle_s": 0.3, "gpu": gpu, **fields}
    inputs = partial(operands, *mnk, quick_mnk, False)
    return Workload(name, description, inputs, matmul_flops, matmul_ref, impls, **fields)


def _size(n: int, tile: str, impls: list[Impl], quick_mnk=None) -> Workload:
    return _workload(f"matmul_kernel_{n}", f"float32 {n}^3; {tile}", (n,) * 3, impls, quick_mnk)


def gpu_matmul_kernels() -> list[Workload]:
    from jitnet.backends.cuda import matmul as mm

    tiles = [*mm.TILES.values(), dataclasses.replace(next(iter(mm.TILES.values())), prefetch=False)]
    sweep = [GPU_RULE, *[Impl(f"tile {t.name}", partial(kernel, tile=t), "numba") for t in tiles], *BLAS]
    workloads = [_size(n, gpu_tile_cgma(n), [GPU_RULE, *BLAS], (n // 2,) * 3) for n in (1024, 2048)]
    workloads.append(_workload("matmul_tiles", "tile sweep, float32 4096^3", (4096,) * 3, sweep, (1024,) * 3))
    return [w.on("cuda") for w in workloads]


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
    blas = [i for i in BLAS if i.requires != "cupy"]
    sweep = [RULE, *[Impl(f"tile {t}", partial(kernel, tile=t)) for t in SWEEP_CPU], *blas]
    forced = [
        Impl("serial", partial(kernel, parallel=False), note="forced serial"),
        Impl("parallel", partial(kernel, parallel=True), note="forced parallel"),
    ]

    def route(m: int, n: int, k: int) -> Workload:
        what = f"float32 ({m} x {k}) @ ({k} x {n}); choose_path: {cpu_matmul.choose_path(m, n, k)}"
        return _workload(f"matmul_route_{m}x{n}x{k}", what, (m, n, k), [RULE, *forced, blas[0]], unit="us")

    return {
        "matmul_sizes": [_size(s, cpu_tile_cgma(s, s, s), [RULE, *blas]) for s in (256, 512, 1024, 2048)],
        "matmul_tiles": [_workload("matmul_tiles", "tile sweep, float32 1024^3", (1024,) * 3, sweep)],
        "matmul_route": [route(*shape) for shape in ROUTE],
        "fma_peak": [FMA_PEAK],
    }
