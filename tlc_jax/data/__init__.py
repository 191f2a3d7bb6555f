"""Datasets for long-tailed classification: loaders, long-tail construction, splits.

Every loader returns an `ImageDataset` (uint8 NHWC images, int32 labels, class names,
optional group ids). `load_dataset(name, root, **kw)` picks a loader by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tlc_jax.data.cifar import load_cifar10, load_cifar100
from tlc_jax.data.dataset import ImageDataset, open_saved_dataset, save_dataset
from tlc_jax.data.decode import CorruptImageError
from tlc_jax.data.digits import load_digits
from tlc_jax.fileio import ChecksumError, DownloadError
from tlc_jax.data.ham10000 import load_ham10000
from tlc_jax.data.idx import load_fashion_mnist, load_kmnist, load_mnist
from tlc_jax.data.image_folder import load_image_folder
from tlc_jax.data.longtail import longtail_counts, longtail_indices, make_longtailed
from tlc_jax.data.splits import (
    load_or_make_split,
    load_split,
    save_split,
    split_class_counts,
    split_indices,
)
from tlc_jax.data.synthetic import synthetic


def _load_caltech101(root: str | os.PathLike, **kw: Any) -> ImageDataset:
    # The official archive extracts to 101_ObjectCategories/; accept it or its parent.
    root = Path(root)
    inner = root / "101_ObjectCategories"
    return load_image_folder(inner if inner.is_dir() else root, **kw)


def _no_root(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
    def load(root: str | os.PathLike | None = None, **kw: Any) -> ImageDataset:
        return fn(**kw)

    return load


_LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "kmnist": load_kmnist,
    "image_folder": load_image_folder,
    "caltech101": _load_caltech101,
    "ham10000": load_ham10000,
    "digits": _no_root(load_digits),
    "synthetic": _no_root(synthetic),
}

DATASET_NAMES = tuple(_LOADERS)


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_BY_KEY = {_normalise(n): n for n in DATASET_NAMES}


def load_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> ImageDataset:
    """Loads dataset `name` from `root` (ignored by 'digits' and 'synthetic').

    Names ignore case, '-', '_' and spaces ('CIFAR-100' is 'cifar100'). `kwargs` go to
    the loader (e.g. split='test', image_size=224, download=True).
    """
    key = _BY_KEY.get(_normalise(name))
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if root is None and key not in ("digits", "synthetic"):
        raise ValueError(f"dataset {name!r} needs root, the folder that holds its files")
    return _LOADERS[key](root, **kwargs)


__all__ = [
    "ChecksumError",
    "CorruptImageError",
    "DATASET_NAMES",
    "DownloadError",
    "ImageDataset",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_ham10000",
    "load_image_folder",
    "load_kmnist",
    "load_mnist",
    "load_or_make_split",
    "load_split",
    "longtail_counts",
    "longtail_indices",
    "make_longtailed",
    "open_saved_dataset",
    "save_dataset",
    "save_split",
    "split_class_counts",
    "split_indices",
    "synthetic",
]
