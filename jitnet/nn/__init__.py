"""`jn.nn`: modules, layers, losses, the one-program training step, the Trainer, its callbacks
(`jn.nn.callbacks`, as Keras's `keras.callbacks`) and datasets."""

from jitnet.nn import callbacks, data
from jitnet.nn.init import manual_seed
from jitnet.nn.layers import (
    ELU,
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    MultiheadAttention,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from jitnet.nn.losses import (
    accuracy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    hinge_loss,
    mse_loss,
    multiclass_hinge_loss,
)
from jitnet.nn.module import Module
from jitnet.nn.train import Trainer, train_step

__all__ = [
    "ELU",
    "GELU",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "MultiheadAttention",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Trainer",
    "accuracy",
    "binary_cross_entropy_with_logits",
    "callbacks",
    "cross_entropy",
    "data",
    "hinge_loss",
    "manual_seed",
    "mse_loss",
    "multiclass_hinge_loss",
    "train_step",
]
