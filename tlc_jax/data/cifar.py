"""CIFAR-10 / CIFAR-100 from the official "python version" archives.

Reads `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` directly (no extraction
needed) or their extracted folders. The batches are pickles, so they are read with an
unpickler that only accepts what these files contain (dicts, lists, bytes, numpy
arrays): a tampered file cannot run code.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlc_jax import fileio
from tlc_jax.data._files import missing_file_error
from tlc_jax.data.dataset import ImageDataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


@dataclasses.dataclass(frozen=True)
class _Layout:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str


_CIFAR10 = _Layout(
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
)
_CIFAR100 = _Layout("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), "meta")

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of a CIFAR batch"
            )
        return super().find_class(module, name)


def _unpickle(data: bytes, source: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # Anything a malformed pickle raises.
        raise ValueError(f"{source} is not a readable CIFAR pickle: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{source} holds a {type(obj).__name__}, expected a dict")
    return obj


def _read_from_tar(archive: Path, layout: _Layout, names: Sequence[str]) -> dict[str, bytes]:
    wanted = {f"{layout.folder}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # One pass: a .tar.gz has no random access.
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    found[wanted[name]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise ValueError(
            f"could not read the archive {str(archive)!r} ({e}); it is probably truncated or "
            "corrupt: delete it and download it again"
        ) from e
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(
            f"the archive {str(archive)!r} lacks "
            f"{', '.join(f'{layout.folder}/{m}' for m in missing)}; "
            f"is it the official {layout.archive}?"
        )
    return found


def _read_files(
    root: Path, layout: _Layout, names: Sequence[str], download: bool, url: str, md5: str | None
) -> tuple[dict[str, bytes], str]:
    """The raw bytes of `names`, from the extracted folder or the archive (downloading it)."""
    for folder in (root / layout.folder, root):
        if (folder / layout.meta).is_file():
            for n in names:
                if not (folder / n).is_file():
                    raise missing_file_error(f"CIFAR ({layout.folder})", [n], folder)
            return {n: (folder / n).read_bytes() for n in names}, str(folder)
    archive = root / layout.archive
    if not archive.is_file():
        if not download:
            if (root / layout.folder).is_dir():  # A partly extracted folder, and no archive.
                raise missing_file_error(
                    f"CIFAR ({layout.folder})", [layout.meta], root / layout.folder
                )
            raise missing_file_error(
                "CIFAR",
                [layout.archive, f"{layout.folder}/"],
                root,
                f"Pass download=True to fetch it from {url}, or download it by hand and put "
                "it in that folder",
            )
        fileio.download(url, archive, md5, algorithm="md5")
    return _read_from_tar(archive, layout, names), str(archive)


def _load(
    root: str | os.PathLike,
    split: str,
    layout: _Layout,
    label_key: bytes,
    names_key: bytes,
    download: bool,
    url: str,
    md5: str | None,
) -> ImageDataset:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    batch_names = layout.train if split == "train" else layout.test
    raw, source = _read_files(Path(root), layout, (*batch_names, layout.meta), download, url, md5)

    meta = _unpickle(raw[layout.meta], f"{source}:{layout.meta}")
    if names_key not in meta:
        raise ValueError(f"{source}:{layout.meta} has no {names_key!r} entry")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key])

    images, labels = [], []
    for name in batch_names:
        batch = _unpickle(raw[name], f"{source}:{name}")
        if b"data" not in batch or label_key not in batch:
            raise ValueError(f"{source}:{name} lacks b'data' or {label_key!r}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        batch_labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(data):
            raise ValueError(
                f"{source}:{name}: data has shape {data.shape} and {len(batch_labels)} labels; "
                "expected (N, 3072) and N labels"
            )
        images.append(data)
        labels.append(batch_labels)
    data = np.concatenate(images)
    # Stored as CHW rows (1024 red, 1024 green, 1024 blue); the library uses NHWC.
    hwc = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return ImageDataset(images=hwc, labels=np.concatenate(labels), class_names=class_names)


def load_cifar10(
    root: str | os.PathLike,
    split: str = "train",
    *,
    download: bool = False,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> ImageDataset:
    """CIFAR-10 `split` ('train': 50,000, 'test': 10,000) from `root`.

    `root` holds `cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/` (or is
    that folder). With `download`, a missing archive is fetched from `url` and checked
    against `md5` (override both to use a mirror).
    """
    return _load(root, split, _CIFAR10, b"labels", b"label_names", download, url, md5)


def load_cifar100(
    root: str | os.PathLike,
    split: str = "train",
    *,
    label_type: str = "fine",
    download: bool = False,
    url: str = CIFAR100_URL,
    md5: str | None = CIFAR100_MD5,
) -> ImageDataset:
    """CIFAR-100 `split` from `root`, as `load_cifar10`.

    `label_type`: 'fine' (100 classes) or 'coarse' (20 superclasses).
    """
    if label_type not in ("fine", "coarse"):
        raise ValueError(f"label_type must be 'fine' or 'coarse', got {label_type!r}")
    key = label_type.encode()
    return _load(
        root, split, _CIFAR100, key + b"_labels", key + b"_label_names", download, url, md5
    )
