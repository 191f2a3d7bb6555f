"""ImageDataset validation, subsets, and the atomic .npy-folder form opened with mmap."""

import json
import os

import numpy as np
import pytest

from tlc_jax.data.dataset import ImageDataset, open_saved_dataset, save_dataset


def make(n=6, classes=("a", "b", "c"), groups=None, seed=0):
    rng = np.random.default_rng(seed)
    return ImageDataset(
        images=rng.integers(0, 256, size=(n, 4, 5, 3), dtype=np.uint8),
        labels=np.arange(n) % len(classes),
        class_names=classes,
        groups=groups,
    )


def test_basic_properties():
    ds = make(7, groups=np.array([0, 0, 1, 1, 2, 2, 3]))
    assert len(ds) == 7 and ds.num_classes == 3 and ds.image_shape == (4, 5, 3)
    assert ds.labels.dtype == np.int32 and ds.groups.dtype == np.int64
    np.testing.assert_array_equal(ds.class_counts(), [3, 2, 2])
    assert isinstance(ds.class_names, tuple)


def test_class_counts_include_empty_classes():
    ds = ImageDataset(np.zeros((2, 1, 1, 1), np.uint8), np.array([0, 0]), ("x", "y", "z"))
    np.testing.assert_array_equal(ds.class_counts(), [2, 0, 0])


def test_labels_out_of_range_error_names_the_bad_values():
    with pytest.raises(ValueError, match=r"out of range \[0, 3\).*bad values -1, 7"):
        ImageDataset(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 7, -1, 7]), ("a", "b", "c"))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(images=np.zeros((2, 2, 2, 1), np.float32)), TypeError, "uint8"),
        (dict(images=np.zeros((2, 2, 2), np.uint8)), ValueError, r"\(N, H, W, C\)"),
        (dict(labels=np.array([0, 1, 0])), ValueError, "2 images but 3 labels"),
        (dict(labels=np.array([0.0, 1.0])), TypeError, "integer"),
        (dict(class_names=("a", "a")), ValueError, "unique"),
        (dict(class_names=()), ValueError, "at least one class"),
        (dict(groups=np.array([1])), ValueError, "group ids"),
    ],
)
def test_bad_records_are_rejected(kwargs, error, message):
    args = dict(
        images=np.zeros((2, 2, 2, 1), np.uint8), labels=np.array([0, 1]), class_names=("a", "b")
    )
    args.update(kwargs)
    with pytest.raises(error, match=message):
        ImageDataset(**args)


def test_subset_by_indices_and_mask():
    ds = make(6, groups=np.arange(6) * 10)
    sub = ds.subset([4, 1])
    np.testing.assert_array_equal(sub.images, ds.images[[4, 1]])
    np.testing.assert_array_equal(sub.labels, [1, 1])
    np.testing.assert_array_equal(sub.groups, [40, 10])
    masked = ds.subset(ds.labels == 0)
    np.testing.assert_array_equal(masked.labels, [0, 0])
    assert len(ds.subset([])) == 0
    with pytest.raises(IndexError, match="out of range"):
        ds.subset([0, 6])


def test_save_and_open_with_mmap(tmp_path):
    ds = make(5, groups=np.array([3, 3, 1, 2, 2]))
    save_dataset(ds, tmp_path / "saved", extra={"source": "test"})
    opened = open_saved_dataset(tmp_path / "saved")
    assert isinstance(opened.images, np.memmap)
    np.testing.assert_array_equal(opened.images, ds.images)
    np.testing.assert_array_equal(opened.labels, ds.labels)
    np.testing.assert_array_equal(opened.groups, ds.groups)
    assert opened.class_names == ds.class_names
    assert json.loads((tmp_path / "saved" / "meta.json").read_text())["extra"] == {"source": "test"}
    in_memory = open_saved_dataset(tmp_path / "saved", mmap=False)
    assert not isinstance(in_memory.images, np.memmap)
    assert open_saved_dataset(tmp_path / "saved").subset([1]).labels.tolist() == [1]


def test_save_replaces_atomically_and_cleans_up(tmp_path):
    save_dataset(make(5, seed=1), tmp_path / "saved")
    new = make(3, seed=2)
    save_dataset(new, tmp_path / "saved")
    np.testing.assert_array_equal(open_saved_dataset(tmp_path / "saved").images, new.images)
    # A failure while writing leaves the previous version in place and no temporary folder.
    with pytest.raises(TypeError):
        save_dataset(make(4, seed=3), tmp_path / "saved", extra={"bad": object()})
    np.testing.assert_array_equal(open_saved_dataset(tmp_path / "saved").images, new.images)
    assert os.listdir(tmp_path) == ["saved"]


def test_open_rejects_a_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved dataset"):
        open_saved_dataset(tmp_path)
