"""Train / contrast / test splits: stratified, optionally grouped, seeded.

TLC measures per-class F1 on a *contrast* set carved from the training data; it must
be disjoint from what the model trains on and from the test set, and contain every
class, even CIFAR-100-LT r=100 tail classes with 5 images.

The rule, per class with n images (round = round half up, m = min_contrast_per_class):
  test     t = min(round(test_fraction * n), n - 1)
  contrast c = min(max(round(contrast_fraction * n), m), n - t - 1)
           (c = 0 when contrast_fraction is 0: no contrast set was asked for)
  train    the remaining n - t - c, which is always >= 1.
So a class gets at least m contrast images whenever n - t >= m + 1, and a class with a
single image keeps it for training. The test set has priority over the contrast set,
and training keeps at least one image of every class.

With `groups` (HAM10000 lesions) whole groups are assigned, so a group never straddles
two splits. Each group counts for its majority label (ties: the smallest label). Per
class, its groups are shuffled (seeded) and taken in that order: the test set takes the
prefix whose image count is closest to round(test_fraction * n) without taking the
class's last group, then the contrast set the next prefix closest to its target among
those with >= m images (or all groups but the last if none has m; none at all when
contrast_fraction is 0), the rest go to training. Without groups every image is its own
group, which gives the rule above.

Shuffles use numpy's generator seeded with (seed, class id): the split of a class does
not depend on the other classes.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np


SPLIT_NAMES = ("train", "contrast", "test")


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def _majority_labels(
    unit_of: np.ndarray, labels: np.ndarray, num_units: int, num_classes: int
) -> np.ndarray:
    pairs, counts = np.unique(unit_of.astype(np.int64) * num_classes + labels, return_counts=True)
    unit, label = pairs // num_classes, pairs % num_classes
    order = np.lexsort((label, -counts, unit))  # Per unit: most images first, then smallest label.
    unit, label = unit[order], label[order]
    first = np.ones(len(unit), dtype=bool)
    first[1:] = unit[1:] != unit[:-1]
    majority = np.empty(num_units, dtype=np.int64)
    majority[unit[first]] = label[first]
    return majority


def split_indices(
    labels: np.ndarray,
    *,
    test_fraction: float,
    contrast_fraction: float,
    min_contrast_per_class: int = 1,
    groups: np.ndarray | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """{'train', 'contrast', 'test'}: sorted int64 indices into `labels`, disjoint, covering all.

    Fractions are of each class's images; pass test_fraction=0 when the source has its
    own test set (CIFAR). See the module docstring for the exact rule.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
        )
    for name, value in (("test_fraction", test_fraction), ("contrast_fraction", contrast_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if test_fraction + contrast_fraction >= 1:
        raise ValueError(
            "test_fraction + contrast_fraction must be < 1, got "
            f"{test_fraction + contrast_fraction}"
        )
    if min_contrast_per_class < 0:
        raise ValueError(f"min_contrast_per_class must be >= 0, got {min_contrast_per_class}")
    n_total = len(labels)
    c = int(num_classes if num_classes is not None else (labels.max() + 1 if n_total else 0))
    if n_total and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), found {labels.min()}..{labels.max()}")

    if groups is None:
        unit_of = np.arange(n_total)
        unit_label = labels.astype(np.int64)
        unit_size = np.ones(n_total, dtype=np.int64)
    else:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups has shape {groups.shape}, labels {labels.shape}")
        _, unit_of = np.unique(groups, return_inverse=True)
        unit_of = unit_of.reshape(-1)
        num_units = int(unit_of.max()) + 1 if n_total else 0
        unit_size = np.bincount(unit_of, minlength=num_units).astype(np.int64)
        unit_label = _majority_labels(unit_of, labels.astype(np.int64), num_units, c)

    assign = np.zeros(len(unit_label), dtype=np.int8)  # 0 train, 1 contrast, 2 test.
    by_class = np.argsort(unit_label, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(unit_label, minlength=c))])
    m = int(min_contrast_per_class)
    for k in range(c):
        units = by_class[starts[k] : starts[k + 1]]
        if len(units) == 0:
            continue
        units = np.random.default_rng([int(seed), k]).permutation(units)
        # cum[j]: the number of images in the first j units.
        cum = np.concatenate([[0], np.cumsum(unit_size[units])])
        last = len(units) - 1  # Prefixes end before the last unit: it stays in training.
        n = int(cum[-1])
        t_target = _round_half_up(test_fraction * n)
        c_target = max(_round_half_up(contrast_fraction * n), m)
        if contrast_fraction == 0:
            c_target = 0
        p = int(np.argmin(np.abs(cum[: last + 1] - t_target)))
        sizes = cum[p : last + 1] - cum[p]  # Contrast size if it ends at p, p+1, ..., last.
        if c_target == 0:
            q = p
        elif sizes[-1] < m:
            q = last
        else:
            cost = np.where(sizes >= m, np.abs(sizes - c_target), np.iinfo(np.int64).max)
            q = p + int(np.argmin(cost))
        assign[units[:p]] = 2
        assign[units[p:q]] = 1

    per_image = assign[unit_of]
    return {
        "train": np.flatnonzero(per_image == 0).astype(np.int64),
        "contrast": np.flatnonzero(per_image == 1).astype(np.int64),
        "test": np.flatnonzero(per_image == 2).astype(np.int64),
    }


def split_class_counts(
    split: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Images per class in each split, for logging and checks."""
    labels = np.asarray(labels)
    return {name: np.bincount(labels[idx], minlength=num_classes) for name, idx in split.items()}
