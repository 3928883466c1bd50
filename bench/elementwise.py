"""Elementwise, reduction and softmax workloads and gradients: gelu_chain, softmax_rows, sum_squares,
call_overhead (launch_overhead on the GPU), gelu_fwd_bwd, softmax_xent_bwd; the first four also on the GPU.

Peers are written at their fastest honest form: numpy with preallocated outputs and in-place ufuncs
(out=), x*x*x not x**3, np.dot for a sum of squares; numexpr with out= and float32 constants
(numexpr upcasts a whole expression to float64 on a Python float).
"""

from __future__ import annotations

from functools import partial

import numpy as np

import jitnet as jn
from bench.workload import F32, Impl, Workload, array_module, cupy, jitnet_impl, numexpr, rng, torch

GELU_C, GELU_K = 0.7978845608, 0.044715  # sqrt(2/pi) as written in the workload


def _vector(quick: bool, gpu: bool = False) -> dict:
    log2 = (22 if quick else 26) if gpu else (20 if quick else 24)
    return {"x": rng().standard_normal(2**log2, dtype=F32)}


def _matrix(quick: bool, gpu: bool = False) -> dict:
    rows = (4096 if quick else 16384) if gpu else (1024 if quick else 4096)
    return {"x": rng().standard_normal((rows, 1024), dtype=F32)}


def inductor(make, only: str | None = None) -> Impl:
    return Impl("torch.compile", make, "torch.compile", note="inductor, default mode", cold=True, only=only)


def _compiled(make_fn):
    """torch.compile of the function make_fn() returns, fullgraph (a graph break is an error), called once."""

    def make(inp):
        import torch as real_torch

        g, args = real_torch.compile(make_fn(), fullgraph=True), list(inp.values())
        g(*args)
        return partial(g, *args)

    return make


def _numba_kernel(name: str):
    def make(inp):
        from bench import gpu

        return getattr(gpu, name)(inp["x"])

    return make


# ---- gelu_chain -----------------------------------------------------------------------------------


def gelu(x):
    return 0.5 * x * (1 + jn.tanh(GELU_C * (x + GELU_K * x * x * x)))


def _gelu_ref(inp):
    x = inp["x"].astype(np.float64)
    return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_K * x * x * x)))


def _gelu_numpy(inp):
    x = inp["x"]
    out, t, c, k = np.empty_like(x), np.empty_like(x), F32(GELU_C), F32(GELU_K)

    def run():
        np.multiply(x, x, out=t)
        np.multiply(t, x, out=t)
        np.multiply(t, k, out=t)
        np.add(t, x, out=t)
        np.multiply(t, c, out=t)
        np.tanh(t, out=t)
        np.add(t, F32(1), out=t)
        np.multiply(x, F32(0.5), out=out)
        return np.multiply(out, t, out=out)

    return run


def _gelu_numexpr(inp):
    local = {"x": inp["x"], "h": F32(0.5), "one": F32(1), "c": F32(GELU_C), "k": F32(GELU_K)}
    return partial(numexpr.evaluate, "h*x*(one+tanh(c*(x+k*x*x*x)))", local_dict=local, out=np.empty_like(inp["x"]))


def torch_gelu():
    import torch as real_torch

    return lambda t: 0.5 * t * (1 + real_torch.tanh(GELU_C * (t + GELU_K * t * t * t)))


def _gelu_cupy(inp, fuse: bool = False):
    c, k, h, one, tanh = F32(GELU_C), F32(GELU_K), F32(0.5), F32(1), cupy.tanh

    def g(x):
        return h * x * (one + tanh(c * (x + k * x * x * x)))

    return partial(cupy.fuse()(g) if fuse else g, inp["x"])


GELU_CHAIN = Workload(
    "gelu_chain",
    "tanh GELU 0.5*x*(1+tanh(0.7978845608*(x+0.044715*x*x*x))) over a float32 vector",
    _vector,
    lambda inp: 9.0 * inp["x"].size,  # 6 mul, 2 add, 1 tanh
    _gelu_ref,
    [
        jitnet_impl(gelu),
        Impl("numpy", _gelu_numpy, "numpy", note="9 in-place ufuncs with out= into 2 preallocated buffers, x*x*x"),
        Impl("numexpr", _gelu_numexpr, "numexpr", note="ne.evaluate, float32 constants, out= preallocated"),
        Impl("numba.cuda", _numba_kernel("gelu"), "numba", note="hand-written kernel, one element per thread"),
        Impl(
            "torch",
            lambda inp: partial(torch_gelu(), inp["x"]),
            "torch",
            note="eager, the same expression (one kernel per op)",
        ),
        Impl(
            "torch.F.gelu",
            lambda inp: partial(torch.nn.functional.gelu, inp["x"], approximate="tanh"),
            "torch",
            note="eager F.gelu(approximate='tanh'): one kernel",
        ),
        inductor(_compiled(torch_gelu)),
        Impl("cupy", _gelu_cupy, "cupy", note="eager, the same expression"),
        Impl("cupy.fuse", partial(_gelu_cupy, fuse=True), "cupy", note="@cupy.fuse: one kernel"),
    ],
    targets={"floor_frac": 0.5, "beats": "all"},  # <= 2x np.copyto of the same bytes
    gpu={"make_inputs": partial(_vector, gpu=True), "targets": {"floor_frac": 0.85}},
)

# ---- softmax_rows ---------------------------------------------------------------------------------


def _softmax_ref(inp):
    x = inp["x"].astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_numpy(inp):
    x = inp["x"]
    out, m, s = np.empty_like(x), np.empty((x.shape[0], 1), F32), np.empty((x.shape[0], 1), F32)

    def run():
        np.max(x, axis=1, keepdims=True, out=m)
        np.subtract(x, m, out=out)
        np.exp(out, out=out)
        np.sum(out, axis=1, keepdims=True, out=s)
        return np.divide(out, s, out=out)

    return run


def _softmax_cupy(inp):
    def run(x=inp["x"], exp=cupy.exp):
        e = exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return run


SOFTMAX_ROWS = Workload(
    "softmax_rows",
    "softmax over the last axis of a float32 matrix",
    _matrix,
    lambda inp: 5.0 * inp["x"].size,  # max, sub, exp, sum, div
    _softmax_ref,
    [
        jitnet_impl(lambda x: jn.softmax(x, axis=-1)),
        Impl("numpy", _softmax_numpy, "numpy", note="max, subtract, exp, sum, divide with out= buffers"),
        Impl("torch", lambda inp: partial(torch.softmax, inp["x"], dim=-1), "torch", note="eager torch.softmax(x, -1)"),
        Impl("cupy", _softmax_cupy, "cupy", note="eager max, subtract, exp, sum, divide"),
    ],
    targets={"floor_frac": 0.4, "beats": ("torch",)},
    gpu={"make_inputs": partial(_matrix, gpu=True), "targets": {"beats": ("torch",)}},
)

# ---- sum_squares ----------------------------------------------------------------------------------


def _dot(inp):  # np.dot, torch.dot and cupy.dot alike
    return partial(array_module(inp["x"]).dot, inp["x"], inp["x"])


def _square_sum(inp):  # torch and cupy alike
    return lambda x=inp["x"]: (x * x).sum()


SUM_SQUARES = Workload(
    "sum_squares",
    "sum(x*x) over a float32 vector",
    _vector,
    lambda inp: 2.0 * inp["x"].size,
    lambda inp: np.asarray(np.dot(inp["x"].astype(np.float64), inp["x"].astype(np.float64))),
    [
        jitnet_impl(lambda x: jn.sum(x * x)),
        Impl("numpy", _dot, "numpy", note="np.dot(x, x): BLAS sdot, the fastest numpy form (einsum is slower)"),
        Impl("torch", _square_sum, "torch", note="eager (x*x).sum()"),
        Impl("torch.dot", _dot, "torch", note="eager torch.dot(x, x)"),
        inductor(_compiled(lambda: lambda t: (t * t).sum()), only="cuda"),
        Impl("cupy", _square_sum, "cupy", note="eager (x*x).sum()"),
        Impl("cupy.dot", _dot, "cupy", note="cupy.dot(x, x): cuBLAS"),
    ],
    tol=1e-3,  # relative: float32 accumulation of 2**24 positive terms (BLAS sdot lands ~1e-4)
    error_kind="rel",
    gpu={"make_inputs": partial(_vector, gpu=True), "tol": 1e-4, "targets": {"floor_frac": 0.70}},
)

# ---- call_overhead --------------------------------------------------------------------------------


def _plus1(inp):  # numpy, torch and cupy alike
    x = inp["x"]
    one = 1.0 if array_module(x).__name__ == "torch" else F32(1)
    return lambda: x + one


CALL_OVERHEAD = Workload(
    "call_overhead",
    "per-call time of x + 1.0 on 4 float32 (one kernel): dispatch cost, not compute",
    lambda quick: {"x": np.arange(4, dtype=F32)},
    lambda inp: float(inp["x"].size),
    lambda inp: inp["x"].astype(np.float64) + 1.0,
    [
        jitnet_impl(lambda x: x + 1.0),
        Impl("numpy", _plus1, "numpy", note="x + 1 (allocates its result, like jitnet)"),
        Impl("numba.cuda", _numba_kernel("plus_one"), "numba", note="one raw kernel launch, preallocated output"),
        Impl("torch", _plus1, "torch", note="eager t + 1.0 (allocates its result, like jitnet)"),
        Impl("cupy", _plus1, "cupy", note="eager x + 1 (allocates its result)"),
    ],
    inner=50,  # 200 samples of 50 back-to-back calls = 10k calls
    max_samples=200,
    quick_samples=40,
    unit="us",
    targets={"max_us": 30.0},
    gpu={
        "name": "launch_overhead",
        "description": "per-call time of x + 1.0 on 4 float32 on the GPU (one kernel): launch cost, not compute",
        "inner": 1000,
        "max_samples": 40,
        "quick_samples": 10,
    },
)

# ---- gelu_fwd_bwd ---------------------------------------------------------------------------------


def _gelu_fwd_bwd_ref(inp):
    x = inp["x"].astype(np.float64)
    t = np.tanh(GELU_C * (x + GELU_K * x**3))
    return np.asarray(_gelu_ref(inp).sum()), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * x * x)


def _gelu_fwd_bwd_numpy(inp):
    """By hand: one tanh pass shared by the value and the gradient, in-place ufuncs."""
    x = inp["x"]
    t, u, g = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    c, k, half, one = F32(GELU_C), F32(GELU_K), F32(0.5), F32(1)

    def run():
        np.multiply(x, x, out=u)  # u = x^2
        np.multiply(u, k, out=t)
        np.add(t, one, out=t)
        np.multiply(t, x, out=t)
        np.multiply(t, c, out=t)
        np.tanh(t, out=t)  # t = tanh(c (x + k x^3))
        np.add(t, one, out=g)
        np.multiply(g, x, out=g)
        value = half * g.sum(dtype=np.float64)  # sum 0.5 x (1 + t)
        np.multiply(u, F32(3) * k, out=u)
        np.add(u, one, out=u)
        np.multiply(u, c, out=u)
        np.multiply(u, x, out=u)  # u = c x (1 + 3k x^2)
        np.multiply(t, t, out=g)
        np.subtract(one, g, out=g)
        np.multiply(g, u, out=g)
        np.add(g, one, out=g)
        np.add(g, t, out=g)
        np.multiply(g, half, out=g)  # 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3k x^2)
        return np.float32(value), g

    return run


def torch_backward(loss, x):
    """Eager autograd, each call: (loss(x), dloss/dx) of a fresh leaf on x's memory."""

    def run():
        leaf = x.detach().requires_grad_(True)
        value = loss(leaf)
        value.backward()
        return value.detach(), leaf.grad

    return run


def _gelu_fwd_bwd_torch(inp):
    g = torch_gelu()
    return torch_backward(lambda x: g(x).sum(), inp["x"])


GELU_FWD_BWD = Workload(
    "gelu_fwd_bwd",
    "value_and_grad of sum(tanh GELU(x)) over a float32 vector: the value and dL/dx",
    _vector,
    lambda inp: 30.0 * inp["x"].size,  # forward 9 + sum 1 + backward ~20
    _gelu_fwd_bwd_ref,
    [
        jitnet_impl(lambda x: jn.value_and_grad(lambda x: jn.sum(gelu(x)))(x)),
        Impl("numpy", _gelu_fwd_bwd_numpy, "numpy", note="by hand: one tanh pass for both, 19 in-place ufuncs"),
        Impl("torch", _gelu_fwd_bwd_torch, "torch", note="eager autograd: gelu(x).sum().backward()"),
    ],
    bytes=lambda inp: 2.0 * inp["x"].nbytes,  # read x, write the gradient
    tol=1e-3,  # relative: the value sums 2**24 terms in float32 arithmetic
    error_kind="rel",
    targets={"floor_frac": 0.5, "beats": ("torch",)},
)

# ---- softmax_xent_bwd -----------------------------------------------------------------------------


def xent_fwd_bwd(logits, onehot):
    return jn.value_and_grad(lambda z: -jn.mean(jn.sum(jn.log_softmax(z, axis=-1) * onehot, axis=-1)))(logits)


def _xent_inputs(quick):
    g, (m, n) = rng(), (1024, 1024) if quick else (4096, 1024)
    onehot = np.zeros((m, n), F32)
    onehot[np.arange(m), g.integers(0, n, m)] = 1
    return {"logits": g.standard_normal((m, n), dtype=F32), "onehot": onehot}


def _xent_ref(inp):
    z, y = inp["logits"].astype(np.float64), inp["onehot"].astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.asarray(-np.mean(np.sum(np.log(p) * y, axis=1))), (p - y) / z.shape[0]


def _xent_numpy(inp):
    """By hand: softmax with out= buffers, the loss from the labels' entries, grad = (p - y) / M."""
    z, y = inp["logits"], inp["onehot"]
    m = z.shape[0]
    rows, labels = np.arange(m), y.argmax(axis=1)
    p, mx, s = np.empty_like(z), np.empty((m, 1), F32), np.empty((m, 1), F32)

    def run():
        np.max(z, axis=1, keepdims=True, out=mx)
        np.subtract(z, mx, out=p)
        np.exp(p, out=p)
        np.sum(p, axis=1, keepdims=True, out=s)
        np.divide(p, s, out=p)
        loss = -np.log(p[rows, labels]).mean()
        np.subtract(p, y, out=p)
        np.multiply(p, F32(1.0 / m), out=p)
        return np.float32(loss), p

    return run


def _xent_torch(inp):
    labels, cross_entropy = inp["onehot"].argmax(dim=1), torch.nn.functional.cross_entropy
    return torch_backward(lambda z: cross_entropy(z, labels), inp["logits"])


SOFTMAX_XENT_BWD = Workload(
    "softmax_xent_bwd",
    "cross-entropy of float32 logits against one-hot labels and its gradient",
    _xent_inputs,
    lambda inp: 10.0 * inp["logits"].size,
    _xent_ref,
    [
        jitnet_impl(xent_fwd_bwd),
        Impl("numpy", _xent_numpy, "numpy", note="by hand: softmax with out= buffers, grad = (p - y) / M"),
        Impl("torch", _xent_torch, "torch", note="eager F.cross_entropy(z, labels).backward()"),
    ],
    bytes=lambda inp: 3.0 * inp["logits"].nbytes,  # read logits and one-hot, write the gradient
    tol=1e-5,
    targets={"beats": ("torch",)},
)

WORKLOADS = [GELU_CHAIN, SOFTMAX_ROWS, SUM_SQUARES, CALL_OVERHEAD, GELU_FWD_BWD, SOFTMAX_XENT_BWD]
