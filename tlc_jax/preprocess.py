"""What every image goes through before the model, in training and at inference alike.

uint8 NHWC -> float in [0, 1] (`to_float`) -> roughly zero-mean, unit-variance
(`normalize`: ImageNet statistics for RGB, a fixed 0.5 / 0.25 for other channel counts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images_u8: jax.Array) -> jax.Array:
    return images_u8.astype(jnp.float32) / 255.0


def normalize(images: jax.Array) -> jax.Array:
    """[0, 1] -> roughly zero-mean unit-variance (ImageNet statistics for RGB)."""
    if images.shape[-1] == 3:
        mean = jnp.array(IMAGENET_MEAN)[None, None, None, :]
        std = jnp.array(IMAGENET_STD)[None, None, None, :]
        return (images - mean) / std
    return (images - 0.5) / 0.25


def model_input(images_u8: jax.Array) -> jax.Array:
    """uint8 images as the model takes them (no augmentation)."""
    return normalize(to_float(images_u8))
