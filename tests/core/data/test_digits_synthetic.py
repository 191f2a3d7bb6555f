"""scikit-learn's embedded digits and the synthetic generator."""

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from tlc_jax.data import load_dataset, load_digits, synthetic


def test_digits_default():
    ds = load_digits()
    raw = sklearn_digits()
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.images.min() == 0 and ds.images.max() == 255
    np.testing.assert_array_equal(ds.images[..., 0], np.rint(raw.images * 255 / 16))
    np.testing.assert_array_equal(ds.labels, raw.target)
    assert ds.class_names == tuple("0123456789")


def test_digits_fall_back_to_scikit_learns_loader(monkeypatch):
    """Where scikit-learn's digits.csv.gz is not found, its own loader gives the same."""
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    ds = load_digits()
    np.testing.assert_array_equal(ds.images[..., 0], np.rint(sklearn_digits().images * 255 / 16))
    np.testing.assert_array_equal(ds.labels, sklearn_digits().target)


def test_digits_upsampled_rgb():
    small = load_digits()
    big = load_dataset("digits", image_size=32, channels=3)
    assert big.images.shape == (1797, 32, 32, 3)
    # Nearest neighbour by 4: each 4x4 block repeats one pixel; channels are equal.
    np.testing.assert_array_equal(big.images[:, ::4, ::4, 0], small.images[..., 0])
    np.testing.assert_array_equal(big.images[:, 3::4, 1::4, 2], small.images[..., 0])
    odd = load_digits(image_size=(12, 20))
    assert odd.images.shape == (1797, 12, 20, 1)
    with pytest.raises(ValueError, match="channels"):
        load_digits(channels=2)


def test_synthetic_is_deterministic_and_class_dependent():
    a = synthetic(num_classes=4, per_class=[30, 20, 10, 5], image_size=(6, 5), channels=3, seed=7)
    b = synthetic(num_classes=4, per_class=[30, 20, 10, 5], image_size=(6, 5), channels=3, seed=7)
    c = synthetic(num_classes=4, per_class=[30, 20, 10, 5], image_size=(6, 5), channels=3, seed=8)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (65, 6, 5, 3)
    np.testing.assert_array_equal(a.class_counts(), [30, 20, 10, 5])
    # Learnable: nearest class mean (from even images) classifies the odd images.
    x = a.images.reshape(len(a), -1).astype(np.float32)
    train, test = np.arange(len(a)) % 2 == 0, np.arange(len(a)) % 2 == 1
    means = np.stack([x[train & (a.labels == k)].mean(0) for k in range(4)])
    predicted = np.argmin(((x[test][:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == a.labels[test]).mean() == 1.0


def test_synthetic_bad_input():
    with pytest.raises(ValueError, match="per_class"):
        synthetic(num_classes=3, per_class=[1, 2])
    with pytest.raises(ValueError, match="per_class"):
        synthetic(num_classes=2, per_class=2.5)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic(num_classes=0)
