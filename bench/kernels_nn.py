"""The extern kernels through the engine: matmul, matmul_bias_relu (the matmul with an elementwise
epilogue), and LeNet's conv stack (conv_lenet: forward; conv_lenet_bwd: forward and both weights'
gradients); 1024^3 on the CPU, 4096^3 on the GPU (torch there with TF32 off: the same arithmetic).

CGMA in the table is the suite's: FLOPs per float32 of the minimum traffic. What a matmul kernel
reaches depends on its tile, named in the description: on the CPU a register tile MR x NR loads
MR + NR values per k step for 2*MR*NR FLOPs, and a packed KC x NR panel of B in L1 serves MC/MR
micro-panels of A; on the GPU a block loads BM + BN values per k step for 2*BM*BN FLOPs.

The CPU's LeNet inputs are integer-valued float32 (x in {0, 1}, weights in {-1, 0, 1}): every forward
value is exact, so every implementation and the float64 reference route a pooling window's gradient
to the same element, ties included (each takes the first maximum in window order). The GPU's are
normal (cuDNN breaks ties its own way), checked by the Frobenius error.
"""

from __future__ import annotations

import numpy as np

import jitnet as jn
from bench.workload import F32, Impl, Workload, array_module, jitnet_impl, rng, torch


def cpu_tile_cgma(m: int, n: int, k: int) -> str:
    from jitnet.backends.cpu import matmul as mm

    t = mm.choose_tile(m, n, k, np.float32)
    reg, kc = 2 * t.mr * t.nr / (t.mr + t.nr), min(k, t.kc)
    l2 = 2 * t.mc * t.nr * kc / (kc * t.nr + t.mc * kc)  # one B panel (kc x nr) per mc/mr A micro-panels
    return f"tile {t.mr}x{t.nr} kc {t.kc} mc {t.mc}: CGMA {reg:.1f} from registers' loads, {l2:.1f} per L2 block"


def gpu_tile_cgma(n: int) -> str:
    from jitnet.backends.cuda import matmul as mm

    t = mm.choose_tile(n, n, n)
    return f"tile {t.name}: CGMA {t.cgma():.1f} flop per byte of global loads"


def operands(m: int, n: int, k: int, quick_mnk: tuple | None = None, bias: bool = False):
    """a (m x k), b (k x n) and a bias row of n, normal float32; quick_mnk: their sizes in --quick."""

    def make(quick: bool) -> dict:
        (m_, n_, k_), g = quick_mnk if quick and quick_mnk else (m, n, k), rng()
        inp = {"a": g.standard_normal((m_, k_), dtype=F32), "b": g.standard_normal((k_, n_), dtype=F32)}
        return inp | ({"bias": rng().standard_normal(n_, dtype=F32)} if bias else {})

    return make


def matmul_flops(inp) -> float:
    return 2.0 * inp["a"].shape[0] * inp["b"].shape[1] * inp["a"].shape[1]


def matmul_ref(inp):
    return inp["a"].astype(np.float64) @ inp["b"].astype(np.float64)


def matmul_into(inp):
    """np.matmul, torch.matmul or cupy.matmul into a preallocated output."""
    a, b = inp["a"], inp["b"]
    lib, shape = array_module(a), (a.shape[0], b.shape[1])
    out = a.new_empty(shape) if lib.__name__ == "torch" else lib.empty(shape, a.dtype)
    return lambda: lib.matmul(a, b, out=out)


def _mbr_numpy(inp):
    a, b, bias = inp["a"], inp["b"], inp["bias"]
    out = np.empty((a.shape[0], b.shape[1]), F32)

    def run():
        np.matmul(a, b, out=out)
        np.add(out, bias, out=out)
        return np.maximum(out, F32(0), out=out)

    return run


def _mbr_torch(inp):
    relu_, addmm = torch.relu_, torch.addmm
    return lambda a=inp["a"], b=inp["b"], bias=inp["bias"]: relu_(addmm(bias, a, b))


def _on_gpu(description: str, bias: bool = False) -> dict:
    inputs = operands(4096, 4096, 4096, (1024,) * 3, bias=bias)
    return {"description": description, "make_inputs": inputs, "tol": 1e-4, "error_kind": "fro"}


MATMUL = Workload(
    "matmul",
    f"float32 (1024 x 1024) @ (1024 x 1024) on the CPU; {cpu_tile_cgma(1024, 1024, 1024)}",
    operands(1024, 1024, 1024, (512,) * 3),
    matmul_flops,
    matmul_ref,
    [
        jitnet_impl(lambda a, b: a @ b),
        Impl("numpy", matmul_into, "numpy", note="np.matmul(a, b, out=preallocated): OpenBLAS sgemm"),
        Impl("torch", matmul_into, "torch", note="torch.matmul(a, b, out=preallocated)"),
        Impl("cupy", matmul_into, "cupy", note="cupy.matmul(a, b, out=preallocated): cuBLAS"),
    ],
    tol=1e-5,
    error_kind="rel",
    max_samples=30,
    targets={"beats": ("numpy",)},
    gpu=_on_gpu("float32 4096^3 on the GPU"),
)
MATMUL_BIAS_RELU = Workload(
    "matmul_bias_relu",
    "relu(a @ b + bias), float32 1024^3 and a bias row: the matmul with an elementwise epilogue",
    operands(1024, 1024, 1024, (512,) * 3, bias=True),
    lambda inp: matmul_flops(inp) + 2.0 * inp["a"].shape[0] * inp["b"].shape[1],
    lambda inp: np.maximum(matmul_ref(inp) + inp["bias"], 0),
    [
        jitnet_impl(lambda a, b, bias: jn.relu(a @ b + bias)),
        Impl("numpy", _mbr_numpy, "numpy", note="np.matmul(out=), then in-place add and maximum"),
        Impl("torch", _mbr_torch, "torch", note="torch.relu_(torch.addmm(bias, a, b))"),
    ],
    tol=1e-5,
    error_kind="rel",
    max_samples=30,
    targets={"beats": ("numpy",)},
    gpu=_on_gpu("relu(a @ b + bias), float32 4096^3 and a bias row on the GPU", bias=True),
)

# ---- conv_lenet, conv_lenet_bwd -----------------------------------------------------------------------

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


# numpy peer: im2col through sliding_window_view + tensordot (BLAS), pools by reshape.


def _np_windows(x, k):
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=(2, 3))  # (N, C, Ho, Wo, kh, kw)


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

    def conv(x, w):
        return np.tensordot(_np_windows(x, w.shape[2:]), w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)

    def weight_grad(x, g, k):
        return np.tensordot(g, _np_windows(x, k), axes=((0, 2, 3), (0, 2, 3)))

    def run():
        y1 = conv(x, w1)
        p1 = _np_pool_windows(y1).max(-1)
        y2 = conv(p1, w2)
        p2 = _np_pool_windows(y2).max(-1)
        if not backward:
            return p2
        g_y2 = _np_pool_vjp(y2, np.ones_like(p2))
        gw2 = weight_grad(p1, g_y2, w2.shape[2:])
        g_y1 = _np_pool_vjp(y1, _np_input_grad(g_y2, w2, p1.shape))
        return p2.sum(dtype=np.float64), (weight_grad(x, g_y1, w1.shape[2:]), gw2)

    return run


def _torch_lenet(x, w1, w2):
    F = torch.nn.functional
    return F.max_pool2d(F.conv2d(F.max_pool2d(F.conv2d(x, w1), 2), w2), 2)


def _lenet_torch(inp):
    def run():
        with torch.no_grad():
            return _torch_lenet(inp["x"], inp["w1"], inp["w2"])

    return run


def _lenet_bwd_torch(inp):
    def run():
        w1, w2 = (inp[k].detach().requires_grad_(True) for k in ("w1", "w2"))
        value = _torch_lenet(inp["x"], w1, w2).sum()
        value.backward()
        return value.detach(), (w1.grad, w2.grad)

    return run


def _lenet(backward: bool, impls: list[Impl], description: str) -> Workload:
    return Workload(
        "conv_lenet_bwd" if backward else "conv_lenet",
        f"{LENET}; {description}",
        _lenet_inputs,
        lambda inp: _lenet_flops(inp, backward),
        lambda inp: _lenet_ref(inp, backward),
        impls,
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
    [
        jitnet_impl(lenet),
        Impl("numpy", _lenet_numpy, "numpy", note="im2col by sliding_window_view + tensordot (BLAS), pools by reshape"),
        Impl("torch", _lenet_torch, "torch", note="eager F.conv2d / F.max_pool2d under no_grad"),
    ],
    "forward",
)
CONV_LENET_BWD = _lenet(
    True,
    [
        jitnet_impl(lambda x, w1, w2: jn.value_and_grad(lambda *w: jn.sum(lenet(x, *w)), argnums=(0, 1))(w1, w2)),
        Impl(
            "numpy",
            lambda inp: _lenet_numpy(inp, backward=True),
            "numpy",
            note="by hand: tensordot im2col convs, argmax pool routing, col2im",
        ),
        Impl("torch", _lenet_bwd_torch, "torch", note="eager autograd: sum().backward() w.r.t. w1, w2"),
    ],
    "value_and_grad of the output's sum w.r.t. both weights",
)
WORKLOADS = [MATMUL, MATMUL_BIAS_RELU, CONV_LENET, CONV_LENET_BWD]
