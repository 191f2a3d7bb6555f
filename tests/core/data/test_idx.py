"""MNIST-family IDX files, plain and gzipped, written by the test in the real format."""


import numpy as np
import pytest

from tlc_jax.data import load_dataset, load_fashion_mnist, load_kmnist, load_mnist
from tlc_jax.data.idx import read_idx

from helpers import write_idx


def write_mnist_like(folder, n_train=6, n_test=4, seed=0, gz_test=True):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n, gz in (("train", n_train, False), ("t10k", n_test, gz_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        arrays[prefix] = (images, labels)
    return arrays


def test_mnist_plain_and_gz(tmp_path):
    arrays = write_mnist_like(tmp_path)
    train = load_mnist(tmp_path)
    assert train.images.shape == (6, 28, 28, 1) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(train.labels, arrays["train"][1])
    assert train.class_names == tuple("0123456789")
    test = load_mnist(tmp_path, split="test")  # From the .gz files.
    np.testing.assert_array_equal(test.images[..., 0], arrays["t10k"][0])
    np.testing.assert_array_equal(test.labels, arrays["t10k"][1])


def test_family_class_names(tmp_path):
    write_mnist_like(tmp_path)
    fashion = load_fashion_mnist(tmp_path)
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    kmnist = load_dataset("KMNIST", tmp_path, split="test")
    assert kmnist.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert load_kmnist(tmp_path).num_classes == 10


def test_read_idx_other_types(tmp_path):
    values = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    write_idx(tmp_path / "x.idx", values, type_code=0x0C)
    out = read_idx(tmp_path / "x.idx")
    np.testing.assert_array_equal(out, values)
    assert out.dtype.isnative


def test_bad_magic(tmp_path):
    write_mnist_like(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*not an IDX file"):
        load_mnist(tmp_path)


def test_truncated_file(tmp_path):
    write_mnist_like(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        load_mnist(tmp_path)


def test_truncated_gzip(tmp_path):
    write_mnist_like(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path, "test")


def test_count_mismatch(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="6 images.*5 labels"):
        load_mnist(tmp_path)


def test_labels_out_of_range(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 10, 3, 10], np.uint8))
    with pytest.raises(ValueError, match="out of range.*bad values 10"):
        load_mnist(tmp_path)


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_fashion_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(e.value) and "train-images-idx3-ubyte.gz" in str(
        e.value
    )
    assert str(tmp_path) in str(e.value)
