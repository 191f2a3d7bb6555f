"""MNIST-family IDX files (MNIST, Fashion-MNIST, KMNIST share the format).

IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32, then the data. The header is checked against the file size, so a
truncated download fails here with the file's name, not later with a reshape error.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from tlc_jax.data._files import find_first, missing_file_error
from tlc_jax.data.dataset import ImageDataset

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# KMNIST's ten hiragana, romanised (Clanuwat et al. 2018).
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (plain or .gz) into an array of its declared type and shape."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"could not read IDX file {str(path)!r}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{str(path)!r} is not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}, expected "
            "0000 followed by a type code (08 = ubyte) and the number of dimensions"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{str(path)!r}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{str(path)!r}: header declares shape {shape} ({expected} bytes with the header) "
            f"but the file has {len(raw)} bytes; it is truncated or corrupt"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _candidates(prefix: str, kind: str, rank: int) -> list[str]:
    # Official names are `train-images-idx3-ubyte`; some mirrors use `train-images.idx3-ubyte`.
    names = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    return [n + ext for n in names for ext in ("", ".gz")]


def load_idx_dataset(
    root: str | os.PathLike, split: str, class_names: tuple[str, ...], name: str = "IDX"
) -> ImageDataset:
    """Images and labels of `split` ('train' or 'test' = t10k) from the IDX files in `root`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind, rank in (("images", 3), ("labels", 1)):
        names = _candidates(prefix, kind, rank)
        path = find_first(root, names)
        if path is None:
            raise missing_file_error(f"{name} {split} {kind}", names, root)
        array = read_idx(path)
        if array.ndim != rank or array.dtype != np.uint8:
            raise ValueError(
                f"{str(path)!r}: expected {rank}-D ubyte {kind}, got {array.ndim}-D {array.dtype}"
            )
        arrays.append((path, array))
    (image_path, images), (label_path, labels) = arrays
    if len(images) != len(labels):
        raise ValueError(
            f"{str(image_path)!r} holds {len(images)} images but {str(label_path)!r} "
            f"{len(labels)} labels"
        )
    return ImageDataset(images=images[..., None], labels=labels, class_names=class_names)


def load_mnist(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """MNIST (28x28x1, classes '0'..'9') from the IDX files in `root`."""
    return load_idx_dataset(root, split, MNIST_CLASSES, "MNIST")


def load_fashion_mnist(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """Fashion-MNIST from the IDX files in `root`."""
    return load_idx_dataset(root, split, FASHION_MNIST_CLASSES, "Fashion-MNIST")


def load_kmnist(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """KMNIST (Kuzushiji-MNIST, 10 classes) from the IDX files in `root`."""
    return load_idx_dataset(root, split, KMNIST_CLASSES, "KMNIST")
