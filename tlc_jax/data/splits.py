"""Train / contrast / test splits: stratified, optionally grouped, seeded, saved.

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

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tlc_jax.fileio import atomic_file

SPLIT_NAMES = ("train", "contrast", "test")
SPLIT_FILE = "split.json"
_FORMAT = "tlc_jax.split"
_VERSION = 1


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


def _check_split(
    split: Mapping[str, np.ndarray], num_examples: int | None, source: str
) -> dict[str, np.ndarray]:
    out = {}
    for name, idx in split.items():
        idx = np.asarray(idx)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"{source}: split {name!r} must be 1-D integer indices, got dtype {idx.dtype} "
                f"shape {idx.shape}"
            )
        if num_examples is not None and len(idx) and (idx.min() < 0 or idx.max() >= num_examples):
            raise ValueError(f"{source}: split {name!r} has indices outside [0, {num_examples})")
        out[name] = idx.astype(np.int64)
    everything = np.concatenate([np.zeros(0, np.int64), *out.values()])
    values, counts = np.unique(everything, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{source}: splits overlap or repeat indices, e.g. {values[counts > 1][:10].tolist()}"
        )
    return out


def save_split(
    split: Mapping[str, np.ndarray],
    workdir: str | os.PathLike,
    *,
    num_examples: int | None = None,
    config: Mapping[str, Any] | None = None,
    filename: str = SPLIT_FILE,
) -> Path:
    """Writes the split's indices to `workdir/filename` (JSON, atomically); returns the path.

    `num_examples` (the size of the indexed set) and `config` (how it was made) are
    stored so `load_split` can refuse a split that belongs to another dataset.
    """
    path = Path(workdir) / filename
    checked = _check_split(split, num_examples, "save_split")
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "num_examples": num_examples,
        "config": dict(config or {}),
        "indices": {name: idx.tolist() for name, idx in checked.items()},
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload))
    return path


def read_split_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw saved payload (format, num_examples, config, indices as lists)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no split file at {str(path)!r} (expected a {SPLIT_FILE} written by save_split, or "
            "a work directory holding one)"
        )
    payload = json.loads(path.read_text())
    if payload.get("format") != _FORMAT or payload.get("version") != _VERSION:
        raise ValueError(
            f"{str(path)!r} is not a tlc_jax split file (format {payload.get('format')!r})"
        )
    return payload


def load_split(
    path: str | os.PathLike, *, num_examples: int | None = None
) -> dict[str, np.ndarray]:
    """Reads a split written by `save_split` (a file, or a work directory holding split.json).

    With `num_examples`, a split saved for a set of another size is an error.
    """
    payload = read_split_file(path)
    saved_n = payload.get("num_examples")
    if num_examples is not None and saved_n is not None and saved_n != num_examples:
        raise ValueError(
            f"split {str(path)!r} was made for {saved_n} examples, this dataset has {num_examples}"
        )
    return _check_split(
        payload["indices"], num_examples if num_examples is not None else saved_n, str(path)
    )


def load_or_make_split(
    workdir: str | os.PathLike,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    filename: str = SPLIT_FILE,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """The split saved in `workdir`, or a new one (`split_indices(labels, **kwargs)`), saved there.

    Resuming a run reuses its split; asking for different options than those it was
    made with is an error rather than a silent change of the contrast or test set.
    """
    config = {**kwargs, "grouped": groups is not None}
    path = Path(workdir) / filename
    if path.is_file():
        saved = read_split_file(path).get("config", {})
        if saved != json.loads(json.dumps(config)):
            raise ValueError(
                f"{str(path)!r} was made with {saved}, now asked for {config}; use another "
                "workdir or delete it"
            )
        return load_split(path, num_examples=len(labels))
    split = split_indices(labels, groups=groups, **kwargs)
    save_split(split, workdir, num_examples=len(labels), config=config, filename=filename)
    return split
