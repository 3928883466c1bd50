"""jitnet: a JIT kernel-compiling tensor engine. Write plain array code, `@jitnet.compile` it, get
fused compiled kernels."""

from jitnet import ir
from jitnet.autodiff import grad, value_and_grad, vjp
from jitnet.backends import default_device, device, empty_cache
from jitnet.checkpoint import load, save
from jitnet.compiler import compile
from jitnet.errors import TraceError
from jitnet.ops import (
    abs,
    acos,
    add,
    arange,
    argmax,
    astype,
    avg_pool2d,
    broadcast_to,
    clip,
    concatenate,
    conv2d,
    cos,
    div,
    dropout,
    elu,
    equal,
    exp,
    expand_dims,
    expm1,
    flatten,
    full,
    greater,
    greater_equal,
    install_operators,
    leaky_relu,
    less,
    less_equal,
    log,
    log1p,
    log_softmax,
    logical_and,
    logical_not,
    logical_or,
    logsumexp,
    matmul,
    max,
    max_pool2d,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neg,
    not_equal,
    one_hot,
    ones,
    ones_like,
    pad,
    pow,
    reciprocal,
    relu,
    reshape,
    rsqrt,
    sigmoid,
    sign,
    sin,
    softmax,
    sqrt,
    square,
    squeeze,
    sub,
    sum,
    tanh,
    transpose,
    where,
    zeros,
    zeros_like,
)
from jitnet.runtime.array import Array, asarray

install_operators(Array)

from jitnet import nn, optim  # noqa: E402  (they use the ops above)
from jitnet.nn.init import manual_seed  # noqa: E402

float32 = "float32"
float64 = "float64"
int32 = "int32"
int64 = "int64"
bool_ = "bool"

__version__ = "0.1.0"
