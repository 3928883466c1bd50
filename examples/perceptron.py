"""The classic perceptron on 2-D points: a linear classifier trained by plain gradient descent on
the max-margin (hinge) loss, printing loss and accuracy at every iteration.

    python examples/perceptron.py [--iterations N] [--lr LR] [--plot perceptron.png]
"""

from __future__ import annotations

import argparse

import numpy as np

import jitnet as jn


def make_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian clouds, labels -1 and +1, separable with a small overlap."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    centers = np.stack([y * 1.5, y * -1.0], axis=1)
    x = (centers + rng.standard_normal((n, 2))).astype(np.float32)
    return x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="PNG")
    args = p.parse_args()
    x, y = make_points(args.points, args.seed)

    def loss(params, x, y):
        w, b = params
        return jn.nn.hinge_loss(x @ w + b, y)

    @jn.compile
    def step(params, x, y, lr):
        value, (gw, gb) = jn.value_and_grad(loss)(params, x, y)
        w, b = params
        scores = x @ w + b
        acc = jn.mean(jn.astype(jn.where(scores >= 0, 1.0, -1.0) == y, jn.float32))
        return value, acc, (w - lr * gw, b - lr * gb)

    params = (np.zeros(2, np.float32), np.float32(0.0))
    for it in range(args.iterations):
        value, acc, params = step(params, x, y, args.lr)
        print(f"iteration {it + 1:3d}  loss {float(value):.4f}  accuracy {float(acc):.3f}")
    w, b = (np.asarray(v) for v in params)
    print(f"decision boundary: {w[0]:.3f} * x0 + {w[1]:.3f} * x1 + {float(b):.3f} = 0")
    if args.plot:
        plot(x, y, w, float(b), args.plot)


def plot(x, y, w, b, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jitnet[examples]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=12)
    xs = np.linspace(x[:, 0].min(), x[:, 0].max(), 2)
    if abs(w[1]) > 1e-12:
        ax.plot(xs, -(w[0] * xs + b) / w[1], "k-")
    ax.set(title="perceptron (hinge loss)", xlabel="x0", ylabel="x1")
    fig.savefig(path)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
