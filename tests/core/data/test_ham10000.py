"""HAM10000 from a metadata CSV in the real layout and images in two part folders."""

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from tlc_jax.data import CorruptImageError, load_dataset, load_ham10000, split_indices
from tlc_jax.data.ham10000 import HAM10000_CLASSES

HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def write_ham(root, rows, size=(30, 40)):
    """rows: (lesion_id, image_id, dx); images alternate between the two part folders."""
    root.mkdir(parents=True, exist_ok=True)
    for part in (1, 2):
        (root / f"HAM10000_images_part_{part}").mkdir(exist_ok=True)
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i, (lesion, image, dx) in enumerate(rows):
            writer.writerow([lesion, image, dx, "histo", "50.0", "male", "back"])
            colour = (HAM10000_CLASSES.index(dx) * 30 if dx in HAM10000_CLASSES else 0, 100, 50)
            folder = root / f"HAM10000_images_part_{1 + i % 2}"
            Image.new("RGB", size, colour).save(folder / f"{image}.jpg", quality=95)


ROWS = [
    ("HAM_0000118", "ISIC_0027419", "bkl"),
    ("HAM_0000118", "ISIC_0025030", "bkl"),
    ("HAM_0002730", "ISIC_0026769", "bkl"),
    ("HAM_0001466", "ISIC_0031633", "nv"),
    ("HAM_0001466", "ISIC_0027850", "nv"),
    ("HAM_0001466", "ISIC_0029176", "nv"),
    ("HAM_0002761", "ISIC_0029068", "mel"),
    ("HAM_0005132", "ISIC_0025837", "vasc"),
    ("HAM_0001396", "ISIC_0025276", "akiec"),
    ("HAM_0004234", "ISIC_0029396", "bcc"),
    ("HAM_0001949", "ISIC_0025767", "df"),
]


def test_load(tmp_path):
    write_ham(tmp_path, ROWS)
    ds = load_ham10000(tmp_path, image_size=16)
    assert ds.class_names == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert ds.images.shape == (11, 16, 16, 3)
    np.testing.assert_array_equal(ds.labels, [HAM10000_CLASSES.index(dx) for _, _, dx in ROWS])
    # Image order follows the CSV; the colour encodes the class.
    assert np.abs(ds.images[:, 8, 8, 0].astype(int) - ds.labels * 30).max() <= 3
    # Groups: one code per lesion, equal exactly when the lesion is.
    lesions = [lesion for lesion, _, _ in ROWS]
    for i in range(len(ROWS)):
        for j in range(len(ROWS)):
            assert (ds.groups[i] == ds.groups[j]) == (lesions[i] == lesions[j])
    assert ds.groups.dtype == np.int64


def test_lesions_never_straddle_splits(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for lesion in range(60):
        dx = HAM10000_CLASSES[lesion % 7]
        for _ in range(1 + rng.integers(0, 3)):
            rows.append((f"HAM_{lesion:07d}", f"ISIC_{len(rows):07d}", dx))
    write_ham(tmp_path, rows, size=(8, 8))
    ds = load_dataset("ham10000", tmp_path, image_size=4)
    split = split_indices(
        ds.labels, groups=ds.groups, test_fraction=0.2, contrast_fraction=0.1, seed=3
    )
    owner = {}
    for name, idx in split.items():
        for g in ds.groups[idx]:
            assert owner.setdefault(int(g), name) == name
    assert sum(len(v) for v in split.values()) == len(ds)
    assert set(np.unique(ds.labels[split["train"]])) == set(range(7))


def test_explicit_image_dirs_and_missing_images(tmp_path):
    write_ham(tmp_path, ROWS)
    with pytest.raises(FileNotFoundError) as e:
        load_ham10000(tmp_path, image_dirs=[tmp_path / "HAM10000_images_part_1"], image_size=8)
    message = str(e.value)
    assert "5 HAM10000 image(s)" in message and "ISIC_0025030.jpg" in message
    assert "HAM10000_images_part_1" in message


def test_missing_csv_names_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_ham10000(tmp_path)
    assert "HAM10000_metadata.csv" in str(e.value) and str(tmp_path) in str(e.value)


def test_bad_csv(tmp_path):
    write_ham(tmp_path, ROWS[:2] + [("HAM_1", "ISIC_1", "melanoma")])
    with pytest.raises(ValueError, match=r"unknown dx value\(s\) \['melanoma'\]"):
        load_ham10000(tmp_path)
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion,image_id,dx\nHAM_1,ISIC_1,nv\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['lesion_id'\]"):
        load_ham10000(tmp_path)


def test_corrupt_image(tmp_path, caplog):
    write_ham(tmp_path, ROWS)
    (tmp_path / "HAM10000_images_part_1" / "ISIC_0027419.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(CorruptImageError, match="ISIC_0027419.jpg"):
        load_ham10000(tmp_path, image_size=8)
    with caplog.at_level(logging.WARNING):
        ds = load_ham10000(tmp_path, image_size=8, skip_corrupt=True)
    assert len(ds) == 10 and "ISIC_0027419.jpg" in caplog.text
    assert len(ds.groups) == 10
