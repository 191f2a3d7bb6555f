"""ImageFolder trees: one subfolder per class (Caltech101's `101_ObjectCategories` is one).

Class names are the sorted subfolder names, so class indices do not depend on the
filesystem's listing order; files inside a class folder (searched recursively) are
sorted too, so the same tree always gives the same arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tlc_jax.data.dataset import ImageDataset
from tlc_jax.data.decode import decode_dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_image_folder(
    root: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude_classes: Sequence[str] = (),
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """(file paths, labels, class names) of an ImageFolder tree, without decoding anything.

    Hidden files and folders (names starting with '.') are ignored; extensions match
    case-insensitively. A class folder with no image file is an error naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    exts = tuple(e.lower() for e in extensions)
    unknown = set(exclude_classes) - {p.name for p in root.iterdir() if p.is_dir()}
    if unknown:
        raise ValueError(
            f"exclude_classes names folders that are not in {str(root)!r}: {sorted(unknown)}"
        )
    class_names = tuple(
        sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in exclude_classes
        )
    )
    if not class_names:
        raise FileNotFoundError(
            f"image folder {str(root)!r} has no class subfolders (expected one folder per class)"
        )
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(class_names):
        found = []
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                os.path.join(dirpath, f)
                for f in filenames
                if not f.startswith(".") and f.lower().endswith(exts)
            )
        if not found:
            empty.append(name)
        found.sort()
        paths.extend(found)
        labels.extend([label] * len(found))
    if empty:
        raise FileNotFoundError(
            f"class folder(s) in {str(root)!r} with no {'/'.join(exts)} file: {empty}; remove "
            "them or pass exclude_classes"
        )
    return paths, np.asarray(labels, dtype=np.int32), class_names


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int | Sequence[int] = 224,
    keep_aspect: bool = False,
    skip_corrupt: bool = False,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude_classes: Sequence[str] = (),
) -> ImageDataset:
    """Decodes an ImageFolder tree to RGB uint8 of `image_size` ((height, width) or int).

    Corrupt files raise `CorruptImageError` listing all of them, or with `skip_corrupt`
    are left out and logged. `cache_dir` stores the decoded arrays (see `decode_dataset`).
    """
    paths, labels, class_names = list_image_folder(root, extensions, exclude_classes)
    return decode_dataset(
        paths,
        labels,
        class_names,
        image_size=image_size,
        keep_aspect=keep_aspect,
        skip_corrupt=skip_corrupt,
        num_workers=num_workers,
        cache_dir=cache_dir,
        cache_name=f"imagefolder-{Path(root).resolve().name}",
        base=root,
    )
