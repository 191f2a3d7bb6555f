"""Building blocks shared by the DenseNet and ResNet definitions.

Conventions, chosen so torchvision weights map one-to-one: NHWC activations, bias-free
convolutions with explicit (PyTorch-style) padding, BatchNorm with epsilon 1e-5 and
PyTorch's momentum 0.1 (Flax spells it 0.9), parameters always float32 while `dtype`
sets the computation precision.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# He (fan-in) normal initialisation, as torchvision uses for these networks.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def conv(features: int, kernel: int, *, stride: int = 1, padding: int = 0,
         dtype: Dtype, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=False,
                   kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32,
                   name=name)


def batch_norm(*, train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


def classifier(num_classes: int, *, dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32,
                    bias_init=nn.initializers.zeros, name=name)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch's MaxPool2d(3, stride=2, padding=1): padding never wins the max."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


avg_pool_2x2 = functools.partial(nn.avg_pool, window_shape=(2, 2), strides=(2, 2))


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
