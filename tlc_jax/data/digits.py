"""scikit-learn's 8x8 handwritten digits: 1,797 images that ship with scikit-learn.

Needs no download, so it is the default for examples and smoke runs on any machine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tlc_jax.data.dataset import ImageDataset
from tlc_jax.data.decode import image_size_hw


def resize_nearest(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W, C) to `size`; integer factors repeat pixels exactly."""
    n, h, w, c = images.shape
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    return np.ascontiguousarray(images[:, rows][:, :, cols])


def load_digits(
    *, image_size: int | Sequence[int] | None = None, channels: int = 1
) -> ImageDataset:
    """The digits as uint8 (N, 8, 8, 1), 0..16 scaled to 0..255.

    `image_size` upsamples (nearest) to (height, width) or a square; `channels=3`
    repeats the grey channel for RGB models.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    if image_size is not None:
        images = resize_nearest(images, image_size_hw(image_size))
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return ImageDataset(
        images=images, labels=bunch.target, class_names=tuple(str(d) for d in range(10))
    )
