"""From a data config to the three sets a run uses: train, contrast and test.

    splits = prepare(config.data, seed, workdir)   # Splits(train, contrast, test)

The order is fixed: the test set first (the source's own, or a stratified, balanced
share held out before anything else), then the long tail cut from what remains, then
the contrast set carved from the long-tailed training data (every class keeps at least
`min_contrast_per_class` contrast images and one training image). The chosen images are
then resized to `resize_to` (if set) and their channels fitted to the model's.

The chosen indices go to `workdir/data_split.json` - the one split-file format:
    {"source_size": N, "train": [...], "contrast": [...],
     "test": [...] | "the source's test set"}
(indices into the loaded training source). A resumed run recomputes the split and
refuses to go on if it differs from the recorded one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from tlc_jax import augment
from tlc_jax.data import ImageDataset, load_from_config, source
from tlc_jax.data.longtail import longtail_indices
from tlc_jax.data.splits import split_indices
from tlc_jax.fileio import write_json_atomic

SPLIT_FILE = "data_split.json"
OWN_TEST_SET = "the source's test set"


@dataclasses.dataclass(frozen=True)
class Splits:
    train: ImageDataset
    contrast: ImageDataset
    test: ImageDataset


def fit_channels(ds: ImageDataset, channels: int) -> ImageDataset:
    """Grey images repeated to 3 channels when the model takes 3; else unchanged."""
    have = ds.images.shape[-1]
    if have == channels:
        return ds
    if have == 1 and channels == 3:
        return dataclasses.replace(ds, images=np.repeat(ds.images, 3, axis=-1))
    raise ValueError(f"Dataset has {have}-channel images; config.data.channels={channels}. "
                     f"Set config.data.channels={have}.")


def fit_size(ds: ImageDataset, side: int) -> ImageDataset:
    """Every image resized (bilinear, PIL) to side x side; unchanged when `side` is 0
    or the images already have that size."""
    if not side or ds.images.shape[1:3] == (side, side):
        return ds
    from PIL import Image

    grey = ds.images.shape[-1] == 1
    out = np.empty((len(ds), side, side, ds.images.shape[-1]), np.uint8)
    for i, image in enumerate(ds.images):
        resized = Image.fromarray(image[..., 0] if grey else image).resize(
            (side, side), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized).reshape(side, side, -1)
    return dataclasses.replace(ds, images=out)


def _held_out_test(cfg: Any, source_ds: ImageDataset, seed: int):
    """(test set, its indices into the source, the indices left in play)."""
    if cfg.test_fraction <= 0:
        raise ValueError(f"Dataset {cfg.name!r} has no test set of its own: set "
                         f"config.data.test_fraction > 0.")
    split = split_indices(source_ds.labels, test_fraction=cfg.test_fraction,
                          contrast_fraction=0.0, groups=source_ds.groups, seed=seed)
    return source_ds.subset(split["test"]), split["test"], split["train"]


def prepare(cfg: Any, seed: int, workdir: str | Path) -> Splits:
    """Test set, long tail and contrast split for `config.data` (see the module
    docstring); the split is recorded in (or checked against) `workdir`."""
    own_test_set = source(cfg.name).has_test_set
    source_ds = load_from_config(cfg, **({"split": "train"} if own_test_set else {}))
    if own_test_set:
        test, test_idx = load_from_config(cfg, split="test"), OWN_TEST_SET
        pool = np.arange(len(source_ds))  # Indices into `source_ds` still in play.
    else:
        test, test_idx, pool = _held_out_test(cfg, source_ds, seed)
    if cfg.imbalance_ratio > 1:
        kept, _ = longtail_indices(source_ds.labels[pool], cfg.imbalance_ratio,
                                   num_classes=source_ds.num_classes,
                                   n_max=cfg.n_max or None, profile=cfg.longtail_profile,
                                   seed=seed, class_names=source_ds.class_names)
        pool = pool[kept]
    groups = None if source_ds.groups is None else source_ds.groups[pool]
    split = split_indices(source_ds.labels[pool], test_fraction=0.0,
                          contrast_fraction=cfg.contrast_fraction,
                          min_contrast_per_class=cfg.min_contrast_per_class,
                          groups=groups, seed=seed + 1, num_classes=source_ds.num_classes)
    train_idx, contrast_idx = pool[split["train"]], pool[split["contrast"]]
    record_or_check_split(Path(workdir) / SPLIT_FILE, {
        "source_size": len(source_ds), "train": train_idx.tolist(),
        "contrast": contrast_idx.tolist(),
        "test": test_idx if isinstance(test_idx, str) else test_idx.tolist()})
    return Splits(*(fit_channels(fit_size(ds, cfg.resize_to), cfg.channels) for ds in
                    (source_ds.subset(train_idx), source_ds.subset(contrast_idx), test)))


def record_or_check_split(path: Path, chosen: dict[str, Any]) -> None:
    """Writes `chosen` atomically, or checks that the recorded split is the same."""
    if path.exists():
        if json.loads(path.read_text()) != json.loads(json.dumps(chosen)):
            raise ValueError(f"{path} records another data split than this config and "
                             f"data give; use a fresh workdir or restore the old data.")
        return
    write_json_atomic(path, chosen)


def augment_options(cfg: Any) -> augment.AugmentOptions:
    """The augmentation a trainer `config.augment` asks for."""
    return augment.AugmentOptions(cfg.crop_padding, cfg.flip, cfg.color_jitter, cfg.cutout)


def offline_augmented(train: ImageDataset, copies: int, seed: int,
                      options: augment.AugmentOptions) -> ImageDataset:
    """The paper's offline mode: the training set plus `copies` augmented copies."""
    extra = augment.materialize(train.images, copies, seed, options)
    return ImageDataset(
        images=np.concatenate([train.images, extra.reshape(-1, *train.images.shape[1:])]),
        labels=np.tile(train.labels, copies + 1), class_names=train.class_names,
        groups=None if train.groups is None else np.tile(train.groups, copies + 1))
