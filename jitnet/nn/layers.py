"""The layers, with PyTorch's parameter names, shapes, defaults and initialisation."""

from __future__ import annotations

import numbers

import numpy as np

import jitnet as jn
from jitnet.nn import init
from jitnet.nn.module import Module, next_dropout_seed, update_buffer


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(layer: str, name: str, v, low: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= low, as a pair (PyTorch's kernel_size/stride/padding)."""
    pair = (v, v) if _int(v) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(pair) != 2 or not all(_int(e) and e >= low for e in pair):
        raise ValueError(f"{layer}: {name} must be an integer >= {low} or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])


def _check_positive(layer: str, **sizes) -> None:
    for name, v in sizes.items():
        if not _int(v) or v <= 0:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {v!r}")


def _check_input(layer: str, x, ndim: int, dim: int, size: int) -> None:
    shape = tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)
    if len(shape) != ndim or shape[dim] != size:
        raise ValueError(f"{layer}: expected input of {ndim} dims with size {size} at dim {dim}, got shape {shape}")


class Linear(Module):
    """y = x @ weight.T + bias; weight (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        _check_positive("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_parameter("weight", init.kaiming_uniform((out_features, in_features), in_features))
        if bias:
            self.register_parameter("bias", init.fan_in_bias((out_features,), in_features))

    def forward(self, x):
        _check_input("Linear", x, len(x.shape), -1, self.in_features)
        rows = jn.reshape(x, (-1, self.in_features)) if len(x.shape) > 2 else x  # a stack of rows: one
        # 2-D product, and the bias added over its rows, where the bias gradient's reduction shares
        # its loop with the gradient the weight's product reads (one domain, not (N, L, F) vs (N*L, F))
        y = jn.matmul(rows, jn.transpose(self.weight))
        y = y + self.bias if "bias" in self._params else y
        return jn.reshape(y, (*x.shape[:-1], self.out_features)) if len(x.shape) > 2 else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self._params}"


class Embedding(Module):
    """torch.nn.Embedding: weight (num_embeddings, embedding_dim) ~ N(0, 1); forward(indices) gathers
    its rows (jn.take), and the gradient scatter-adds into them (repeated indices accumulate).
    Indices given as host data are checked (IndexError); indices computed on the device are clamped."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        _check_positive("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.register_parameter("weight", init.normal((self.num_embeddings, self.embedding_dim)))

    def forward(self, indices):
        return jn.take(self.weight, indices, axis=0)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Conv2d(Module):
    """Cross-correlation over NCHW input; weight (out_channels, in_channels, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True):
        super().__init__()
        _check_positive("Conv2d", in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair("Conv2d", "kernel_size", kernel_size)
        self.stride = _pair("Conv2d", "stride", stride)
        self.padding = _pair("Conv2d", "padding", padding, low=0)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.register_parameter("weight", init.kaiming_uniform(shape, fan_in))
        if bias:
            self.register_parameter("bias", init.fan_in_bias((out_channels,), fan_in))

    def forward(self, x):
        _check_input("Conv2d", x, 4, 1, self.in_channels)
        y = jn.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
        return y + jn.reshape(self.bias, (1, -1, 1, 1)) if "bias" in self._params else y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class MaxPool2d(Module):
    """Max over kernel_size windows (stride defaults to kernel_size), -inf padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        layer = type(self).__name__
        k = _pair(layer, "kernel_size", kernel_size)
        if stride is not None:
            _pair(layer, "stride", stride)
        pad = _pair(layer, "padding", padding, low=0)
        if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:  # else a window could hold only padding
            raise ValueError(f"{layer}: padding {padding} must be at most half of kernel_size {kernel_size}")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return jn.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Mean over kernel_size windows; padded zeros count, as PyTorch's default."""

    def forward(self, x):
        return jn.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    """Merge all dims after the batch dim (PyTorch's start_dim=1)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return jn.flatten(x, self.start_dim, self.end_dim)


class ReLU(Module):
    def forward(self, x):
        return jn.relu(x)


class LeakyReLU(Module):
    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = float(slope)

    def forward(self, x):
        return jn.leaky_relu(x, self.slope)


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        return jn.elu(x, self.alpha)


class Sigmoid(Module):
    def forward(self, x):
        return jn.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return jn.tanh(x)


class GELU(Module):
    """torch.nn.GELU: approximate "none" (exact, through erf) or "tanh"."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return jn.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class LayerNorm(Module):
    """torch.nn.LayerNorm: normalise over the trailing `normalized_shape`; weight (ones) and bias
    (zeros) of that shape when elementwise_affine."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        shape = (normalized_shape,) if _int(normalized_shape) else tuple(normalized_shape)
        if not shape or not all(_int(d) and d > 0 for d in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive integers, got {normalized_shape!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"LayerNorm: eps must be a number >= 0, got {eps!r}")
        self.normalized_shape, self.eps = tuple(int(d) for d in shape), float(eps)
        if elementwise_affine:
            self.register_parameter("weight", np.ones(self.normalized_shape, np.float32))
            if bias:
                self.register_parameter("bias", np.zeros(self.normalized_shape, np.float32))

    def forward(self, x):
        weight, bias = self._params.get("weight"), self._params.get("bias")
        return jn.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={'weight' in self._params}"


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention (its parameter names, shapes and initialisation, so a state_dict
    round-trips): in_proj_weight (3E, E), in_proj_bias (3E), out_proj.weight (E, E), out_proj.bias.
    forward(query, key, value, attn_mask=None, is_causal=False, need_weights=True) ->
    (output, the attention weights averaged over heads or None); batch_first as in torch. Without
    dropout; attn_mask: bool (True = attend) or float (added), (L, S) or (N * heads, L, S)."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, batch_first: bool = False):
        super().__init__()
        _check_positive("MultiheadAttention", embed_dim=embed_dim, num_heads=num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first = int(embed_dim), int(num_heads), bool(batch_first)
        e = self.embed_dim
        self.register_parameter("in_proj_weight", init.xavier_uniform((3 * e, e), e, 3 * e))
        if bias:
            self.register_parameter("in_proj_bias", np.zeros(3 * e, np.float32))
        self.out_proj = Linear(e, e, bias=bias)
        if bias:  # torch zeroes both biases
            self.out_proj.register_parameter("bias", np.zeros(e, np.float32))

    def forward(self, query, key, value, attn_mask=None, is_causal: bool = False, need_weights: bool = True):
        self_attention = query is key and key is value
        if not self.batch_first:  # (L, N, E) -> (N, L, E): a sequence's rows together, as the products want
            query, key, value = (jn.transpose(t, (1, 0, 2)) for t in (query, key, value))
        (batch, length, e), source = query.shape, key.shape[1]
        if e != self.embed_dim or key.shape[2] != e or value.shape[2] != e or value.shape[1] != source:
            layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
            raise ValueError(
                f"MultiheadAttention: query, key and value {layout} with E = {self.embed_dim} and key and value "
                f"of one length expected, got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        heads, d = self.num_heads, e // self.num_heads

        def heads_of(y, n: int, part: int):  # columns [part * E, (part + 1) * E) of (N * n, .) -> (N, heads, n, d)
            y = y[:, part * e : (part + 1) * e] if y.shape[1] != e else y
            return jn.transpose(jn.reshape(y, (batch, n, heads, d)), (0, 2, 1, 3))

        if self_attention:  # q, k and v from one (N * L, E) @ (E, 3E) product
            qkv = self._project(query, 0, 3)
            q, k, v = (heads_of(qkv, length, part) for part in range(3))
        else:
            q = heads_of(self._project(query, 0, 1), length, 0)
            k, v = heads_of(self._project(key, 1, 1), source, 0), heads_of(self._project(value, 2, 1), source, 0)
        mask = (
            None
            if attn_mask is None
            else jn.reshape(attn_mask, (-1, heads, length, source) if len(attn_mask.shape) == 3 else (length, source))
        )
        scores = jn.matmul(q, jn.transpose(k, (0, 1, 3, 2))) * (1.0 / float(np.sqrt(d)))
        if is_causal:
            scores = jn.where(jn.tril(jn.ones((length, source), "bool")), scores, -np.inf)
        if mask is not None:
            scores = jn.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
        weights = jn.softmax(scores, axis=-1)
        out = jn.reshape(jn.transpose(jn.matmul(weights, v), (0, 2, 1, 3)), (batch * length, e))
        out = jn.reshape(self.out_proj(out), (batch, length, e))
        if not self.batch_first:
            out = jn.transpose(out, (1, 0, 2))
        return out, (jn.mean(weights, axis=1) if need_weights else None)

    def _project(self, t, part: int, count: int):
        """(N, n, E) -> (N * n, count * E): rows times in_proj parts [part, part + count), plus their bias."""
        e, b = self.embed_dim, self._params.get("in_proj_bias")
        y = jn.matmul(jn.reshape(t, (-1, e)), jn.transpose(self.in_proj_weight[part * e : (part + count) * e]))
        return y if b is None else y + b[part * e : (part + count) * e]

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


class Dropout(Module):
    """Zero each element with probability p in training (the kept ones scaled by 1/(1-p)); identity
    in eval. Inside `train_step` the mask comes from the step's seed, fresh every step."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return jn.dropout(x, self.p, next_dropout_seed())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _BatchNorm(Module):
    """Batch statistics in training (running statistics updated with PyTorch's momentum and the
    unbiased batch variance), running statistics in eval."""

    ndim: int = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        _check_positive(type(self).__name__, num_features=num_features)
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.register_parameter("weight", np.ones(num_features, np.float32))
        self.register_parameter("bias", np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x):
        _check_input(type(self).__name__, x, self.ndim, 1, self.num_features)
        axes = (0,) if self.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if self.ndim == 2 else (1, -1, 1, 1)
        if self.training:
            n = int(np.prod([x.shape[a] for a in axes]))
            if n < 2:
                raise ValueError(f"{type(self).__name__}: training needs more than 1 value per channel, got {x.shape}")
            mean = jn.mean(x, axes)
            centered = x - jn.reshape(mean, shape)
            var = jn.mean(centered * centered, axes)
            m = self.momentum
            update_buffer(self, "running_mean", (1 - m) * self.running_mean + m * mean)
            update_buffer(self, "running_var", (1 - m) * self.running_var + m * var * (n / (n - 1)))
            update_buffer(self, "num_batches_tracked", self.num_batches_tracked + 1)
        else:
            mean, var = self.running_mean, self.running_var
            centered = x - jn.reshape(mean, shape)
        scale = self.weight * jn.rsqrt(var + self.eps)
        return centered * jn.reshape(scale, shape) + jn.reshape(self.bias, shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Over (N, C) input."""

    ndim = 2


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) input, statistics per channel."""

    ndim = 4


class Sequential(Module):
    """Layers applied in order, named "0", "1", ... as PyTorch's."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
