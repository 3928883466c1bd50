"""A character-level GPT trained on the source of the running Python's standard library.

Every machine with Python has the text: the .py files of the standard library, read at run time (no
download). The model is GPT-2's layout at toy size (default 4 layers, 4 heads, width 128, context
128): token and position embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP
with residual connections, a final LayerNorm and a linear head; trained with AdamW on random windows
of the text. Prints train/validation loss and tokens/s with a progress bar, saves a safetensors
checkpoint and samples a few lines at the end. Runs on the GPU when one is usable.

    python examples/train_gpt.py [--steps 300] [--batch-size 16] [--context 128] [--layers 4] ...
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

import jitnet as jn
from jitnet import nn


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then + MLP(LayerNorm(x)): GPT-2's pre-norm block."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, is_causal=True, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """tokens (batch, time) -> logits (batch, time, vocab)."""

    def __init__(self, vocab: int, context: int = 128, width: int = 128, heads: int = 4, layers: int = 4):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        positions = jn.arange(tokens.shape[1])
        return self.head(self.ln(self.blocks(self.tok(tokens) + self.pos(positions))))


def next_token_loss(logits, targets):
    """Cross entropy of every position's prediction of the next character."""
    vocab = logits.shape[-1]
    return nn.cross_entropy(jn.reshape(logits, (-1, vocab)), jn.reshape(targets, (-1,)))


def stdlib_text(limit_bytes: int) -> str:
    """The standard library's .py files (sorted, so every run reads the same text), up to a limit."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= limit_bytes:
            break
    if not parts:
        raise SystemExit(f"no Python sources found under {root}")
    return "".join(parts)[:limit_bytes]


class Corpus:
    """The text as character ids; random (input, next-character) windows of the train or validation part."""

    def __init__(self, text: str, seed: int):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        ids = np.array([self.index[c] for c in text], np.int64)
        cut = int(len(ids) * 0.9)
        self.parts = {"train": ids[:cut], "val": ids[cut:]}
        self.rng = np.random.default_rng(seed)

    def batch(self, part: str, batch: int, context: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.parts[part]
        starts = self.rng.integers(0, len(ids) - context - 1, batch)
        x = np.stack([ids[s : s + context] for s in starts])
        y = np.stack([ids[s + 1 : s + context + 1] for s in starts])
        return x, y

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def sample(model: GPT, corpus: Corpus, prompt: str, length: int, temperature: float, seed: int) -> str:
    """Characters drawn one at a time. The model always sees a full window (the text so far, padded
    on the right): causal attention keeps the padding out of the positions read, and one compiled
    program serves every step."""
    rng = np.random.default_rng(seed)
    model.eval()
    forward = jn.compile(lambda tokens: model(tokens))
    ids = [corpus.index.get(c, 0) for c in prompt] or [0]
    for _ in range(length):
        window = ids[-model.context :]
        tokens = np.zeros((1, model.context), np.int64)
        tokens[0, : len(window)] = window
        logits = np.asarray(forward(tokens))[0, len(window) - 1].astype(np.float64) / temperature
        p = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    model.train()
    return corpus.decode(ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--text-bytes", type=int, default=2_000_000, help="how much of the standard library to read")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="gpt.safetensors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args()

    jn.manual_seed(args.seed)
    corpus = Corpus(stdlib_text(args.text_bytes), args.seed)
    model = GPT(len(corpus.chars), args.context, args.width, args.heads, args.layers)
    n_params = sum(p.size for p in model.parameters().values())
    print(
        f"gpt: {len(corpus.parts['train']):,} training and {len(corpus.parts['val']):,} validation characters "
        f"of the standard library, vocabulary {len(corpus.chars)}; {n_params:,} parameters; device {jn.default_device()}"
    )
    schedule = jn.optim.schedules.cosine(args.lr, args.steps)
    optimizer = jn.optim.AdamW(model.parameters(), lr=schedule, weight_decay=0.1, clip_grad_norm=1.0)
    step = nn.train_step(model, next_token_loss, optimizer)
    evaluate = jn.compile(lambda x, y: next_token_loss(model(x), y))

    def validation_loss(batches: int = 4) -> float:
        model.eval()
        loss = np.mean([float(evaluate(*corpus.batch("val", args.batch_size, args.context))) for _ in range(batches)])
        model.train()
        return float(loss)

    tokens_per_step = args.batch_size * args.context
    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    training_s = 0.0  # the steps after the first (which traces and compiles), evaluation left out
    for i in range(args.steps):
        start = time.perf_counter()
        loss = float(step(*corpus.batch("train", args.batch_size, args.context)))
        if i == 0:
            print(f"step 1: loss {loss:.4f} (trace and compile included: {time.perf_counter() - start:.1f} s)")
        else:
            training_s += time.perf_counter() - start
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        if (i + 1) % args.eval_every == 0 or i + 1 == args.steps:
            rate = tokens_per_step * i / training_s if i else 0.0
            print(f"step {i + 1}: train loss {loss:.4f}  val loss {validation_loss():.4f}  {rate:,.0f} tokens/s")
    if bar is not None:
        bar.close()
    jn.save(args.checkpoint, model.state_dict())
    print(f"checkpoint saved to {args.checkpoint}")
    print("sample:\n" + sample(model, corpus, "def ", args.sample_chars, 0.8, args.seed))


if __name__ == "__main__":
    main()
