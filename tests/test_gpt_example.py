"""examples/train_gpt.py: the script runs end to end (a tiny configuration), and its model trains
exactly as the same model in PyTorch does (its own file: the slowest example tests, so that the
test workers share them out)."""

from __future__ import annotations

import numpy as np
import pytest
from test_examples import run

import jitnet as jn
from bench.transformer import GPTConfig, example, torch_gpt


def test_gpt_script(tmp_path):
    checkpoint = tmp_path / "gpt.safetensors"
    out = run(
        "train_gpt.py",
        *("--steps", "2", "--eval-every", "1", "--layers", "1", "--width", "16", "--heads", "2", "--context", "8"),
        *("--text-bytes", "20000", "--sample-chars", "8", "--quiet", "--checkpoint", str(checkpoint)),
        cwd=tmp_path,
    )
    assert "standard library" in out and "step 2: train loss" in out and "val loss" in out and "tokens/s" in out
    assert "sample:\ndef " in out
    state = jn.load(str(checkpoint))
    assert "blocks.0.attn.in_proj_weight" in state and "tok.weight" in state


def test_gpt_first_steps_match_pytorch(on_backend):
    """The example's model and PyTorch's same model (same weights, AdamW, the same batches): the first
    five training losses agree to 1e-4 relative. On CUDA it needs a real GPU: the simulator runs a
    Python thread per CUDA thread, and the step's ~60 kernels took over 15 minutes there; its parts
    are checked under the simulator one by one (tests/nn/test_transformer.py, tests/test_gather.py)."""
    torch = pytest.importorskip("torch")
    from jitnet.backends.cuda.device import simulator

    if on_backend == "cuda" and simulator():
        pytest.skip("too slow in numba's CUDA simulator (a real GPU runs it); its ops are tested there one by one")
    cfg = GPTConfig(vocab=11, context=8, width=16, heads=2, layers=1, batch=3)
    gpt = example()
    jn.manual_seed(0)
    model = gpt.GPT(cfg.vocab, cfg.context, cfg.width, cfg.heads, cfg.layers)  # on the backend's device
    reference = torch_gpt(cfg)  # the bench's twin of the example's model: the same names, so the state loads
    reference.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    optimizer = jn.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    step = jn.nn.train_step(model, gpt.next_token_loss, optimizer)
    torch_optimizer = torch.optim.AdamW(reference.parameters(), lr=3e-3, weight_decay=0.1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = (rng.integers(0, cfg.vocab, (cfg.batch, cfg.context)) for _ in range(2))
        loss = float(step(x, y))
        torch_optimizer.zero_grad()
        logits = reference(torch.from_numpy(x))
        want = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), torch.from_numpy(y).reshape(-1))
        want.backward()
        torch_optimizer.step()
        assert abs(loss - want.item()) <= 1e-4 * abs(want.item()), (loss, want.item())
