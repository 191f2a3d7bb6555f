"""Data augmentation, the TLC paper's two modes.

Online: `augment_batch(key, images)` runs on the device inside the jitted train step,
keyed from the step's RNG, vectorised over the batch (no per-image Python loop): random
crop after zero padding, horizontal flip, and optional colour jitter and cutout.
Offline: `materialize(...)` writes K augmented copies of the training set before
training, using the same transforms.

Images are float arrays (B, H, W, C) in [0, 1] (`to_float` converts uint8); colour
jitter needs 3 channels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tlc_jax.preprocess import to_float


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    crop_padding: int = 4  # Zero padding before the random crop (pixels); 0 = no crop.
    flip: bool = True  # Random horizontal flip with probability 1/2.
    color_jitter: float = 0.0  # Max relative change of brightness/contrast/saturation.
    cutout: int = 0  # Side of the square cut out (set to 0) per image; 0 = off.


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Pads by `padding` zeros on every side, then crops each image at a random offset."""
    if padding == 0:
        return images
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0),
                                                (h, w, img.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def color_jitter(key: jax.Array, images: jax.Array, strength: float) -> jax.Array:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s] per image."""
    if images.shape[-1] != 3:
        raise ValueError(f"color_jitter needs RGB images; got {images.shape[-1]} channels.")
    factors = jax.random.uniform(key, (3, images.shape[0], 1, 1, 1),
                                 minval=1 - strength, maxval=1 + strength)
    x = images * factors[0]
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    x = mean + (x - mean) * factors[1]
    grey = jnp.sum(x * jnp.array([0.299, 0.587, 0.114])[None, None, None, :], axis=-1,
                   keepdims=True)
    x = grey + (x - grey) * factors[2]
    return jnp.clip(x, 0.0, 1.0)


def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """Zeroes a size x size square centred at a random pixel (clipped at the border)."""
    b, h, w, _ = images.shape
    centres = jax.random.randint(key, (b, 2), 0, jnp.array([[h, w]]))
    rows = jnp.arange(h)[None, :] - centres[:, :1] + size // 2  # (B, H)
    cols = jnp.arange(w)[None, :] - centres[:, 1:] + size // 2
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[
        :, None, :]
    return jnp.where(inside[..., None], 0.0, images)


def augment_batch(key: jax.Array, images: jax.Array,
                  options: AugmentOptions = AugmentOptions()) -> jax.Array:
    """All enabled transforms, each with its own key derived from `key`."""
    k_crop, k_flip, k_color, k_cut = jax.random.split(key, 4)
    x = random_crop(k_crop, images, options.crop_padding)
    if options.flip:
        x = random_flip(k_flip, x)
    if options.color_jitter > 0:
        x = color_jitter(k_color, x, options.color_jitter)
    if options.cutout > 0:
        x = cutout(k_cut, x, options.cutout)
    return x


def materialize(images_u8: np.ndarray, copies: int, seed: int,
                options: AugmentOptions = AugmentOptions(),
                chunk: int = 1024) -> np.ndarray:
    """Offline mode: (copies, N, H, W, C) uint8 augmented copies, made chunk by chunk.

    Copy c of image i is keyed by (seed, c, chunk start), so the result does not depend
    on the device; pair it with `np.tile(labels, copies)` after reshaping.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1; got {copies}.")
    out = np.empty((copies, *images_u8.shape), np.uint8)
    run = jax.jit(lambda k, x: jnp.round(augment_batch(k, to_float(x), options) * 255
                                         ).astype(jnp.uint8))
    base = jax.random.key(seed)
    for c in range(copies):
        for start in range(0, len(images_u8), chunk):
            key = jax.random.fold_in(jax.random.fold_in(base, c), start)
            out[c, start:start + chunk] = np.asarray(run(key, images_u8[start:start + chunk]))
    return out
