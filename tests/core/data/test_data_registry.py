"""load_dataset: names, the error that lists them, and that it reaches each loader."""

import gzip
import struct

import numpy as np
import pytest

from tlc_jax.data import DATASET_NAMES, ImageDataset, load_dataset


def test_names():
    assert set(DATASET_NAMES) == {
        "cifar10",
        "cifar100",
        "mnist",
        "fashion_mnist",
        "kmnist",
        "image_folder",
        "caltech101",
        "ham10000",
        "digits",
        "synthetic",
    }


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        load_dataset("imagenet", "/data")
    assert "'imagenet'" in str(e.value)
    for name in DATASET_NAMES:
        assert name in str(e.value)


def test_root_required_for_file_datasets():
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("mnist")


def test_root_free_datasets():
    digits = load_dataset("Digits")
    assert isinstance(digits, ImageDataset) and len(digits) == 1797
    syn = load_dataset("synthetic", num_classes=3, per_class=2, image_size=4, channels=3, seed=1)
    assert syn.images.shape == (6, 4, 4, 3)


def test_fashion_mnist_by_name(tmp_path):
    for prefix, n in (("train", 3), ("t10k", 2)):
        images = np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)
        labels = np.arange(n, dtype=np.uint8)
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + images.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())
    ds = load_dataset("Fashion-MNIST", tmp_path, split="test")
    assert len(ds) == 2 and ds.class_names[1] == "Trouser"
