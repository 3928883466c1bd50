"""Workloads for the extern kernels on the CPU: matmul (1024^3 float32), matmul_bias_relu, and LeNet's
conv stack (conv_lenet: forward; conv_lenet_bwd: forward and the weights' gradients).

Registered into the suite by the import at the end of bench/workloads.py; run with
`python -m bench --only matmul,matmul_bias_relu,conv_lenet,conv_lenet_bwd`.

CGMA in the table is the suite's: FLOPs per float32 of the minimum traffic (inputs read once, output
written once). What the matmul kernel actually achieves depends on its tile (matmul.py): per k step a
register tile MR x NR loads MR + NR values for 2*MR*NR FLOPs, 2*MR*NR / (MR + NR) FLOPs per value
read from L1 (4 x 64: 7.5); a packed KC x NR panel of B is reused by every MR-row panel of A (MC
rows per chunk), and A is re-read from L2/L3 once per column panel: `tile_cgma` prints these for
the tile the engine picks.

The LeNet inputs are integer-valued float32 (x in {0, 1}, weights in {-1, 0, 1}): every forward value
is then exact in float32, so every implementation (and the float64 reference) routes a pooling
window's gradient to the same element, ties included (each takes the first maximum in window order).
"""

from __future__ import annotations

import numpy as np

from bench import peers
from bench.workloads import F32, Impl, Workload, register
from jitnet.backends.cpu import matmul as mm
from jitnet.ir.opdefs import OPS


def _rng():
    return np.random.default_rng(0)


def tile_cgma(m: int, n: int, k: int, dtype=np.float32) -> str:
    """The tile the engine uses at this shape and its FLOPs per element moved at each level."""
    t = mm.choose_tile(m, n, k, dtype)
    reg = 2 * t.mr * t.nr / (t.mr + t.nr)
    kc = min(k, t.kc)
    # one packed B panel (kc x nr) in L1 serves mc/mr A micro-panels: 2*mc*nr*kc FLOPs per (kc*nr + mc*kc) loads
    l2 = 2 * t.mc * t.nr * kc / (kc * t.nr + t.mc * kc)
    return f"tile {t.mr}x{t.nr} kc {t.kc} mc {t.mc}: CGMA {reg:.1f} from registers' loads, {l2:.1f} per L2 block"


# ---- matmul ---------------------------------------------------------------------------------------


def _matmul_inputs(quick):
    n = 512 if quick else 1024
    rng = _rng()
    return {"a": rng.standard_normal((n, n), dtype=F32), "b": rng.standard_normal((n, n), dtype=F32)}


def _matmul_jitnet(a, b):
    return a @ b


def _matmul_numpy(inp):
    a, b = inp["a"], inp["b"]
    out = np.empty((a.shape[0], b.shape[1]), F32)
    return lambda: np.matmul(a, b, out=out)


def _matmul_torch(inp):
    torch = peers.torch()
    a, b = torch.from_numpy(inp["a"]), torch.from_numpy(inp["b"])
    out = torch.empty(a.shape[0], b.shape[1])
    return lambda: torch.matmul(a, b, out=out)


def _mm_flops(inp):
    (m, k), n = inp["a"].shape, inp["b"].shape[1]
    return 2.0 * m * n * k


register(
    Workload(
        name="matmul",
        description=f"float32 (1024 x 1024) @ (1024 x 1024) on the CPU; {tile_cgma(1024, 1024, 1024)}",
        make_inputs=_matmul_inputs,
        flops=_mm_flops,
        bytes=lambda inp: inp["a"].nbytes + inp["b"].nbytes + inp["a"].shape[0] * inp["b"].shape[1] * 4.0,
        reference=lambda inp: inp["a"].astype(np.float64) @ inp["b"].astype(np.float64),
        jitnet_fn=_matmul_jitnet,
        tol=1e-5,
        error_kind="rel",
        max_samples=30,
        targets={"beats": ("numpy",)},
        peers=[
            Impl("numpy", _matmul_numpy, note="np.matmul(a, b, out=preallocated): OpenBLAS sgemm"),
            Impl("torch", _matmul_torch, "torch", note="torch.matmul(a, b, out=preallocated), 2 threads"),
        ],
    )
)


# ---- matmul_bias_relu -----------------------------------------------------------------------------


def _mbr_inputs(quick):
    inp = _matmul_inputs(quick)
    inp["bias"] = _rng().standard_normal(inp["b"].shape[1], dtype=F32)
    return inp


def _mbr_jitnet(a, b, bias):
    import jitnet as jn

    return jn.relu(a @ b + bias)


def _mbr_numpy(inp):
    a, b, bias = inp["a"], inp["b"], inp["bias"]
    out = np.empty((a.shape[0], b.shape[1]), F32)

    def run():
        np.matmul(a, b, out=out)
        np.add(out, bias, out=out)
        return np.maximum(out, F32(0), out=out)

    return run


def _mbr_torch(inp):
    torch = peers.torch()
    a, b, bias = (torch.from_numpy(inp[k]) for k in ("a", "b", "bias"))
    return lambda: torch.relu_(torch.addmm(bias, a, b))


register(
    Workload(
        name="matmul_bias_relu",
        description="relu(a @ b + bias), float32 1024^3 and a bias row: the matmul with an elementwise epilogue",
        make_inputs=_mbr_inputs,
        flops=lambda inp: _mm_flops(inp) + 2.0 * inp["a"].shape[0] * inp["b"].shape[1],
        bytes=lambda inp: (
            inp["a"].nbytes + inp["b"].nbytes + inp["bias"].nbytes + inp["a"].shape[0] * inp["b"].shape[1] * 4.0
        ),
        reference=lambda inp: np.maximum(inp["a"].astype(np.float64) @ inp["b"] + inp["bias"], 0),
        jitnet_fn=_mbr_jitnet,
        tol=1e-5,
        error_kind="rel",
        max_samples=30,
        targets={"beats": ("numpy",)},
        peers=[
            Impl("numpy", _mbr_numpy, note="np.matmul(out=), then in-place add and maximum"),
            Impl("torch", _mbr_torch, "torch", note="torch.relu_(torch.addmm(bias, a, b)), 2 threads"),
        ],
    )
)


# ---- conv_lenet -----------------------------------------------------------------------------------

S1, P = (1, 1), (0, 0)
POOL = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}


def _lenet_inputs(quick):
    rng = _rng()
    n = 16 if quick else 64
    return {
        "x": rng.integers(0, 2, (n, 1, 28, 28)).astype(F32),
        "w1": rng.integers(-1, 2, (20, 1, 5, 5)).astype(F32),
        "w2": rng.integers(-1, 2, (50, 20, 5, 5)).astype(F32),
    }


def _lenet_jitnet(x, w1, w2):
    import jitnet as jn

    return jn.max_pool2d(jn.conv2d(jn.max_pool2d(jn.conv2d(x, w1), 2), w2), 2)


def _lenet_bwd_jitnet(x, w1, w2):
    import jitnet as jn

    return jn.value_and_grad(lambda w1, w2: jn.sum(_lenet_jitnet(x, w1, w2)), argnums=(0, 1))(w1, w2)


def _lenet_ref_parts(inp):
    """float64 forward values and the weights' gradients of sum(output), from the op table's references."""
    x, w1, w2 = (inp[k].astype(np.float64) for k in ("x", "w1", "w2"))
    y1 = OPS["conv2d"].ref(x, w1, stride=S1, padding=P)
    p1 = OPS["max_pool2d"].ref(y1, **POOL)
    y2 = OPS["conv2d"].ref(p1, w2, stride=S1, padding=P)
    p2 = OPS["max_pool2d"].ref(y2, **POOL)
    g_y2 = OPS["max_pool2d_vjp"].ref(y2, np.ones_like(p2), **POOL, in_shape=y2.shape)
    gw2 = OPS["conv2d_weight_grad"].ref(p1, g_y2, stride=S1, padding=P, w_shape=w2.shape)
    g_p1 = OPS["conv2d_input_grad"].ref(g_y2, w2, stride=S1, padding=P, in_shape=p1.shape)
    g_y1 = OPS["max_pool2d_vjp"].ref(y1, g_p1, **POOL, in_shape=y1.shape)
    gw1 = OPS["conv2d_weight_grad"].ref(x, g_y1, stride=S1, padding=P, w_shape=w1.shape)
    return p2, (np.asarray(p2.sum()), (gw1, gw2))


def _conv_flops(x_shape, w_shape):
    n, _, h, w = x_shape
    o, c, kh, kw = w_shape
    return 2.0 * n * o * (h - kh + 1) * (w - kw + 1) * c * kh * kw


def _lenet_flops(inp, backward: bool):
    n = inp["x"].shape[0]
    c1 = _conv_flops(inp["x"].shape, inp["w1"].shape)
    c2 = _conv_flops((n, 20, 12, 12), inp["w2"].shape)
    pools = n * 20 * 24 * 24 + n * 50 * 8 * 8  # one comparison per window element
    # backward: conv2's input and weight gradients, conv1's weight gradient, both pools' routing
    return c1 + c2 + pools + ((c2 + c2 + c1 + pools) if backward else 0.0)


def _lenet_bytes(inp, backward: bool):
    n = inp["x"].shape[0]
    ins = sum(v.nbytes for v in inp.values())
    return ins + (4.0 + inp["w1"].nbytes + inp["w2"].nbytes if backward else n * 50 * 4 * 4 * 4.0)


# numpy peer: im2col through sliding_window_view + tensordot (BLAS), pools by reshape.


def _np_windows(x, k):
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=(2, 3))  # (N, C, Ho, Wo, kh, kw)


def _np_conv(x, w):
    return np.tensordot(_np_windows(x, w.shape[2:]), w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)


def _np_pool_windows(y):
    n, c, h, w = y.shape
    return y.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


def _np_pool_vjp(y, g):
    """Each window's gradient to its first maximum (argmax takes the first)."""
    n, c, h, w = y.shape
    at = _np_pool_windows(y).argmax(axis=-1)
    gw = np.zeros((n, c, h // 2, w // 2, 4), y.dtype)
    np.put_along_axis(gw, at[..., None], g[..., None], axis=-1)
    return gw.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _np_weight_grad(x, g, k):
    return np.tensordot(g, _np_windows(x, k), axes=((0, 2, 3), (0, 2, 3)))


def _np_input_grad(g, w, x_shape):
    gcol = np.tensordot(g, w, axes=(1, 0))  # (N, Ho, Wo, C, kh, kw)
    gx = np.zeros(x_shape, g.dtype)
    ho, wo = g.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            gx[:, :, i : i + ho, j : j + wo] += gcol[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return gx


def _lenet_numpy(inp):
    x, w1, w2 = inp["x"], inp["w1"], inp["w2"]
    return lambda: _np_pool_windows(_np_conv(_np_pool_windows(_np_conv(x, w1)).max(-1), w2)).max(-1)


def _lenet_bwd_numpy(inp):
    x, w1, w2 = inp["x"], inp["w1"], inp["w2"]

    def run():
        y1 = _np_conv(x, w1)
        p1 = _np_pool_windows(y1).max(-1)
        y2 = _np_conv(p1, w2)
        p2 = _np_pool_windows(y2).max(-1)
        g_y2 = _np_pool_vjp(y2, np.ones_like(p2))
        gw2 = _np_weight_grad(p1, g_y2, w2.shape[2:])
        g_y1 = _np_pool_vjp(y1, _np_input_grad(g_y2, w2, p1.shape))
        return p2.sum(dtype=np.float64), (_np_weight_grad(x, g_y1, w1.shape[2:]), gw2)

    return run


def _lenet_torch(inp):
    torch = peers.torch()
    F = torch.nn.functional
    x, w1, w2 = (torch.from_numpy(inp[k]) for k in ("x", "w1", "w2"))

    def run():
        with torch.no_grad():
            return F.max_pool2d(F.conv2d(F.max_pool2d(F.conv2d(x, w1), 2), w2), 2)

    return run


def _lenet_bwd_torch(inp):
    torch = peers.torch()
    F = torch.nn.functional
    x = torch.from_numpy(inp["x"])

    def run():
        w1 = torch.from_numpy(inp["w1"]).requires_grad_(True)
        w2 = torch.from_numpy(inp["w2"]).requires_grad_(True)
        value = F.max_pool2d(F.conv2d(F.max_pool2d(F.conv2d(x, w1), 2), w2), 2).sum()
        value.backward()
        return value.detach(), (w1.grad, w2.grad)

    return run


_LENET = "LeNet convs, batch 64, float32: conv 1->20 5x5 on 28x28, maxpool 2, conv 20->50 5x5, maxpool 2"

register(
    Workload(
        name="conv_lenet",
        description=f"{_LENET}; forward",
        make_inputs=_lenet_inputs,
        flops=lambda inp: _lenet_flops(inp, False),
        bytes=lambda inp: _lenet_bytes(inp, False),
        reference=lambda inp: _lenet_ref_parts(inp)[0],
        jitnet_fn=_lenet_jitnet,
        tol=1e-6,
        error_kind="rel",
        max_samples=30,
        targets={"beats": ("torch",)},
        peers=[
            Impl("numpy", _lenet_numpy, note="im2col by sliding_window_view + tensordot (BLAS), pools by reshape"),
            Impl("torch", _lenet_torch, "torch", note="eager F.conv2d / F.max_pool2d under no_grad, 2 threads"),
        ],
    )
)

register(
    Workload(
        name="conv_lenet_bwd",
        description=f"{_LENET}; value_and_grad of the output's sum w.r.t. both weights",
        make_inputs=_lenet_inputs,
        flops=lambda inp: _lenet_flops(inp, True),
        bytes=lambda inp: _lenet_bytes(inp, True),
        reference=lambda inp: _lenet_ref_parts(inp)[1],
        jitnet_fn=_lenet_bwd_jitnet,
        tol=1e-6,
        error_kind="rel",
        max_samples=30,
        targets={"beats": ("torch",)},
        peers=[
            Impl("numpy", _lenet_bwd_numpy, note="by hand: tensordot im2col convs, argmax pool routing, col2im"),
            Impl("torch", _lenet_bwd_torch, "torch", note="eager autograd: sum().backward() w.r.t. w1, w2"),
        ],
    )
)
