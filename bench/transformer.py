"""Transformer workloads: gpt_train_step (one AdamW training step of examples/train_gpt.py's GPT: 4
layers, 4 heads, width 128, context 128, vocabulary 96; batch 16 x 128 tokens), layer_norm_fwd_bwd
(jn.layer_norm over 4096 x 1024 float32 with a weight and a bias: the output and the three gradients
of an upstream dy) and causal_attention_fwd_bwd (jn.scaled_dot_product_attention(causal=True) on
(16, 4, 128, 32) float32 q, k, v: the output and the three gradients of an upstream dO), each beside
torch eager and torch.compile (inductor, default mode: the forward compiled, its backward through
autograd, which AOTAutograd compiles too).

gpt_train_step is the example's own model (examples/train_gpt.py, imported from its file: the one
definition of it) trained as the example trains it (AdamW, weight decay 0.1, gradient norm clipped
to 1.0), with lr = 0 so that every timed call computes the same loss: the work is a real step's
(forward, backward, the clipping norm, both moments, the parameters rewritten), only the values stay
put. torch's row is the same model in torch.nn (the same attribute names: jitnet's state_dict loads
into it; MultiheadAttention(batch_first=True) called with a causal attn_mask and is_causal=True,
need_weights=False, which torch runs as scaled_dot_product_attention(is_causal=True)), trained by
torch.optim.AdamW and clip_grad_norm_. The reference is the float64 numpy forward of the initial
parameters (erf per element by math.erf): the loss every step returns. tokens/s = 2048 / time.

The three run by name, or all three as `--only transformer`, on the CPU and on the GPU (`groups`: not
in the default runs, which their cold compiles would take past ~3 minutes on the CPU); the GPT step's
goal on the GPU: at least torch eager."""

import functools
import importlib.util
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import jitnet as jn
from bench.workload import F32, Impl, Workload, jitnet_impl, rng, torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_gpt.py"


@functools.cache
def example():
    """examples/train_gpt.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("train_gpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 96
    context: int = 128
    width: int = 128
    heads: int = 4
    layers: int = 4
    batch: int = 16

    @property
    def tokens(self) -> int:
        return self.batch * self.context


def _params(cfg: GPTConfig) -> dict[str, np.ndarray]:
    """The example's initialisation from one fixed seed, shared by every row."""
    jn.manual_seed(0)
    model = example().GPT(cfg.vocab, cfg.context, cfg.width, cfg.heads, cfg.layers)
    return {k: np.array(v) for k, v in model.state_dict().items()}


def _gpt_inputs(cfg: GPTConfig, quick: bool) -> dict:
    """Random tokens and next-token targets (the step's work does not depend on the text)."""
    g, shape = rng(), (cfg.batch, cfg.context)
    return {"x": g.integers(0, cfg.vocab, shape), "y": g.integers(0, cfg.vocab, shape)}


def _jitnet_gpt_step(cfg: GPTConfig, inputs):
    """jn.nn.train_step of the example's GPT with its loss (next_token_loss), AdamW as the example
    builds it (lr 0), the parameters moved to the inputs' device before the optimizer is built."""
    gpt = example()
    x, y = jn.asarray(inputs["x"]), jn.asarray(inputs["y"])
    model = gpt.GPT(cfg.vocab, cfg.context, cfg.width, cfg.heads, cfg.layers)
    model.load_state_dict(_params(cfg))
    model.to(x.device.kind)
    optimizer = jn.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.1, clip_grad_norm=1.0)
    step = jn.nn.train_step(model, gpt.next_token_loss, optimizer)
    t0 = time.perf_counter()
    step(x, y).numpy()  # trace, compile and one step; reading the loss back waits for a GPU
    run = partial(step, x, y)
    kinds = [getattr(k.kind, "value", str(k.kind)) for k in step.lower(x, y).schedule.kernels]
    run.info = {"compile_s": time.perf_counter() - t0, "kernels": len(kinds), "kernel_kinds": kinds}
    run.after = lambda: {"traces": step._compiled.traces}
    return run


def torch_gpt(cfg: GPTConfig):
    """The example's GPT in torch.nn: the same layers under the same names (a jitnet state_dict loads)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
            self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width)
            )

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, is_causal=True, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(cfg.vocab, cfg.width), nn.Embedding(cfg.context, cfg.width)
            self.blocks = nn.Sequential(*[Block() for _ in range(cfg.layers)])
            self.ln, self.head = nn.LayerNorm(cfg.width), nn.Linear(cfg.width, cfg.vocab)
            mask = nn.Transformer.generate_square_subsequent_mask(cfg.context)  # -inf above the diagonal
            self.register_buffer("mask", mask, persistent=False)  # moves with .to(device), not in the state_dict

        def forward(self, tokens):
            t = tokens.shape[1]
            x = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
            for block in self.blocks:
                x = block(x, self.mask[:t, :t])
            return self.head(self.ln(x))

    return GPT()


def _torch_gpt_step(cfg: GPTConfig, inputs, compiled: bool = False):
    """torch's step on the inputs' device: zero_grad, forward, cross entropy, backward, clip_grad_norm_,
    AdamW step; with `compiled` the model is torch.compile(model) (compiled on a first step here)."""
    x, y = inputs["x"], inputs["y"]
    model = torch_gpt(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _params(cfg).items()})
    model.to(x.device)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.1)
    forward = torch.compile(model) if compiled else model
    cross_entropy, clip = torch.nn.functional.cross_entropy, torch.nn.utils.clip_grad_norm_

    def run():
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(forward(x).reshape(-1, cfg.vocab), y.reshape(-1))
        loss.backward()
        clip(params, 1.0)
        opt.step()
        return loss.detach()

    if compiled:
        run()  # dynamo traces, inductor compiles forward and backward
    return run


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _layer_norm(x, weight, bias, eps=1e-5):
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * weight + bias


def gpt_loss_reference(cfg: GPTConfig, inputs) -> np.ndarray:
    """float64 numpy forward of the initial parameters: the loss every step returns (lr = 0)."""
    from jitnet.ir.opdefs import OPS

    p, erf = {k: v.astype(np.float64) for k, v in _params(cfg).items()}, OPS["erf"].ref
    tokens, targets = inputs["x"], inputs["y"]
    (b, t), e, heads = tokens.shape, cfg.width, cfg.heads
    d = e // heads
    ln = lambda x, name: _layer_norm(x, p[f"{name}.weight"], p[f"{name}.bias"])
    linear = lambda x, name: x @ p[f"{name}.weight"].T + p[f"{name}.bias"]
    causal = np.tril(np.ones((t, t), bool))
    h = p["tok.weight"][tokens] + p["pos.weight"][:t]
    for i in range(cfg.layers):
        blk = f"blocks.{i}"
        qkv = ln(h, f"{blk}.ln1") @ p[f"{blk}.attn.in_proj_weight"].T + p[f"{blk}.attn.in_proj_bias"]
        q, k, v = (qkv[..., j * e : (j + 1) * e].reshape(b, t, heads, d).transpose(0, 2, 1, 3) for j in range(3))
        w = _softmax(np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -np.inf))
        h = h + linear((w @ v).transpose(0, 2, 1, 3).reshape(b, t, e), f"{blk}.attn.out_proj")
        m = linear(ln(h, f"{blk}.ln2"), f"{blk}.mlp.0")
        h = h + linear(0.5 * m * (1 + erf(m / math.sqrt(2))), f"{blk}.mlp.2")
    z = linear(ln(h, "ln"), "head").reshape(b * t, cfg.vocab)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return np.array(-logp[np.arange(b * t), targets.reshape(-1)].mean())


def gpt_macs_per_token(cfg: GPTConfig) -> int:
    """Multiply-adds per token of the forward: per layer the q/k/v and output projections (4 E^2), the
    MLP (8 E^2) and attention's q k^T and weights @ v over the full context (2 T E: the causal half
    that is masked is counted too); then the head (E V). The embeddings are gathers, not counted."""
    e = cfg.width
    return cfg.layers * (12 * e * e + 2 * cfg.context * e) + e * cfg.vocab


def gpt_workload(name: str, cfg: GPTConfig = GPTConfig()) -> Workload:
    what = f"{cfg.layers} layers, {cfg.heads} heads, width {cfg.width}, context {cfg.context}, vocabulary {cfg.vocab}"
    return Workload(
        name,
        f"one AdamW training step of examples/train_gpt.py's GPT ({what}), batch {cfg.batch} x {cfg.context} tokens "
        f"(tokens/s = {cfg.tokens} / time; the issue's goal on the CPU: >= 1.5x torch eager's tokens/s)",
        partial(_gpt_inputs, cfg),
        # forward, input gradient, weight gradient: 3 x 2 FLOPs per multiply-add
        lambda inputs: 3 * 2 * inputs["x"].size * gpt_macs_per_token(cfg),
        partial(gpt_loss_reference, cfg),
        [
            Impl("jitnet", partial(_jitnet_gpt_step, cfg), note="jn.nn.train_step: one program, in-place update"),
            Impl(
                "torch",
                partial(_torch_gpt_step, cfg),
                "torch",
                note="eager: zero_grad, forward, backward, clip_grad_norm_, AdamW step",
            ),
            Impl(
                "torch.compile",
                partial(_torch_gpt_step, cfg, compiled=True),
                "torch.compile",
                note="torch.compile(model), inductor default mode: compiled forward and backward, eager clip and AdamW",
                cold=True,
            ),
        ],
        # the tokens and targets; parameters and both AdamW moments, read and written (the activations
        # a backward needs are not counted)
        bytes=lambda inputs: inputs["x"].nbytes + inputs["y"].nbytes + 24 * sum(v.size for v in _params(cfg).values()),
        tol=1e-4,
        error_kind="rel",
        max_samples=30,
        quick_samples=5,
        targets={"beats": ("torch",)},
        gpu={"targets": {"beats": ("torch",)}},  # on the GPU: at least torch eager
    )


def torch_fwd_bwd(fn, primals: list, cotangent, compiled: bool = False):
    """Eager autograd, each call: (fn(*leaves), the leaves' gradients of <fn(...), cotangent>) on fresh
    leaves over the primals' memory; with `compiled`, fn is torch.compile(fn) (compiled on a first call)."""
    f = torch.compile(fn, fullgraph=True) if compiled else fn

    def run():
        leaves = [p.detach().requires_grad_(True) for p in primals]
        out = f(*leaves)
        out.backward(cotangent)
        return out.detach(), tuple(leaf.grad for leaf in leaves)

    if compiled:
        run()
    return run


def _torch_rows(make_fn, names: tuple, what: str) -> list[Impl]:
    """torch eager and torch.compile rows of make_fn() (its inputs `names`, the last input the cotangent)."""

    def make(inp, compiled=False):
        *primals, cotangent = (inp[k] for k in names)
        return torch_fwd_bwd(make_fn(), primals, cotangent, compiled)

    return [
        Impl("torch", make, "torch", note=f"eager {what}, then out.backward(dy)"),
        Impl(
            "torch.compile",
            partial(make, compiled=True),
            "torch.compile",
            note=f"torch.compile({what}, fullgraph), backward through autograd (AOTAutograd-compiled)",
            cold=True,
        ),
    ]


def _ln_inputs(quick: bool) -> dict:
    g, rows, n = rng(), 1024 if quick else 4096, 1024
    x = g.standard_normal((rows, n), dtype=F32)
    weight, bias = (1 + 0.1 * g.standard_normal(n)).astype(F32), (0.1 * g.standard_normal(n)).astype(F32)
    return {"x": x, "weight": weight, "bias": bias, "dy": g.standard_normal((rows, n), dtype=F32)}


def _ln_jitnet(x, weight, bias, dy):
    y, back = jn.vjp(lambda x, w, b: jn.layer_norm(x, x.shape[-1], w, b), x, weight, bias)
    return y, back(dy)


def _ln_reference(inp):
    """float64: y, and dx, dweight, dbias of <y, dy> (the textbook layer norm backward)."""
    x, w, b, dy = (inp[k].astype(np.float64) for k in ("x", "weight", "bias", "dy"))
    c = x - x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5)
    xhat, dxhat = c * rstd, dy * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return xhat * w + b, (dx, (dy * xhat).sum(0), dy.sum(0))


def _torch_layer_norm():
    layer_norm = torch.nn.functional.layer_norm
    return lambda x, w, b: layer_norm(x, (x.shape[-1],), w, b)


LAYER_NORM_FWD_BWD = Workload(
    "layer_norm_fwd_bwd",
    "layer_norm over the last axis of float32 4096 x 1024 with weight and bias: y, and the gradients dx, "
    "dweight, dbias of an upstream dy (jn.vjp)",
    _ln_inputs,
    # forward ~7 per element (centre, square, 2 reductions, scale, weight, bias); backward ~13 (dy*w, its
    # 2 row reductions with xhat, dx, dweight and dbias's column sums)
    lambda inp: 20.0 * inp["x"].size,
    _ln_reference,
    [jitnet_impl(_ln_jitnet), *_torch_rows(_torch_layer_norm, ("x", "weight", "bias", "dy"), "F.layer_norm")],
    # a fused forward + backward reads x and dy once and writes y and dx (4 full arrays), and reads
    # weight and bias, writes their gradients (4 rows)
    bytes=lambda inp: 4.0 * inp["x"].nbytes + 4.0 * inp["weight"].nbytes,
    tol=1e-4,  # relative to the largest |ref|: dweight and dbias sum 4096 rows in float32
    error_kind="rel",
    targets={"beats": ("torch",)},
    gpu={},
)

ATTN_SHAPE = (16, 4, 128, 32)  # batch, heads, sequence, head dim: the GPT's attention at batch 16


def _attn_inputs(quick: bool) -> dict:
    g, shape = rng(), (4, 4, 128, 32) if quick else ATTN_SHAPE
    return {k: g.standard_normal(shape, dtype=F32) for k in ("q", "k", "v", "do")}


def _attn_jitnet(q, k, v, do):
    o, back = jn.vjp(lambda q, k, v: jn.scaled_dot_product_attention(q, k, v, causal=True), q, k, v)
    return o, back(do)


def _attn_reference(inp):
    """float64: o = softmax(q k^T / sqrt(E), causal) v, and dq, dk, dv of <o, dO>."""
    q, k, v, do = (inp[n].astype(np.float64) for n in ("q", "k", "v", "do"))
    length, scale = q.shape[-2], 1 / math.sqrt(q.shape[-1])
    kt = k.swapaxes(-1, -2)
    p = _softmax(np.where(np.tril(np.ones((length, length), bool)), q @ kt * scale, -np.inf))
    dp = do @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    return p @ v, (ds @ k, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ do)


def _torch_attention():
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda q, k, v: sdpa(q, k, v, is_causal=True)


def _attn_flops(inp) -> float:
    """6 matmuls of L x S x E per head (forward q k^T and p v; backward dv, dp, dq, dk), 2 FLOPs per
    multiply-add, the masked causal half counted too; softmax ~5 per score forward and ~5 backward."""
    *heads, length, e = inp["q"].shape
    n = math.prod(heads)
    return n * (12.0 * length * length * e + 10.0 * length * length)


CAUSAL_ATTENTION_FWD_BWD = Workload(
    "causal_attention_fwd_bwd",
    f"scaled_dot_product_attention(q, k, v, causal) on float32 {' x '.join(map(str, ATTN_SHAPE))} "
    "(batch, heads, sequence, head dim): o, and the gradients dq, dk, dv of an upstream dO (jn.vjp)",
    _attn_inputs,
    _attn_flops,
    _attn_reference,
    [
        jitnet_impl(_attn_jitnet),
        *_torch_rows(_torch_attention, ("q", "k", "v", "do"), "F.scaled_dot_product_attention(is_causal=True)"),
    ],
    # read q, k, v and dO; write o, dq, dk, dv (the scores never reach memory in a fused kernel)
    bytes=lambda inp: 8.0 * inp["q"].nbytes,
    tol=1e-4,
    error_kind="rel",
    targets={"beats": ("torch",)},
    gpu={},
)

GPT_TRAIN_STEP = gpt_workload("gpt_train_step")
WORKLOADS = [GPT_TRAIN_STEP, LAYER_NORM_FWD_BWD, CAUSAL_ATTENTION_FWD_BWD]  # by name or as `transformer`


def groups(device: str) -> dict[str, list[Workload]]:
    """Run by name on either device, not by default: on the CPU their cold compiles (jitnet's GPT step
    alone takes one to two minutes on 2 cores, each torch.compile row ~10-20 s) would take the default
    run past ~3 minutes."""
    return {"transformer": [w.on(device) for w in WORKLOADS]}
