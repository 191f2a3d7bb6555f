"""ImageFolder trees with PNG and JPEG files, a corrupt file, and the array cache."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from tlc_jax.data import CorruptImageError, load_dataset, load_image_folder
from tlc_jax.data import decode as decode_lib


def write_tree(root, corrupt=True):
    """bird/ (PNG: RGBA, palette), cat/ (JPEG: RGB, greyscale; nested folder), dog/ (PNG grey)."""
    (root / "bird").mkdir(parents=True)
    (root / "cat" / "inner").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / ".hidden").mkdir()
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(root / "bird" / "b1.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).convert("P").save(root / "bird" / "b2.PNG")
    Image.new("RGB", (64, 48), (0, 200, 0)).save(root / "cat" / "c1.jpg", quality=95)
    Image.new("L", (33, 17), 90).save(root / "cat" / "inner" / "c2.jpeg")
    Image.new("L", (16, 16), 200).save(root / "dog" / "d1.png")
    (root / "dog" / "notes.txt").write_text("not an image, ignored by extension")
    (root / ".hidden" / "x.png").write_bytes(b"")
    if corrupt:
        (root / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
        good = root / "dog" / "d1.png"
        (root / "dog" / "truncated.png").write_bytes(good.read_bytes()[:40])


def test_corrupt_files_are_all_listed(tmp_path):
    write_tree(tmp_path)
    with pytest.raises(CorruptImageError) as e:
        load_image_folder(tmp_path, image_size=8)
    message = str(e.value)
    assert "2 image file(s)" in message
    assert str(tmp_path / "cat" / "broken.jpg") in message
    assert str(tmp_path / "dog" / "truncated.png") in message
    assert "skip_corrupt=True" in message
    assert sorted(p for p, _ in e.value.failures) == sorted(
        [str(tmp_path / "cat" / "broken.jpg"), str(tmp_path / "dog" / "truncated.png")]
    )


def test_skip_corrupt_loads_the_rest_and_logs_each(tmp_path, caplog):
    write_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_image_folder(tmp_path, image_size=(6, 10), skip_corrupt=True, num_workers=2)
    assert ds.class_names == ("bird", "cat", "dog")
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2])
    assert ds.images.shape == (5, 6, 10, 3) and ds.images.dtype == np.uint8
    assert "broken.jpg" in caplog.text and "truncated.png" in caplog.text


def test_decoded_content(tmp_path):
    write_tree(tmp_path, corrupt=False)
    ds = load_image_folder(tmp_path, image_size=(6, 10))
    b1, b2, c1, c2, d1 = ds.images
    np.testing.assert_array_equal(b1, np.broadcast_to([255, 0, 0], (6, 10, 3)))  # RGBA -> RGB.
    np.testing.assert_array_equal(b2, np.broadcast_to([0, 0, 255], (6, 10, 3)))  # Palette.
    assert np.abs(c1.astype(int) - [0, 200, 0]).max() <= 3  # JPEG: lossy.
    # Grey -> RGB.
    assert np.abs(c2.astype(int) - 90).max() <= 3 and (c2[..., 0] == c2[..., 2]).all()
    np.testing.assert_array_equal(d1, np.full((6, 10, 3), 200))


def test_keep_aspect_crops_instead_of_stretching(tmp_path):
    (tmp_path / "a").mkdir()
    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :15] = 255  # Left quarter white: cut off by a centre crop to a square.
    Image.fromarray(image).save(tmp_path / "a" / "wide.png")
    stretched = load_image_folder(tmp_path, image_size=10).images[0]
    cropped = load_image_folder(tmp_path, image_size=10, keep_aspect=True).images[0]
    assert stretched[:, 0].min() == 255 and cropped.max() == 0


def test_same_result_with_one_or_many_workers(tmp_path):
    write_tree(tmp_path, corrupt=False)
    one = load_image_folder(tmp_path, image_size=12, num_workers=1)
    many = load_image_folder(tmp_path, image_size=12, num_workers=4)
    np.testing.assert_array_equal(one.images, many.images)


def test_cache_second_load_does_not_decode(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", corrupt=False)
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "tree", image_size=9, cache_dir=cache)
    assert isinstance(first.images, np.memmap)
    entries = os.listdir(cache)
    assert len(entries) == 1 and entries[0].startswith("imagefolder-tree-")

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode_lib, "decode_into", fail)
    second = load_image_folder(tmp_path / "tree", image_size=9, cache_dir=cache)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.class_names == first.class_names
    monkeypatch.undo()

    # Another size, or a changed file, is another cache entry.
    load_image_folder(tmp_path / "tree", image_size=7, cache_dir=cache)
    Image.new("L", (16, 16), 10).save(tmp_path / "tree" / "dog" / "d1.png")
    os.utime(tmp_path / "tree" / "dog" / "d1.png", ns=(1, 1))
    changed = load_image_folder(tmp_path / "tree", image_size=9, cache_dir=cache)
    assert changed.images[-1].max() == 10
    assert len(os.listdir(cache)) == 3


def test_cache_with_skipped_files_logs_them_again(tmp_path, caplog):
    write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    with pytest.raises(CorruptImageError):
        load_image_folder(tmp_path / "tree", image_size=5, cache_dir=cache)
    assert os.listdir(cache) == []  # Nothing half-written.
    first = load_image_folder(tmp_path / "tree", image_size=5, cache_dir=cache, skip_corrupt=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = load_image_folder(
            tmp_path / "tree", image_size=5, cache_dir=cache, skip_corrupt=True
        )
    assert len(second) == len(first) == 5
    np.testing.assert_array_equal(second.images, first.images)
    assert "broken.jpg" in caplog.text and "when the cache was built" in caplog.text


def test_bad_trees(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"no .* file: \['b'\]"):
        load_image_folder(tmp_path, image_size=4)
    assert load_image_folder(tmp_path, image_size=4, exclude_classes=["b"]).class_names == ("a",)
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path, image_size=(4, 0), exclude_classes=["b"])


def test_caltech101_layout(tmp_path):
    inner = tmp_path / "101_ObjectCategories"
    for name in ("accordion", "BACKGROUND_Google"):
        (inner / name).mkdir(parents=True)
        Image.new("RGB", (30, 20)).save(inner / name / "image_0001.jpg")
    ds = load_dataset("caltech101", tmp_path, image_size=8, exclude_classes=["BACKGROUND_Google"])
    assert ds.class_names == ("accordion",) and ds.images.shape == (1, 8, 8, 3)
