"""Decoding image files (JPEG / PNG) into a uint8 array, in parallel, optionally cached.

Shared by the ImageFolder and HAM10000 loaders. Pillow releases the GIL while it
decodes and resizes, so a thread pool scales with cores without pickling images
between processes. JPEGs are decoded at a reduced DCT scale when much larger than the
target (`Image.draft`), which is most of the speed for 224 px from 600x450 photos.
A corrupt file is an error that lists every corrupt file, unless `skip_corrupt`.
The optional cache is a `save_dataset` folder keyed by the config and the files'
names, sizes and modification times; images are decoded straight into its memmapped
images.npy, so a set larger than memory can be cached, and a second load only opens it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from tlc_jax.fileio import atomic_directory
from tlc_jax.data.dataset import (
    ImageDataset,
    open_saved_dataset,
    read_saved_meta,
    write_dataset_files,
)

_CACHE_VERSION = 1


class CorruptImageError(ValueError):
    """One or more image files could not be decoded; `.failures` lists (path, reason)."""

    def __init__(self, failures: Sequence[tuple[str, str]]):
        self.failures = list(failures)
        lines = "\n".join(f"  {path}: {reason}" for path, reason in self.failures)
        super().__init__(
            f"{len(self.failures)} image file(s) could not be decoded (pass skip_corrupt=True "
            f"to skip them):\n{lines}"
        )


def image_size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`size` as (height, width): an int means a square."""
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        hw = tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def decode_image(
    path: str | os.PathLike, size: tuple[int, int], keep_aspect: bool = False
) -> np.ndarray:
    """One file as uint8 (height, width, 3) RGB.

    Resized to exactly `size` (bilinear, antialiased); with `keep_aspect` the shorter side
    is resized and the centre cropped, instead of stretching.
    """
    from PIL import Image, ImageOps

    height, width = size
    with Image.open(path) as im:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale while that is still >= size.
        im.draft("RGB", (width, height))
        im = im.convert("RGB")
        if keep_aspect:
            im = ImageOps.fit(im, (width, height), method=Image.Resampling.BILINEAR)
        elif im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _decode_chunk(
    paths: Sequence[str], start: int, out: np.ndarray, size: tuple[int, int], keep_aspect: bool
) -> list[tuple[int, str]]:
    failures = []
    for offset, path in enumerate(paths):
        try:
            out[start + offset] = decode_image(path, size, keep_aspect)
        except MemoryError:
            raise
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... per format.
            failures.append((start + offset, f"{type(e).__name__}: {e}"))
    return failures


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # Respects CPU pinning in containers.
    except AttributeError:
        return os.cpu_count() or 1


def decode_into(
    paths: Sequence[str], out: np.ndarray, keep_aspect: bool = False, num_workers: int | None = None
) -> list[tuple[int, str]]:
    """Decodes `paths[i]` into `out[i]` with a thread pool; returns (index, reason) per failure."""
    size = (out.shape[1], out.shape[2])
    workers = num_workers or _available_cpus()
    chunk = max(1, min(64, len(paths) // (4 * workers) or 1))
    failures: list[tuple[int, str]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_decode_chunk, paths[i : i + chunk], i, out, size, keep_aspect)
            for i in range(0, len(paths), chunk)
        ]
        for future in futures:
            failures.extend(future.result())
    return sorted(failures)


def _cache_key(
    paths: Sequence[str],
    base: Path,
    labels: np.ndarray,
    groups: np.ndarray | None,
    config: Mapping[str, Any],
) -> str:
    digest = hashlib.sha256(
        json.dumps({"version": _CACHE_VERSION, **config}, sort_keys=True).encode()
    )
    for i, path in enumerate(paths):
        st = os.stat(path)
        rel = os.path.relpath(path, base)
        group = -1 if groups is None else int(groups[i])
        digest.update(
            f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{int(labels[i])}\0{group}\n".encode()
        )
    return digest.hexdigest()[:20]


def _log_skipped(skipped: Sequence[Sequence[str]], cached: bool) -> None:
    when = " (when the cache was built)" if cached else ""
    for path, reason in skipped:
        logging.warning("Skipped corrupt image %s%s: %s", path, when, reason)
    if skipped:
        logging.warning("Skipped %d corrupt image file(s)%s", len(skipped), when)


def _decode_checked(paths: Sequence[str], images: np.ndarray, keep_aspect: bool,
                    num_workers: int | None, skip_corrupt: bool
                    ) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    """Decodes into `images`; (mask of the images kept or None for all, skipped
    (path, reason) pairs). Undecodable images are an error unless `skip_corrupt`."""
    start = time.perf_counter()
    failures = decode_into(paths, images, keep_aspect, num_workers)
    logging.info("Decoded %d images in %.1f s", len(paths), time.perf_counter() - start)
    named = [(str(paths[i]), reason) for i, reason in failures]
    if named and not skip_corrupt:
        raise CorruptImageError(named)
    _log_skipped(named, cached=False)
    keep = None
    if failures:
        keep = np.ones(len(paths), dtype=bool)
        keep[[i for i, _ in failures]] = False
    return keep, named


def _compact_memmap(folder: Path, images: np.memmap, keep: np.ndarray) -> None:
    """Rewrites folder/images.npy with only the kept images, in chunks (the set may
    not fit in memory)."""
    kept = np.lib.format.open_memmap(folder / "kept.npy", mode="w+", dtype=np.uint8,
                                     shape=(int(keep.sum()), *images.shape[1:]))
    kept_idx = np.flatnonzero(keep)
    for i in range(0, len(kept_idx), 1024):
        kept[i : i + 1024] = images[kept_idx[i : i + 1024]]
    kept.flush()
    del kept
    os.replace(folder / "kept.npy", folder / "images.npy")


def _open_cached(target: Path, key: str) -> ImageDataset | None:
    """The cache entry at `target` if it was made with `key`, else None."""
    if (target / "meta.json").is_file():
        meta = read_saved_meta(target)
        if meta["extra"].get("cache_key") == key:
            logging.info("Opening cached images %s", target)
            _log_skipped(meta["extra"].get("skipped", []), cached=True)
            return open_saved_dataset(target, mmap=True)
    return None


def decode_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    groups: np.ndarray | None = None,
    *,
    image_size: int | Sequence[int] = 224,
    keep_aspect: bool = False,
    skip_corrupt: bool = False,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_name: str = "images",
    base: str | os.PathLike | None = None,
) -> ImageDataset:
    """Decodes `paths` into an ImageDataset (RGB, `image_size`), optionally through a cache.

    With `cache_dir`, the result is stored in `cache_dir/<cache_name>-<key>/` and opened
    memory-mapped; the key covers the config and each file's path relative to `base`,
    size and mtime, so a changed file or option makes a new cache entry.
    """
    size = image_size_hw(image_size)
    labels = np.asarray(labels)
    config = {
        "image_size": list(size),
        "keep_aspect": keep_aspect,
        "skip_corrupt": skip_corrupt,
        "class_names": list(class_names),
    }
    shape = (len(paths), *size, 3)
    if cache_dir is None:
        images = np.empty(shape, dtype=np.uint8)
        keep, _ = _decode_checked(paths, images, keep_aspect, num_workers, skip_corrupt)
        if keep is not None:
            images, labels = images[keep], labels[keep]
            groups = None if groups is None else np.asarray(groups)[keep]
        return ImageDataset(
            images=images, labels=labels, class_names=tuple(class_names), groups=groups
        )

    base = (
        Path(base)
        if base is not None
        else Path(os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else ".")
    )
    key = _cache_key(paths, base, labels, groups, config)
    target = Path(cache_dir) / f"{cache_name}-{key}"
    cached = _open_cached(target, key)
    if cached is not None:
        return cached

    with atomic_directory(target) as tmp:
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape
        )
        keep, skipped = _decode_checked(paths, images, keep_aspect, num_workers,
                                        skip_corrupt)
        if keep is not None:
            _compact_memmap(tmp, images, keep)
            labels = labels[keep]
            groups = None if groups is None else np.asarray(groups)[keep]
        else:
            images.flush()
        del images
        extra = {
            "cache_key": key,
            "config": config,
            "skipped": [list(s) for s in skipped],
            "files": [
                os.path.relpath(p, base) for i, p in enumerate(paths) if keep is None or keep[i]
            ],
        }
        write_dataset_files(tmp, labels, class_names, groups, (*size, 3), extra)
    return open_saved_dataset(target, mmap=True)
