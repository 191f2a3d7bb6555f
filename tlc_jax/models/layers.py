"""Building blocks shared by the DenseNet and ResNet definitions.

Conventions, chosen so torchvision weights map one-to-one: NHWC activations, bias-free
convolutions with explicit (PyTorch-style) padding, BatchNorm with epsilon 1e-5 and
PyTorch's momentum 0.1 (Flax spells it 0.9), parameters always float32 while `dtype`
sets the computation precision.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# He (fan-in) normal initialisation, as torchvision uses for these networks.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class Conv1x1(nn.Module):
    """A 1x1, stride-1 convolution computed as one matrix product over the pixels.

    The same parameter as `nn.Conv` (`kernel`, shape (1, 1, in, out)), so checkpoints and
    torchvision weights are unchanged, and the same result; XLA:CPU runs the product 3-5x
    faster than its convolution on DenseNet's bottleneck shapes (benchmark in
    docs/BENCHMARKS.md), and GPUs run either as a GEMM."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", conv_init, (1, 1, x.shape[-1], self.features),
                            jnp.float32)
        x = x.astype(self.dtype)
        y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel[0, 0].astype(self.dtype))
        return y.reshape(*x.shape[:-1], self.features)


def conv(features: int, kernel: int, *, stride: int = 1, padding: int = 0,
         dtype: Dtype, name: str) -> nn.Module:
    if kernel == 1 and stride == 1 and padding == 0:
        return Conv1x1(features, dtype=dtype, name=name)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=False,
                   kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32,
                   name=name)


def batch_norm(*, train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


def _bc(v: jax.Array, x: jax.Array) -> jax.Array:
    """A per-channel vector shaped to broadcast against NHWC x (explicit ranks)."""
    return v.reshape((1,) * (x.ndim - 1) + (-1,))


def _stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel batch mean and (biased) variance in float32, as Flax computes them
    (one pass: E[x^2] - E[x]^2, clipped at 0)."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
    return mean, var


def fused_bn_relu(x, scale, bias, epsilon: float, dtype):
    """relu(batch_norm(x)) over the batch statistics of x (training mode); returns
    (y, batch mean, batch variance). Its backward pass keeps only x and two per-channel
    vectors and recomputes the normalised values, where autodiff through BatchNorm and
    ReLU keeps the normalised activations and the ReLU output too (as PyTorch's
    BatchNorm and in-place ReLU keep only the input).

    `x` may also be a sequence of arrays that differ only in channels, standing for
    their concatenation along the last axis (a dense layer's earlier feature maps):
    y is the same as for the concatenated x, but the concatenation is never stored -
    the backward pass keeps the pieces, which are alive anyway as the earlier layers'
    outputs, and returns one gradient per piece, with no slicing of a concatenated
    gradient (BatchNorm acts on each channel alone, so it splits exactly)."""
    pieces = tuple(x) if isinstance(x, (list, tuple)) else (x,)
    return _fused_bn_relu_pieces(pieces, scale, bias, epsilon, dtype)


def _split(v: jax.Array, pieces: tuple) -> list[jax.Array]:
    """A per-channel vector of the concatenation, cut into the pieces' channels."""
    offsets = np.cumsum([p.shape[-1] for p in pieces])[:-1]
    return jnp.split(v, offsets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused_bn_relu_pieces(pieces, scale, bias, epsilon: float, dtype):
    return _fused_fwd(pieces, scale, bias, epsilon, dtype)[0]


def _fused_fwd(pieces, scale, bias, epsilon, dtype):
    stats = [_stats(p) for p in pieces]
    mean = jnp.concatenate([m for m, _ in stats])
    var = jnp.concatenate([v for _, v in stats])
    rstd = jax.lax.rsqrt(var + epsilon)
    ys = [jax.nn.relu((p.astype(jnp.float32) - _bc(m, p)) * _bc(r * s, p) + _bc(b, p))
          for p, m, r, s, b in zip(pieces, *(_split(v, pieces)
                                             for v in (mean, rstd, scale, bias)))]
    y = ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=-1)
    return (y.astype(dtype), mean, var), (pieces, scale, bias, mean, rstd)


def _fused_bwd(epsilon, dtype, residuals, cotangents):
    pieces, scale, bias, mean, rstd = residuals
    dy, dmean, dvar = cotangents
    dxs, dscales, dbiases = [], [], []
    start = 0
    for x, m, r, s, b, dm, dv in zip(pieces, *(_split(v, pieces) for v in (
            mean, rstd, scale, bias, dmean, dvar))):
        c = x.shape[-1]
        xf = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        n = xf.size // c
        centred = xf - _bc(m, x)
        xhat = centred * _bc(r, x)
        g = jnp.where(xhat * _bc(s, x) + _bc(b, x) > 0,
                      dy[..., start:start + c].astype(jnp.float32), 0.0)
        start += c
        dbias = jnp.sum(g, axes)
        dscale = jnp.sum(g * xhat, axes)
        dx = _bc(s * r, x) * (g - _bc(dbias / n, x) - xhat * _bc(dscale / n, x))
        # The batch statistics are outputs too (for the running averages): their
        # cotangents, zero in training, are carried for exactness.
        dx = dx + _bc(dm / n, x) + _bc(dv * 2.0 / n, x) * centred
        dxs.append(dx.astype(x.dtype))
        dscales.append(dscale)
        dbiases.append(dbias)
    return tuple(dxs), jnp.concatenate(dscales), jnp.concatenate(dbiases)


_fused_bn_relu_pieces.defvjp(_fused_fwd, _fused_bwd)


class BatchNormReLU(nn.Module):
    """relu(BatchNorm(x)) with `nn.BatchNorm`'s variables (params scale / bias,
    batch_stats mean / var), momentum and epsilon, so checkpoints and torchvision
    weights are the same. In training `fused=True` uses `fused_bn_relu` (input-only
    residuals); `fused=False` is plain autodiff, as `nn.BatchNorm` + `nn.relu`."""

    use_running_average: bool
    dtype: Dtype = jnp.float32
    fused: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
        """`x`: an NHWC array, or a sequence of them standing for their concatenation
        along channels (the fused training path then never stores the concatenation;
        see `fused_bn_relu`)."""
        pieces = tuple(x) if isinstance(x, (list, tuple)) else (x,)
        if not (self.fused and not self.use_running_average):
            x = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
        features = (sum(p.shape[-1] for p in pieces),)
        ra_mean = self.variable("batch_stats", "mean",
                                lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        if self.use_running_average:
            rstd = jax.lax.rsqrt(ra_var.value + self.epsilon)
            y = ((x.astype(jnp.float32) - _bc(ra_mean.value, x)) * _bc(rstd * scale, x)
                 + _bc(bias, x))
            return jax.nn.relu(y).astype(self.dtype)
        if self.fused:
            y, mean, var = fused_bn_relu(pieces, scale, bias, self.epsilon, self.dtype)
        else:
            mean, var = _stats(x)
            y = ((x.astype(jnp.float32) - _bc(mean, x))
                 * _bc(jax.lax.rsqrt(var + self.epsilon) * scale, x))
            y = jax.nn.relu(y + _bc(bias, x)).astype(self.dtype)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


def bn_relu(*, train: bool, dtype: Dtype, fused: bool, name: str) -> BatchNormReLU:
    return BatchNormReLU(use_running_average=not train, dtype=dtype, fused=fused,
                         name=name)


class DepthwiseConv(nn.Module):
    """A k x k depthwise convolution (one filter per channel), stride s, TensorFlow's
    "SAME" padding (the smaller half before), computed as k*k shifted multiply-adds.

    The same parameter as `nn.Conv(C, (k, k), feature_group_count=C, use_bias=False)`
    (`kernel`, shape (k, k, 1, C), the same initialisation), so weights and checkpoints
    are unchanged, and the same result up to float rounding. XLA fuses the taps into one
    loop (and their gradients too); XLA:CPU's grouped convolution ran EfficientNet-Lite0
    6x slower (docs/BENCHMARKS.md, "CPU speed")."""

    kernel_size: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", conv_init, (k, k, 1, c), jnp.float32)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        out_h, out_w = -(-h // s), -(-w // s)
        pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
        x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                        (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        out = None
        for dy in range(k):
            for dx in range(k):
                weight = kernel[dy, dx].reshape(1, 1, 1, c)
                tap = jax.lax.slice(x, (0, dy, dx, 0),
                                    (b, dy + (out_h - 1) * s + 1, dx + (out_w - 1) * s + 1,
                                     c), (1, s, s, 1)) * weight
                out = tap if out is None else out + tap
        return out


HEADS = ("linear", "cosine")  # The classifier kinds `classifier` builds.


class CosineClassifier(nn.Module):
    """Logits that are cosines: L2-normalised features times L2-normalised class
    vectors, in [-1, 1], no bias - LDAM's classifier (Cao et al. 2019, the reference
    code's NormedLinear), which its logit scale s = 30 assumes.

    One parameter, `kernel` (in_features, num_classes) like `nn.Dense`'s, drawn
    uniformly from [-1, 1] as the reference does (only its direction matters). Computed
    in float32 whatever the model's dtype: it is one small matrix product, and cosines
    near +-1 lose their margin in bfloat16.
    """

    num_classes: int
    eps: float = 1e-12  # torch.nn.functional.normalize's default.

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1, 1),
            (features.shape[-1], self.num_classes))
        x = features.astype(jnp.float32)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), self.eps)
        w = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), self.eps)
        return x @ w


def check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; valid heads: {', '.join(HEADS)}.")


def classifier(num_classes: int, *, dtype: Dtype, name: str,
               head: str = "linear") -> nn.Module:
    """The model's head: "linear" (nn.Dense with bias, as torchvision's) or "cosine"
    (`CosineClassifier`)."""
    check_head(head)
    if head == "cosine":
        return CosineClassifier(num_classes, name=name)
    return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32,
                    bias_init=nn.initializers.zeros, name=name)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch's MaxPool2d(3, stride=2, padding=1): padding never wins the max."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """PyTorch's AvgPool2d(2, stride=2), summed in float32 whatever x's dtype (a
    bfloat16 sum of four values rounds visibly); returns x's dtype."""
    return nn.avg_pool(x.astype(jnp.float32), (2, 2), strides=(2, 2)).astype(x.dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def check_input(x: jax.Array, in_channels: int, model: str) -> None:
    """Raises a clear error for anything but an NHWC batch with `in_channels` channels."""
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects a batch of images shaped (batch, height, width, "
            f"{in_channels}) (NHWC); got an array of shape {tuple(x.shape)}.")
    if x.shape[-1] != in_channels:
        hint = (" Images must be channels-last (NHWC), not NCHW."
                if x.shape[1] == in_channels else "")
        raise ValueError(
            f"{model} was built for {in_channels} input channel(s) but the batch has "
            f"{x.shape[-1]} (shape {tuple(x.shape)}).{hint} Set in_channels to match "
            f"the data, or convert the images (e.g. grey -> RGB by repeating).")
