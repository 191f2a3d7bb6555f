"""What every image goes through before the model, in training and at inference alike.

uint8 NHWC -> float in [0, 1] (`to_float`) -> roughly zero-mean, unit-variance
(`normalize`: for RGB the statistics the model's weights expect - ImageNet's, or the
model's own `input_mean` / `input_std` where it declares them, as EfficientNet-Lite does
(TensorFlow's (pixel - 127) / 128) -; a fixed 0.5 / 0.25 for other channel counts).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images_u8: jax.Array) -> jax.Array:
    return images_u8.astype(jnp.float32) / 255.0


def input_statistics(model: Any = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on [0, 1] RGB pixels for `model`: its `input_mean` /
    `input_std` attributes if it has them, else ImageNet's (torchvision's models)."""
    return (tuple(getattr(model, "input_mean", IMAGENET_MEAN)),
            tuple(getattr(model, "input_std", IMAGENET_STD)))


def normalize(images: jax.Array, model: Any = None) -> jax.Array:
    """[0, 1] -> roughly zero-mean unit-variance (see the module docstring)."""
    if images.shape[-1] == 3:
        mean, std = input_statistics(model)
        mean, std = (jnp.array(v).reshape(1, 1, 1, 3) for v in (mean, std))
        return (images - mean) / std
    return (images - 0.5) / 0.25


def model_input(images_u8: jax.Array, model: Any = None) -> jax.Array:
    """uint8 images as `model` takes them (no augmentation)."""
    return normalize(to_float(images_u8), model)
