"""The workload registry.

A workload is its inputs (fixed seed), its FLOP and minimum-byte counts, a float64 numpy reference
with a tolerance, the function jitnet compiles, and its peer implementations. Adding one is a
`register(Workload(...))` call; every implementation (jitnet or peer) is timed, checked and
reported the same way by `python -m bench`.

Counting conventions: every arithmetic op, comparison, or transcendental (tanh, exp) on one element
is 1 FLOP; a reduction over n elements is n FLOPs. Minimum bytes = every input read once plus every
output written once, at its dtype's size (what a perfectly fused kernel must move).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import peers

F32 = np.float32


@dataclass
class Impl:
    name: str  # row label: "jitnet", "numpy", "numexpr", "torch", "torch.compile", ...
    make: Callable[[dict], Callable[[], Any]]  # inputs -> zero-argument callable (the timed call)
    requires: str | None = None  # peer module the row needs ("numexpr", "torch", "torch.compile")
    note: str = ""  # how the peer is written, shown under the table
    probe_s: float | None = None  # try it in a child process first, with this time limit (s)
    in_quick: bool = True  # False: skipped by --quick (say, a cold compile that takes too long)


@dataclass
class Workload:
    name: str
    description: str
    make_inputs: Callable[[bool], dict]  # quick -> {name: float32 array}, in argument order
    flops: Callable[[dict], float]
    bytes: Callable[[dict], float]  # minimum bytes moved
    reference: Callable[[dict], np.ndarray]  # float64
    jitnet_fn: Callable  # jn.compile(jitnet_fn)(*inputs.values())
    peers: list[Impl] = field(default_factory=list)
    tol: float = 1e-6  # a row whose error exceeds this is a FAIL
    error_kind: str = "abs"  # "abs": max |y - ref|; "rel": max |y - ref| / max |ref|
    inner: int = 1  # calls per timing sample
    max_samples: int = 40  # samples per implementation (fewer if the time budget runs out)
    quick_samples: int = 10
    unit: str = "ms"  # how the table shows its times ("us" for overhead workloads)
    # Goals checked and printed after the table (none is an error): "floor_frac": jitnet's
    # fraction of the memory floor at least this; "beats": jitnet faster than these peers ("all" =
    # every peer row); "max_us": jitnet's median per call at most this many microseconds.
    targets: dict = field(default_factory=dict)

    @property
    def impls(self) -> list[Impl]:
        return [Impl("jitnet", _jitnet_maker(self.jitnet_fn), note="jn.compile")] + self.peers

    def impl(self, name: str) -> Impl:
        for i in self.impls:
            if i.name == name:
                return i
        raise KeyError(f"workload {self.name!r} has no implementation {name!r}")


REGISTRY: dict[str, Workload] = {}


def register(w: Workload) -> Workload:
    REGISTRY[w.name] = w
    return w


def _jitnet_maker(fn: Callable) -> Callable[[dict], Callable[[], Any]]:
    def make(inputs: dict):
        import jitnet as jn

        f = jn.compile(fn)
        args = tuple(inputs.values())
        t0 = time.perf_counter()
        f(*args)  # traces and compiles
        compile_s = time.perf_counter() - t0
        kernels = f.lower(*args).schedule.kernels

        def run():
            return f(*args)

        run.info = {"compile_s": compile_s, "kernels": len(kernels), "kernel_kinds": [k.kind for k in kernels]}
        run.after = lambda: {"traces": f.traces}  # 1 = no re-trace during timing
        return run

    return make


def _rng():
    return np.random.default_rng(0)


# ---- gelu_chain -----------------------------------------------------------------------------------

GELU_C = 0.7978845608  # sqrt(2/pi) as written in the workload
GELU_K = 0.044715


def _gelu_jitnet(x):
    import jitnet as jn

    return 0.5 * x * (1 + jn.tanh(GELU_C * (x + GELU_K * x * x * x)))


def _gelu_ref(inp):
    x = inp["x"].astype(np.float64)
    return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_K * x * x * x)))


def _gelu_numpy(inp):
    x = inp["x"]
    out, t = np.empty_like(x), np.empty_like(x)
    c, k = F32(GELU_C), F32(GELU_K)

    def run():
        np.multiply(x, x, out=t)
        np.multiply(t, x, out=t)
        np.multiply(t, k, out=t)
        np.add(t, x, out=t)
        np.multiply(t, c, out=t)
        np.tanh(t, out=t)
        np.add(t, F32(1), out=t)
        np.multiply(x, F32(0.5), out=out)
        np.multiply(out, t, out=out)
        return out

    return run


def _gelu_numexpr(inp):
    ne = peers.numexpr()
    x = inp["x"]
    out = np.empty_like(x)
    # float32 constants: numexpr would upcast the whole expression to float64 on Python floats
    local = {"x": x, "h": F32(0.5), "one": F32(1), "c": F32(GELU_C), "k": F32(GELU_K)}

    def run():
        ne.evaluate("h*x*(one+tanh(c*(x+k*x*x*x)))", local_dict=local, out=out)
        return out

    return run


def _torch_gelu(torch):
    def gelu(t):
        return 0.5 * t * (1 + torch.tanh(GELU_C * (t + GELU_K * t * t * t)))

    return gelu


def _gelu_torch(inp):
    torch = peers.torch()
    t, g = torch.from_numpy(inp["x"]), _torch_gelu(torch)
    return lambda: g(t)


def _gelu_torch_F(inp):
    torch = peers.torch()
    t = torch.from_numpy(inp["x"])
    return lambda: torch.nn.functional.gelu(t, approximate="tanh")


def _gelu_torch_compile(inp):
    torch = peers.torch()
    t = torch.from_numpy(inp["x"])
    g = torch.compile(_torch_gelu(torch), fullgraph=True)  # fullgraph: a graph break is an error
    g(t)
    return lambda: g(t)


register(
    Workload(
        name="gelu_chain",
        description="tanh GELU 0.5*x*(1+tanh(0.7978845608*(x+0.044715*x*x*x))) over a float32 vector",
        make_inputs=lambda quick: {"x": _rng().standard_normal(2**20 if quick else 2**24, dtype=F32)},
        flops=lambda inp: 9.0 * inp["x"].size,  # 6 mul, 2 add, 1 tanh
        bytes=lambda inp: 2.0 * inp["x"].nbytes,
        reference=_gelu_ref,
        jitnet_fn=_gelu_jitnet,
        tol=1e-6,
        targets={"floor_frac": 0.5, "beats": "all"},  # <= 2x np.copyto of the same bytes
        peers=[
            Impl("numpy", _gelu_numpy, note="9 in-place ufuncs with out= into 2 preallocated buffers, x*x*x"),
            Impl("numexpr", _gelu_numexpr, "numexpr", note="ne.evaluate, float32 constants, out= preallocated"),
            Impl("torch", _gelu_torch, "torch", note="eager, the same expression"),
            Impl("torch.F.gelu", _gelu_torch_F, "torch", note="eager F.gelu(approximate='tanh'): one ATen kernel"),
            Impl(
                "torch.compile",
                _gelu_torch_compile,
                "torch.compile",
                note="inductor, default mode",
                probe_s=60,
                in_quick=False,
            ),
        ],
    )
)


# ---- softmax_rows ---------------------------------------------------------------------------------


def _softmax_jitnet(x):
    import jitnet as jn

    return jn.softmax(x, axis=-1)


def _softmax_ref(inp):
    x = inp["x"].astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_numpy(inp):
    x = inp["x"]
    out = np.empty_like(x)
    m = np.empty((x.shape[0], 1), F32)
    s = np.empty((x.shape[0], 1), F32)

    def run():
        np.max(x, axis=1, keepdims=True, out=m)
        np.subtract(x, m, out=out)
        np.exp(out, out=out)
        np.sum(out, axis=1, keepdims=True, out=s)
        np.divide(out, s, out=out)
        return out

    return run


def _softmax_torch(inp):
    torch = peers.torch()
    t = torch.from_numpy(inp["x"])
    return lambda: torch.softmax(t, dim=-1)


register(
    Workload(
        name="softmax_rows",
        description="softmax over the last axis of a float32 matrix",
        make_inputs=lambda quick: {"x": _rng().standard_normal((1024, 1024) if quick else (4096, 1024), dtype=F32)},
        flops=lambda inp: 5.0 * inp["x"].size,  # max, sub, exp, sum, div
        bytes=lambda inp: 2.0 * inp["x"].nbytes,  # 8*M*N
        reference=_softmax_ref,
        jitnet_fn=_softmax_jitnet,
        tol=1e-6,
        targets={"floor_frac": 0.4, "beats": ("torch",)},
        peers=[
            Impl("numpy", _softmax_numpy, note="max, subtract, exp, sum, divide with out= buffers"),
            Impl("torch", _softmax_torch, "torch", note="eager torch.softmax(x, dim=-1)"),
        ],
    )
)


# ---- sum_squares ----------------------------------------------------------------------------------


def _sumsq_jitnet(x):
    import jitnet as jn

    return jn.sum(x * x)


def _sumsq_ref(inp):
    x = inp["x"].astype(np.float64)
    return np.asarray(np.dot(x, x))


def _sumsq_numpy(inp):
    x = inp["x"]
    return lambda: np.dot(x, x)


def _sumsq_torch(inp):
    t = peers.torch().from_numpy(inp["x"])
    return lambda: (t * t).sum()


def _sumsq_torch_dot(inp):
    torch = peers.torch()
    t = torch.from_numpy(inp["x"])
    return lambda: torch.dot(t, t)


register(
    Workload(
        name="sum_squares",
        description="sum(x*x) over a float32 vector",
        make_inputs=lambda quick: {"x": _rng().standard_normal(2**20 if quick else 2**24, dtype=F32)},
        flops=lambda inp: 2.0 * inp["x"].size,
        bytes=lambda inp: inp["x"].nbytes + 4.0,
        reference=_sumsq_ref,
        jitnet_fn=_sumsq_jitnet,
        tol=1e-3,  # relative: float32 accumulation of 2**24 positive terms (BLAS sdot lands ~1e-4)
        error_kind="rel",
        peers=[
            Impl("numpy", _sumsq_numpy, note="np.dot(x, x): BLAS sdot, the fastest numpy form (einsum is slower)"),
            Impl("torch", _sumsq_torch, "torch", note="eager (x*x).sum()"),
            Impl("torch.dot", _sumsq_torch_dot, "torch", note="eager torch.dot(x, x)"),
        ],
    )
)


# ---- call_overhead --------------------------------------------------------------------------------


def _plus1_jitnet(x):
    return x + 1.0


def _plus1_numpy(inp):
    x = inp["x"]
    return lambda: x + F32(1.0)


def _plus1_torch(inp):
    t = peers.torch().from_numpy(inp["x"])
    return lambda: t + 1.0


register(
    Workload(
        name="call_overhead",
        description="per-call time of x + 1.0 on 4 float32 (one kernel): dispatch cost, not compute",
        make_inputs=lambda quick: {"x": np.arange(4, dtype=F32)},
        flops=lambda inp: float(inp["x"].size),
        bytes=lambda inp: 2.0 * inp["x"].nbytes,
        reference=lambda inp: inp["x"].astype(np.float64) + 1.0,
        jitnet_fn=_plus1_jitnet,
        tol=1e-6,
        inner=50,  # 200 samples of 50 back-to-back calls = 10k calls
        max_samples=200,
        quick_samples=40,
        unit="us",
        targets={"max_us": 30.0},
        peers=[
            Impl("numpy", _plus1_numpy, note="x + 1 (allocates its result, like jitnet)"),
            Impl("torch", _plus1_torch, "torch", note="eager t + 1.0"),
        ],
    )
)


# ---- gelu_fwd_bwd ---------------------------------------------------------------------------------


def _gelu_fwd_bwd_jitnet(x):
    import jitnet as jn

    return jn.value_and_grad(lambda x: jn.sum(_gelu_jitnet(x)))(x)


def _gelu_grad64(x):
    u = GELU_C * (x + GELU_K * x**3)
    t = np.tanh(u)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * x * x)


def _gelu_fwd_bwd_ref(inp):
    x = inp["x"].astype(np.float64)
    return (np.asarray(_gelu_ref(inp).sum()), _gelu_grad64(x))


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


def _gelu_fwd_bwd_torch(inp):
    torch = peers.torch()
    gelu = _torch_gelu(torch)

    def run():
        t = torch.from_numpy(inp["x"]).requires_grad_(True)
        value = gelu(t).sum()
        value.backward()
        return value.detach(), t.grad

    return run


register(
    Workload(
        name="gelu_fwd_bwd",
        description="value_and_grad of sum(tanh GELU(x)) over a float32 vector: the value and dL/dx",
        make_inputs=lambda quick: {"x": _rng().standard_normal(2**20 if quick else 2**24, dtype=F32)},
        flops=lambda inp: 30.0 * inp["x"].size,  # forward 9 + sum 1 + backward ~20
        bytes=lambda inp: 2.0 * inp["x"].nbytes,  # read x, write the gradient
        reference=_gelu_fwd_bwd_ref,
        jitnet_fn=_gelu_fwd_bwd_jitnet,
        tol=1e-3,  # relative: the value sums 2**24 terms in float32 arithmetic
        error_kind="rel",
        targets={"floor_frac": 0.5, "beats": ("torch",)},
        peers=[
            Impl("numpy", _gelu_fwd_bwd_numpy, note="by hand: one tanh pass for both, 19 in-place ufuncs"),
            Impl("torch", _gelu_fwd_bwd_torch, "torch", note="eager autograd: gelu(x).sum().backward()"),
        ],
    )
)


# ---- softmax_xent_bwd -----------------------------------------------------------------------------


def _xent_jitnet(logits, onehot):
    import jitnet as jn

    def loss(z):
        return -jn.mean(jn.sum(jn.log_softmax(z, axis=-1) * onehot, axis=-1))

    return jn.value_and_grad(loss)(logits)


def _xent_inputs(quick):
    rng = _rng()
    m, n = (1024, 1024) if quick else (4096, 1024)
    labels = rng.integers(0, n, m)
    onehot = np.zeros((m, n), F32)
    onehot[np.arange(m), labels] = 1
    return {"logits": rng.standard_normal((m, n), dtype=F32), "onehot": onehot}


def _xent_ref(inp):
    z, y = inp["logits"].astype(np.float64), inp["onehot"].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(np.log(p) * y, axis=1))
    return (np.asarray(loss), (p - y) / z.shape[0])


def _xent_numpy(inp):
    """By hand: softmax with out= buffers, the loss from the labels' entries, grad = (p - y) / M."""
    z, y = inp["logits"], inp["onehot"]
    m = z.shape[0]
    labels = y.argmax(axis=1)
    rows = np.arange(m)
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
    torch = peers.torch()
    labels = torch.from_numpy(inp["onehot"].argmax(axis=1))

    def run():
        z = torch.from_numpy(inp["logits"]).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(z, labels)
        loss.backward()
        return loss.detach(), z.grad

    return run


register(
    Workload(
        name="softmax_xent_bwd",
        description="cross-entropy of float32 logits against one-hot labels and its gradient",
        make_inputs=_xent_inputs,
        flops=lambda inp: 10.0 * inp["logits"].size,
        bytes=lambda inp: 3.0 * inp["logits"].nbytes,  # read logits and one-hot, write the gradient
        reference=_xent_ref,
        jitnet_fn=_xent_jitnet,
        tol=1e-5,
        targets={"beats": ("torch",)},
        peers=[
            Impl("numpy", _xent_numpy, note="by hand: softmax with out= buffers, grad = (p - y) / M"),
            Impl("torch", _xent_torch, "torch", note="eager F.cross_entropy(z, labels).backward()"),
        ],
    )
)

from bench import kernels_nn  # noqa: E402, F401  (registers matmul, matmul_bias_relu, conv_lenet, conv_lenet_bwd)
from bench import training  # noqa: E402, F401  (registers mlp_train_step, lenet_train_step)
