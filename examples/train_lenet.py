"""Train a LeNet on handwritten digits: the embedded 8x8 digits by default, MNIST with --data DIR.

    python examples/train_lenet.py [--data DIR] [--epochs N] [--plot curves.png]

Runs on the GPU when one is usable (jn.default_device()), else on the CPU. LeNet-5's layout adapted
to the input: on 8x8 digits two 3x3 convolutions with padding 1 (8x8 -> pool 4x4 -> pool 2x2), 16 and
32 channels; on 28x28 MNIST the classic 5x5 convolutions, 6 and 16 channels (28 -> pool 14 -> 10 ->
pool 5). Dropout 0.3 before the first two fully connected layers.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

import jitnet as jn
from jitnet import nn


def lenet(side: int) -> nn.Module:
    if side == 28:
        features = [nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU()]
        flat = 16 * 5 * 5
    else:  # 1,438 training images overfit LeNet: wider convolutions and dropout reach 98%
        features = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1)]
        features.append(nn.ReLU())
        flat = 32 * (side // 4) ** 2
    return nn.Sequential(
        *features,
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(flat, 120),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], epochs=60, lr=0.05, batch_size=32)
    jn.manual_seed(args.seed)
    data = jn.nn.data.load(args.data)
    model = lenet(data[0][0].shape[-1])
    optimizer = _common.sgd_cosine(args, model, len(data[0][0]))
    _common.run(args, "lenet", model, optimizer, data, target=0.98)


if __name__ == "__main__":
    main()
