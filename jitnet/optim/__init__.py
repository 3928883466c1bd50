"""`jn.optim`: optimizers with PyTorch's update rules and learning-rate schedules."""

from jitnet.optim import schedules
from jitnet.optim.optimizers import SGD, AdaDelta, AdaGrad, Adam, AdamW, Optimizer, RMSProp

__all__ = ["SGD", "AdaDelta", "AdaGrad", "Adam", "AdamW", "Optimizer", "RMSProp", "schedules"]
