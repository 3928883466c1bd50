"""Train a multilayer perceptron on handwritten digits: the embedded 8x8 digits by default, MNIST
with --data DIR.

    python examples/train_mlp.py [--data DIR] [--epochs N] [--plot curves.png]

Runs on the GPU when one is usable (jn.default_device()), else on the CPU. Two hidden layers of
256 (512 for MNIST) ReLUs, dropout 0.2, inputs standardised per pixel, SGD with momentum and a
cosine learning-rate schedule.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

import jitnet as jn
from jitnet import nn


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], epochs=60, lr=0.1, batch_size=32)
    jn.manual_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = jn.nn.data.load(args.data, flatten=True)
    # standardise each pixel with the training set's statistics (+ 0.1: border pixels are ~constant)
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    data = ((x_train - mean) / std, y_train), ((x_test - mean) / std, y_test)
    n_in = data[0][0].shape[1]
    hidden = 256 if n_in <= 64 else 512
    model = nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
    )
    optimizer = _common.sgd_cosine(args, model, len(data[0][0]))
    _common.run(args, "mlp", model, optimizer, data, target=0.97)


if __name__ == "__main__":
    main()
