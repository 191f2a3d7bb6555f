"""Experiment configs: load, lock, take arguments, document every field, build data."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tlc_jax.config import parse_arg
from tlc_jax.data import longtail_counts
from tlc_jax.data.prepare import SPLIT_FILE, prepare

from helpers import write_cifar10, write_idx

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def load(path, arg=None):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_every_experiment_has_a_config():
    assert {p.stem for p in CONFIGS} == {"digits_lt", "cifar10_lt", "cifar100_lt",
                                         "caltech101", "ham10000", "fashion_mnist_lt",
                                         "fashion_mnist_lt_transfer"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_are_locked_and_documented(path):
    config = load(path)
    with pytest.raises(AttributeError):
        config.train.epohcs = 1
    with pytest.raises(AttributeError):
        config.trian = 1
    # The docstring shows how to launch it.
    assert f"--config=configs/{path.name}" in path.read_text()
    batch = config.train.images_per_class * {"digits": 10, "cifar10": 10, "cifar100": 100,
                                             "caltech101": 101, "ham10000": 7,
                                             "fashion_mnist": 10}[config.data.name]
    # min_quota must leave room for active sampling to move images between classes.
    assert batch > config.sampling.min_quota * (batch // config.train.images_per_class)


def test_every_schema_field_has_a_comment():
    lines = (ROOT / "tlc_jax" / "config.py").read_text().splitlines()
    fields = [l for l in lines if re.match(r"\s+c\.\w+\.\w+ = ", l) or
              re.match(r"\s+c\.seed = ", l)]
    assert len(fields) > 40
    assert [l for l in fields if "#" not in l] == []


def test_config_arguments():
    config = load(ROOT / "configs/cifar100_lt.py", "ratio=10,loss=cot")
    assert (config.data.imbalance_ratio, config.train.loss) == (10.0, "cot")
    assert load(ROOT / "configs/digits_lt.py", "active=false").sampling.composition == "instance"
    with pytest.raises(ValueError, match="key=value with key in"):
        load(ROOT / "configs/cifar100_lt.py", "ration=10")
    with pytest.raises(ValueError, match="key=value"):
        parse_arg("ratio", ratio=1.0)


def test_cifar10_lt_config_builds_the_long_tail_from_the_official_archive(tmp_path):
    write_cifar10(tmp_path / "cifar", per_batch=200, test=50)
    config = load(ROOT / "configs/cifar10_lt.py", "ratio=10")
    config.unlock()
    config.data.root = str(tmp_path / "cifar")
    config.data.n_max = 60  # The fake archive has ~100 images per class.
    splits = prepare(config.data, config.seed, tmp_path / "work")
    kept = splits.train.class_counts() + splits.contrast.class_counts()
    np.testing.assert_array_equal(kept, longtail_counts(60, 10, 10))
    assert len(splits.test) == 50  # The official test set, untouched.
    assert (splits.contrast.class_counts() >= 1).all()
    assert (splits.train.class_counts() >= 1).all()
    # A second preparation in the same workdir checks and reuses the recorded split.
    again = prepare(config.data, config.seed, tmp_path / "work")
    np.testing.assert_array_equal(again.train.labels, splits.train.labels)
    config.data.contrast_fraction = 0.3
    with pytest.raises(ValueError, match="records another data split"):
        prepare(config.data, config.seed, tmp_path / "work")


def test_fashion_mnist_lt_counts_are_the_documented_ones():
    """The per-class table in the config's docstring is what the construction gives."""
    text = (ROOT / "configs/fashion_mnist_lt.py").read_text()
    rows = re.findall(r"exp  ratio +(\d+): ([\d ]+?)  \(([\d,]+)\)", text)
    assert [int(r) for r, _, _ in rows] == [100, 50, 10]
    for ratio, counts, total in rows:
        counts = [int(x) for x in counts.split()]
        assert counts == longtail_counts(6000, 10, int(ratio)).tolist()
        assert sum(counts) == int(total.replace(",", ""))
    for ratio, tail in ((100, 60), (50, 120), (10, 600)):
        assert longtail_counts(6000, 10, ratio, profile="step").tolist() == [6000] * 5 + [
            tail] * 5


def test_fashion_mnist_lt_config_builds_from_idx_files(tmp_path):
    """The config end to end on generated IDX files in the official layout."""
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 80), ("t10k", 7)):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    config = load(ROOT / "configs/fashion_mnist_lt.py", f"ratio=10,root={tmp_path},seed=3")
    assert config.seed == 3 and config.data.root == str(tmp_path)
    config.unlock()
    config.data.n_max = 70  # The generated files hold 80 images per class.
    splits = prepare(config.data, config.seed, tmp_path / "work")
    kept = splits.train.class_counts() + splits.contrast.class_counts()
    np.testing.assert_array_equal(kept, longtail_counts(70, 10, 10))
    assert (splits.contrast.class_counts() >= 2).all()  # min_contrast_per_class.
    np.testing.assert_array_equal(splits.test.class_counts(), np.full(10, 7))
    assert splits.train.images.shape[1:] == (28, 28, 1)
    assert splits.train.class_names[0] == "T-shirt/top"
    default = load(ROOT / "configs/fashion_mnist_lt.py")
    assert default.data.root == "/usr/share/datasets/fashion-mnist"
    assert (default.data.imbalance_ratio, default.data.n_max) == (100.0, 6000)


def test_fashion_mnist_lt_transfer_protocol(tmp_path):
    """The transfer config: the same data split as fashion_mnist_lt for a seed, grey
    upsampled to RGB `size` px, Lite0 from ImageNet with warm-up and two frozen
    stages in the same epochs; pretrained=false trains the same network as the
    from-scratch DenseNet is trained."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 800), ("t10k", 70)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n // 10)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    transfer = load(ROOT / "configs/fashion_mnist_lt_transfer.py",
                    f"ratio=10,root={tmp_path},seed=3,size=40")
    plain = load(ROOT / "configs/fashion_mnist_lt.py", f"ratio=10,root={tmp_path},seed=3")
    for c in (transfer, plain):
        c.unlock()
        c.data.n_max = 70
    a = prepare(transfer.data, 3, tmp_path / "a")
    b = prepare(plain.data, 3, tmp_path / "b")
    assert (json.loads((tmp_path / "a" / SPLIT_FILE).read_text())
            == json.loads((tmp_path / "b" / SPLIT_FILE).read_text()))
    assert a.train.images.shape[1:] == (40, 40, 3) and a.test.images.shape[1:] == (40, 40, 3)
    np.testing.assert_array_equal(a.train.images[..., 0], a.train.images[..., 2])
    assert abs(float(a.train.images.mean()) - float(b.train.images.mean())) < 2.0
    assert (transfer.model.name, transfer.model.pretrained) == ("efficientnet_lite0",
                                                                "imagenet")
    assert (transfer.warmup.enabled, transfer.warmup.epochs + transfer.train.epochs,
            transfer.train.frozen_stages) == (True, 10, 2)
    scratch = load(ROOT / "configs/fashion_mnist_lt_transfer.py", "pretrained=false")
    assert scratch.data.resize_to == 64  # The size chosen on the contrast set.
    assert (scratch.model.pretrained, scratch.warmup.enabled, scratch.train.epochs,
            scratch.train.frozen_stages, scratch.train.learning_rate) == (
        "", False, 10, 0, plain.train.learning_rate)


def test_fit_size_resizes_bilinearly_and_keeps_what_it_should():
    from tlc_jax.data import ImageDataset
    from tlc_jax.data.prepare import fit_size

    ramp = np.tile(np.linspace(0, 250, 8).astype(np.uint8)[None, :, None], (8, 1, 1))
    ds = ImageDataset(images=np.stack([ramp, np.full((8, 8, 1), 77, np.uint8)]),
                      labels=np.array([0, 1]), class_names=("a", "b"))
    assert fit_size(ds, 0) is ds and fit_size(ds, 8) is ds
    big = fit_size(ds, 20)
    assert big.images.shape == (2, 20, 20, 1) and big.images.dtype == np.uint8
    assert (big.images[1] == 77).all()  # A flat image stays flat.
    row = big.images[0, 10, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] < 20 and row[-1] > 230  # Still a ramp.
    np.testing.assert_array_equal(big.labels, ds.labels)
