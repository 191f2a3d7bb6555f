"""Datasets for long-tailed classification: loaders, long-tail construction, splits.

Every loader returns an `ImageDataset` (uint8 NHWC images, int32 labels, class names,
optional group ids). `load_dataset(name, root, **kw)` picks a loader by name.
"""

from __future__ import annotations

import dataclasses
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
from tlc_jax.data.splits import split_class_counts, split_indices
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


def _folder_options(cfg: Any, *, exclude: bool = True) -> dict[str, Any]:
    """Image folders: decoded at config.data.image_size (224 px by default)."""
    opts = dict(image_size=cfg.image_size or 224, skip_corrupt=cfg.skip_corrupt,
                cache_dir=cfg.cache_dir or None)
    if exclude:
        opts["exclude_classes"] = tuple(cfg.exclude_classes)
    return opts


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset kind: its loader, whether it ships its own test set, and which loader
    options the trainer's `config.data` sets for it."""

    load: Callable[..., ImageDataset]
    has_test_set: bool = False  # True: load(split="train") / load(split="test").
    needs_root: bool = True
    options: Callable[[Any], dict[str, Any]] = lambda cfg: {}


SOURCES: dict[str, Source] = {
    "cifar10": Source(load_cifar10, True, options=lambda c: dict(download=c.download)),
    "cifar100": Source(load_cifar100, True, options=lambda c: dict(download=c.download)),
    "mnist": Source(load_mnist, True),
    "fashion_mnist": Source(load_fashion_mnist, True),
    "kmnist": Source(load_kmnist, True),
    "image_folder": Source(load_image_folder, options=_folder_options),
    "caltech101": Source(_load_caltech101, options=_folder_options),
    "ham10000": Source(load_ham10000,
                       options=lambda c: _folder_options(c, exclude=False)),
    "digits": Source(_no_root(load_digits), needs_root=False, options=lambda c: dict(
        image_size=c.image_size or None, channels=c.channels)),
    "synthetic": Source(_no_root(synthetic), needs_root=False),
}

DATASET_NAMES = tuple(SOURCES)


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_BY_KEY = {_normalise(n): n for n in DATASET_NAMES}


def source(name: str) -> Source:
    """The dataset kind called `name` (case, '-', '_' and spaces ignored: 'CIFAR-100'
    is 'cifar100')."""
    key = _BY_KEY.get(_normalise(name))
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return SOURCES[key]


def load_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> ImageDataset:
    """Loads dataset `name` from `root` (ignored by 'digits' and 'synthetic').

    `kwargs` go to the loader (e.g. split='test', image_size=224, download=True).
    """
    src = source(name)
    if root is None and src.needs_root:
        raise ValueError(f"dataset {name!r} needs root, the folder that holds its files")
    return src.load(root, **kwargs)


def load_from_config(cfg: Any, **kwargs: Any) -> ImageDataset:
    """`load_dataset` with the options a trainer `config.data` sets for its kind.
    Missing files are reported with the config flags that fix them."""
    src = source(cfg.name)
    if not cfg.root and src.needs_root:
        raise ValueError(f"config.data.root is empty, and dataset {cfg.name!r} reads its "
                         f"files from a folder: set --config.data.root=DIR.")
    try:
        return load_dataset(cfg.name, cfg.root or None, **src.options(cfg), **kwargs)
    except FileNotFoundError as e:
        message = str(e).replace("Pass download=True", "Pass --config.data.download=true")
        raise FileNotFoundError(f"{message.rstrip('.')}. Or point --config.data.root=DIR "
                                f"at the folder that holds them.") from e


__all__ = [
    "ChecksumError",
    "CorruptImageError",
    "DATASET_NAMES",
    "DownloadError",
    "ImageDataset",
    "SOURCES",
    "Source",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_from_config",
    "load_digits",
    "load_fashion_mnist",
    "load_ham10000",
    "load_image_folder",
    "load_kmnist",
    "load_mnist",
    "longtail_counts",
    "longtail_indices",
    "make_longtailed",
    "open_saved_dataset",
    "save_dataset",
    "split_class_counts",
    "source",
    "split_indices",
    "synthetic",
]
