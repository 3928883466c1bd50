"""Elementwise, reduction and softmax workloads and gradients: gelu_chain, softmax_rows, sum_squares,
call_overhead (launch_overhead on the GPU), gelu_fwd_bwd, softmax_xent_bwd; the first four also on the GPU.
numexpr's constants are float32: it upcasts a whole expression to float64 on a Python float."""

import importlib
from functools import partial

import numpy as np

import jitnet as jn
from bench.workload import F32, Impl, Workload, array_module, cupy, jitnet_impl, numexpr, rng, run_ufuncs, torch

GELU_C, GELU_K = 0.7978845608, 0.044715  # sqrt(2/pi) as written in the workload
ROW_MAX, ROW_SUM = partial(np.max, axis=1, keepdims=True), partial(np.sum, axis=1, keepdims=True)
# a hand-written numba.cuda peer of bench/gpu.py, imported only where it runs
_numba_kernel = lambda name: lambda inp: getattr(importlib.import_module("bench.gpu"), name)(inp["x"])


def _vector(quick: bool, gpu: bool = False) -> dict:
    log2 = (22 if quick else 26) if gpu else (20 if quick else 24)
    return {"x": rng().standard_normal(2**log2, dtype=F32)}


def _matrix(quick: bool, gpu: bool = False) -> dict:
    rows = (4096 if quick else 16384) if gpu else (1024 if quick else 4096)
    return {"x": rng().standard_normal((rows, 1024), dtype=F32)}


def inductor(make_fn, only: str | None = None) -> Impl:
    """torch.compile of the function make_fn() returns, fullgraph (a graph break is an error), called once."""

    def make(inp):
        import torch as real_torch

        g, args = real_torch.compile(make_fn(), fullgraph=True), list(inp.values())
        g(*args)
        return partial(g, *args)

    return Impl("torch.compile", make, "torch.compile", note="inductor, default mode", cold=True, only=only)


def gelu_of(x, tanh, c=GELU_C, k=GELU_K, half=0.5, one=1):
    """The tanh GELU in any array library, given its tanh (and for cupy float32 constants)."""
    return half * x * (one + tanh(c * (x + k * x * x * x)))


def gelu(x):
    return gelu_of(x, jn.tanh)


def _gelu_numpy(inp):
    x = inp["x"]
    out, t, c, k, mul = np.empty_like(x), np.empty_like(x), F32(GELU_C), F32(GELU_K), np.multiply
    steps = [(mul, x, x, t), (mul, t, x, t), (mul, t, k, t), (np.add, t, x, t), (mul, t, c, t), (np.tanh, t, t)]
    return partial(run_ufuncs, steps + [(np.add, t, F32(1), t), (mul, x, F32(0.5), out), (mul, out, t, out)])


def _gelu_numexpr(inp):
    local = {"x": inp["x"], "h": F32(0.5), "one": F32(1), "c": F32(GELU_C), "k": F32(GELU_K)}
    return partial(numexpr.evaluate, "h*x*(one+tanh(c*(x+k*x*x*x)))", local_dict=local, out=np.empty_like(inp["x"]))


def torch_gelu():  # torch.tanh resolved here: torch.compile traces the function it returns
    tanh = torch.tanh
    return lambda t: gelu_of(t, tanh)


_gelu_torch = lambda inp: partial(torch_gelu(), inp["x"])
_gelu_torch_F = lambda inp: partial(torch.nn.functional.gelu, inp["x"], approximate="tanh")


def _gelu_cupy(inp, fuse: bool = False):
    c, k, half, one = (F32(v) for v in (GELU_C, GELU_K, 0.5, 1))

    def g(x):
        return gelu_of(x, cupy.tanh, c, k, half, one)

    return partial(cupy.fuse()(g) if fuse else g, inp["x"])


GELU_CHAIN = Workload(
    "gelu_chain",
    "tanh GELU 0.5*x*(1+tanh(0.7978845608*(x+0.044715*x*x*x))) over a float32 vector",
    _vector,
    lambda inp: 9.0 * inp["x"].size,  # 6 mul, 2 add, 1 tanh
    lambda inp: gelu_of(inp["x"].astype(np.float64), np.tanh),
    [
        jitnet_impl(gelu),
        Impl("numpy", _gelu_numpy, "numpy", note="9 in-place ufuncs with out= into 2 preallocated buffers, x*x*x"),
        Impl("numexpr", _gelu_numexpr, "numexpr", note="ne.evaluate, float32 constants, out= preallocated"),
        Impl("numba.cuda", _numba_kernel("numba_gelu"), "numba", note="hand-written kernel, one element per thread"),
        Impl("torch", _gelu_torch, "torch", note="eager, the same expression (one kernel per op)"),
        Impl("torch.F.gelu", _gelu_torch_F, "torch", note="eager F.gelu(approximate='tanh'): one kernel"),
        inductor(torch_gelu),
        Impl("cupy", _gelu_cupy, "cupy", note="eager, the same expression"),
        Impl("cupy.fuse", partial(_gelu_cupy, fuse=True), "cupy", note="@cupy.fuse: one kernel"),
    ],
    targets={"floor_frac": 0.5, "beats": "all"},  # <= 2x np.copyto of the same bytes
    gpu={"make_inputs": partial(_vector, gpu=True), "targets": {"floor_frac": 0.85}},
)


def softmax_of(x, exp):  # the float64 reference's and cupy's
    e = exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_steps(x, y):
    """numpy's row softmax of x into y: in-place ufunc steps into preallocated buffers."""
    m, s = np.empty((x.shape[0], 1), F32), np.empty((x.shape[0], 1), F32)
    return [(ROW_MAX, x, m), (np.subtract, x, m, y), (np.exp, y, y), (ROW_SUM, y, s), (np.divide, y, s, y)]


_softmax_numpy = lambda inp: partial(run_ufuncs, _softmax_steps(inp["x"], np.empty_like(inp["x"])))


SOFTMAX_ROWS = Workload(
    "softmax_rows",
    "softmax over the last axis of a float32 matrix",
    _matrix,
    lambda inp: 5.0 * inp["x"].size,  # max, sub, exp, sum, div
    lambda inp: softmax_of(inp["x"].astype(np.float64), np.exp),
    [
        jitnet_impl(lambda x: jn.softmax(x, axis=-1)),
        Impl("numpy", _softmax_numpy, "numpy", note="max, subtract, exp, sum, divide with out= buffers"),
        Impl("torch", lambda inp: partial(torch.softmax, inp["x"], dim=-1), "torch", note="eager torch.softmax(x, -1)"),
        Impl("cupy", lambda inp: partial(softmax_of, inp["x"], cupy.exp), "cupy", note="eager max, sub, exp, sum, div"),
    ],
    targets={"floor_frac": 0.4, "beats": ("torch",)},
    gpu={"make_inputs": partial(_matrix, gpu=True), "targets": {"beats": ("torch",)}},
)


_dot = lambda inp: partial(array_module(inp["x"]).dot, inp["x"], inp["x"])
_square_sum = lambda inp: lambda x=inp["x"]: (x * x).sum()


def _plus1(inp):
    x = inp["x"]
    one = 1.0 if array_module(x).__name__ == "torch" else F32(1)
    return lambda: x + one


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
        inductor(lambda: lambda t: (t * t).sum(), only="cuda"),
        Impl("cupy", _square_sum, "cupy", note="eager (x*x).sum()"),
        Impl("cupy.dot", _dot, "cupy", note="cupy.dot(x, x): cuBLAS"),
    ],
    tol=1e-3,  # relative: float32 accumulation of 2**24 positive terms (BLAS sdot lands ~1e-4)
    error_kind="rel",
    gpu={"make_inputs": partial(_vector, gpu=True), "tol": 1e-4, "targets": {"floor_frac": 0.70}},
)
LAUNCH_OVERHEAD = "per-call time of x + 1.0 on 4 float32 on the GPU (one kernel): launch cost, not compute"
CALL_OVERHEAD = Workload(
    "call_overhead",
    "per-call time of x + 1.0 on 4 float32 (one kernel): dispatch cost, not compute",
    lambda quick: {"x": np.arange(4, dtype=F32)},
    lambda inp: float(inp["x"].size),
    lambda inp: inp["x"].astype(np.float64) + 1.0,
    [
        jitnet_impl(lambda x: x + 1.0),
        Impl("numpy", _plus1, "numpy", note="x + 1 (allocates its result, like jitnet)"),
        Impl("numba.cuda", _numba_kernel("numba_plus_one"), "numba", note="one raw kernel launch, preallocated output"),
        Impl("torch", _plus1, "torch", note="eager t + 1.0 (allocates its result, like jitnet)"),
        Impl("cupy", _plus1, "cupy", note="eager x + 1 (allocates its result)"),
    ],
    inner=50,  # 200 samples of 50 back-to-back calls = 10k calls
    max_samples=200,
    quick_samples=40,
    unit="us",
    targets={"max_us": 30.0},
    gpu=dict(name="launch_overhead", inner=1000, max_samples=40, quick_samples=10, description=LAUNCH_OVERHEAD),
)


def _gelu_fwd_bwd_ref(inp):
    x = inp["x"].astype(np.float64)
    t = np.tanh(GELU_C * (x + GELU_K * x**3))
    grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * x * x)
    return np.asarray(gelu_of(x, np.tanh).sum()), grad


def _gelu_fwd_bwd_numpy(inp):
    """By hand: one tanh pass shared by the value and the gradient, in-place ufuncs."""
    x = inp["x"]
    t, u, g = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    c, k, half, one, mul, add = F32(GELU_C), F32(GELU_K), F32(0.5), F32(1), np.multiply, np.add
    # u = x^2, t = tanh(c x (1 + k x^2)), g = x (1 + t): the value is 0.5 sum(g)
    value = [(mul, x, x, u), (mul, u, k, t), (add, t, one, t), (mul, t, x, t), (mul, t, c, t), (np.tanh, t, t)]
    value += [(add, t, one, g), (mul, g, x, g)]
    # u = c x (1 + 3k x^2), g = 0.5 (1 + t) + 0.5 (1 - t^2) u
    grad = [(mul, u, F32(3) * k, u), (add, u, one, u), (mul, u, c, u), (mul, u, x, u), (mul, t, t, g)]
    grad += [(np.subtract, one, g, g), (mul, g, u, g), (add, g, one, g), (add, g, t, g), (mul, g, half, g)]
    return lambda: (np.float32(half * run_ufuncs(value).sum(dtype=np.float64)), run_ufuncs(grad))


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


def _xent_inputs(quick):
    g, (m, n) = rng(), (1024, 1024) if quick else (4096, 1024)
    onehot = np.zeros((m, n), F32)
    onehot[np.arange(m), g.integers(0, n, m)] = 1
    return {"logits": g.standard_normal((m, n), dtype=F32), "onehot": onehot}


def _xent_ref(inp):
    z, y = inp["logits"].astype(np.float64), inp["onehot"].astype(np.float64)
    p = softmax_of(z, np.exp)
    return np.asarray(-np.mean(np.sum(np.log(p) * y, axis=1))), (p - y) / z.shape[0]


def _xent_numpy(inp):
    """By hand: softmax with out= buffers, the loss from the labels' entries, grad = (p - y) / M."""
    z, y = inp["logits"], inp["onehot"]
    m = z.shape[0]
    p, rows, labels = np.empty_like(z), np.arange(m), y.argmax(axis=1)
    softmax = _softmax_steps(z, p)
    grad = [(np.subtract, p, y, p), (np.multiply, p, F32(1.0 / m), p)]
    return lambda: (np.float32(-np.log(run_ufuncs(softmax)[rows, labels]).mean()), run_ufuncs(grad))


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
        jitnet_impl(lambda z, y: jn.value_and_grad(lambda z: -jn.mean(jn.sum(jn.log_softmax(z, axis=-1) * y, -1)))(z)),
        Impl("numpy", _xent_numpy, "numpy", note="by hand: softmax with out= buffers, grad = (p - y) / M"),
        Impl("torch", _xent_torch, "torch", note="eager F.cross_entropy(z, labels).backward()"),
    ],
    bytes=lambda inp: 3.0 * inp["logits"].nbytes,  # read logits and one-hot, write the gradient
    tol=1e-5,
    targets={"beats": ("torch",)},
)

WORKLOADS = [GELU_CHAIN, SOFTMAX_ROWS, SUM_SQUARES, CALL_OVERHEAD, GELU_FWD_BWD, SOFTMAX_XENT_BWD]
