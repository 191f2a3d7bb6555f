"""scikit-learn's 8x8 handwritten digits: 1,797 images that ship with scikit-learn.

Needs no download, so it is the default for examples and smoke runs on any machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
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


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels): scikit-learn's digits.csv.gz, read without
    importing scikit-learn (2 s of every run's start-up); its own loader if the file
    has moved."""
    spec = importlib.util.find_spec("sklearn")  # Finds the package, runs none of it.
    path = (Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
            if spec and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_load_digits

        bunch = sklearn_load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def load_digits(
    *, image_size: int | Sequence[int] | None = None, channels: int = 1
) -> ImageDataset:
    """The digits as uint8 (N, 8, 8, 1), 0..16 scaled to 0..255.

    `image_size` upsamples (nearest) to (height, width) or a square; `channels=3`
    repeats the grey channel for RGB models.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    pixels, labels = _digits_table()
    images = np.rint(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).clip(0, 255).astype(
        np.uint8)[..., None]
    if image_size is not None:
        images = resize_nearest(images, image_size_hw(image_size))
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return ImageDataset(
        images=images, labels=labels, class_names=tuple(str(d) for d in range(10))
    )
