"""jitnet: a JIT kernel-compiling tensor engine. Write plain array code, `@jitnet.compile` it, get
fused compiled kernels."""

import importlib

from jitnet import ir, onnx
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
    erf,
    exp,
    expand_dims,
    expm1,
    flatten,
    full,
    gelu,
    greater,
    greater_equal,
    index_add,
    install_operators,
    layer_norm,
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
    scaled_dot_product_attention,
    scatter_add,
    sigmoid,
    sign,
    sin,
    softmax,
    sqrt,
    square,
    squeeze,
    sub,
    sum,
    take,
    take_along_axis,
    tanh,
    transpose,
    tril,
    triu,
    where,
    zeros,
    zeros_like,
)
from jitnet.retrace import RetraceWarning
from jitnet.runtime.array import Array, asarray

install_operators(Array)


float32 = "float32"
float64 = "float64"
int32 = "int32"
int64 = "int64"
bool_ = "bool"

__version__ = "0.1.0"


def __getattr__(name: str):
    """`jn.nn`, `jn.optim`, `jn.distributed` and `jn.manual_seed` load on first use: they are built on this namespace
    (`import jitnet as jn`), so importing them here would import jitnet from inside itself."""
    if name in ("nn", "optim", "distributed"):
        return importlib.import_module(f"jitnet.{name}")
    if name == "manual_seed":
        return importlib.import_module("jitnet.nn.init").manual_seed
    raise AttributeError(f"module 'jitnet' has no attribute {name!r}")
