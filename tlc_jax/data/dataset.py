"""The one record type every loader returns, and its on-disk (.npy folder) form.

Images are kept as uint8 NHWC because that is how every source stores them and it is
4x smaller than float32; conversion and augmentation happen on device. Decoded sets too
big for memory (Caltech101 or HAM10000 at 224 px) live in a folder of .npy files that is
opened with mmap, so `images` may be an `np.memmap`: nothing here copies it whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tlc_jax.fileio import atomic_directory

_FORMAT = "tlc_jax.ImageDataset"
_VERSION = 1
_META = "meta.json"


def _describe_values(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} distinct)" if len(values) > limit else "")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """uint8 images (N, H, W, C), int32 labels (N,), class names, optional int64 groups.

    `groups` ties images that must stay together when splitting (HAM10000: the lesion).
    Labels and groups of any integer dtype are converted; images must already be uint8
    (a silent cast from float would wrap or truncate pixel values).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, np.ndarray):
            raise TypeError(
                f"images must be a numpy array (or np.memmap), got {type(images).__name__}"
            )
        if images.dtype != np.uint8:
            raise TypeError(f"images must have dtype uint8, got {images.dtype}")
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, H, W, C), got shape {images.shape}")

        names = tuple(self.class_names)
        if not names:
            raise ValueError("class_names is empty: a dataset needs at least one class")
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"class_names must be strings, got {names!r}")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"class_names must be unique; repeated: {dupes}")
        object.__setattr__(self, "class_names", names)

        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        bad = (labels < 0) | (labels >= len(names))
        if bad.any():
            bad_values = np.unique(labels[bad])
            first = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(
                f"labels out of range [0, {len(names)}) for {len(names)} class names: "
                f"bad values {_describe_values(bad_values)} ({int(bad.sum())} labels, first at "
                f"indices {first})"
            )
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))

        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.ndim != 1 or not np.issubdtype(groups.dtype, np.integer):
                raise TypeError(
                    f"groups must be a 1-D integer array, got dtype {groups.dtype} shape "
                    f"{groups.shape}"
                )
            if len(groups) != len(images):
                raise ValueError(f"{len(images)} images but {len(groups)} group ids")
            object.__setattr__(self, "groups", groups.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> np.ndarray:
        """Images per class, int64 (num_classes,), zeros included."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """The images at `indices` (integer positions or a boolean mask), in that order.

        Reading a subset of a memmapped set loads only those images into memory.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"boolean mask of shape {idx.shape} for a dataset of {len(self)} images"
                )
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(
                f"indices must be a 1-D integer array or boolean mask, got dtype {idx.dtype} "
                f"shape {idx.shape}"
            )
        out_of_range = (idx < 0) | (idx >= len(self))
        if out_of_range.any():
            raise IndexError(
                f"indices out of range [0, {len(self)}): "
                f"{_describe_values(np.unique(idx[out_of_range]))}"
            )
        return ImageDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            groups=None if self.groups is None else self.groups[idx],
        )


def write_dataset_files(
    folder: Path,
    labels: np.ndarray,
    class_names: Sequence[str],
    groups: np.ndarray | None,
    image_shape: Sequence[int],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Writes everything but images.npy into `folder` (the caller writes the images).

    Split out so that a loader can decode straight into an `open_memmap`'d images.npy
    inside an `atomic_directory` without holding all images in memory.
    """
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int32))
    if groups is not None:
        np.save(folder / "groups.npy", np.asarray(groups, dtype=np.int64))
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "class_names": list(class_names),
        "num_examples": int(len(labels)),
        "image_shape": [int(s) for s in image_shape],
        "has_groups": groups is not None,
        "extra": dict(extra or {}),
    }
    (folder / _META).write_text(json.dumps(meta, indent=1))


def save_dataset(
    dataset: ImageDataset, directory: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> Path:
    """Writes `dataset` as a folder of .npy files plus meta.json, atomically.

    `extra` (JSON-serialisable) is stored in meta.json, e.g. the config that produced it.
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        np.save(tmp / "images.npy", dataset.images)
        write_dataset_files(
            tmp, dataset.labels, dataset.class_names, dataset.groups, dataset.image_shape, extra
        )
    return directory


def read_saved_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a folder written by `save_dataset`; a clear error if it is not one."""
    directory = Path(directory)
    path = directory / _META
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not a saved dataset: no {_META} in it")
    meta = json.loads(path.read_text())
    if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        raise ValueError(
            f"{str(path)!r} has format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"expected {_FORMAT!r} version {_VERSION}"
        )
    return meta


def open_saved_dataset(directory: str | os.PathLike, mmap: bool = True) -> ImageDataset:
    """Opens a folder written by `save_dataset`; with `mmap` images stay on disk (read-only)."""
    directory = Path(directory)
    meta = read_saved_meta(directory)
    images = np.load(directory / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(directory / "labels.npy")
    groups = np.load(directory / "groups.npy") if meta["has_groups"] else None
    if len(labels) != meta["num_examples"] or list(images.shape[1:]) != meta["image_shape"]:
        raise ValueError(
            f"saved dataset {str(directory)!r} is inconsistent: meta.json says "
            f"{meta['num_examples']} images of shape {meta['image_shape']}, the files hold "
            f"{len(labels)} labels and images of shape {images.shape}"
        )
    return ImageDataset(
        images=images, labels=labels, class_names=tuple(meta["class_names"]), groups=groups
    )
