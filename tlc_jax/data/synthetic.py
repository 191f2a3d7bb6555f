"""A synthetic, learnable image set for tests and benchmarks: no files, fully seeded.

Each class has a random prototype image; its examples are the prototype plus pixel
noise, so a small model separates the classes quickly, and long-tail, split and sampler
code can be exercised at any size and imbalance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tlc_jax.data.dataset import ImageDataset
from tlc_jax.data.decode import image_size_hw


def synthetic(
    num_classes: int = 10,
    per_class: int | Sequence[int] = 10,
    image_size: int | Sequence[int] = 8,
    channels: int = 1,
    seed: int = 0,
    noise: float = 24.0,
) -> ImageDataset:
    """Images sorted by class: `per_class` (an int, or one count per class) of each.

    Same arguments, same bytes. `noise` is the pixel noise's standard deviation (0..255 scale).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    counts = np.asarray(per_class)
    if counts.ndim == 0:
        counts = np.full(num_classes, counts)
    if (
        counts.shape != (num_classes,)
        or not np.issubdtype(counts.dtype, np.integer)
        or (counts < 0).any()
    ):
        raise ValueError(
            f"per_class must be a non-negative int or {num_classes} counts, got {per_class!r}"
        )
    h, w = image_size_hw(image_size)
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, h, w, channels)).astype(np.float32)
    counts = counts.astype(np.int64)
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), counts)
    images = np.empty((len(labels), h, w, channels), dtype=np.uint8)
    start = 0
    for k, n in enumerate(counts.tolist()):  # Per class: float temporaries stay small.
        sample = prototypes[k] + noise * rng.standard_normal((n, h, w, channels), dtype=np.float32)
        images[start : start + n] = np.rint(sample).clip(0, 255)
        start += n
    return ImageDataset(
        images=images, labels=labels, class_names=tuple(f"class_{k}" for k in range(num_classes))
    )
