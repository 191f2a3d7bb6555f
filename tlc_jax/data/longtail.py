"""Long-tailed subsets of balanced sets, as every long-tail paper builds CIFAR-LT.

Exponential profile (Cao et al. 2019, LDAM): the class at position i of C keeps
`n_i = floor(n_max * ratio**(-i / (C - 1)))` images, so the head keeps n_max and the
tail floor(n_max / ratio). Step profile: the first `floor(C * step_fraction)` classes
keep n_max, the rest floor(n_max / ratio).

Floors are taken of the exact real value: the head and tail counts are computed in
rational arithmetic and the others with a 1e-10 relative margin, so a float product
such as 49 * (1/49) = 0.9999999999999999 does not lose an image. This reproduces the
published sizes: CIFAR-10-LT 12,406 (r=100) / 20,431 (r=10); CIFAR-100-LT 10,847 / 19,573.

Each class's images come from its own seeded permutation (seed, class id), taking a
prefix: no duplicates, independent of the other classes and of class_order, and the
subset for a larger ratio is contained in the one for a smaller ratio.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from tlc_jax.data.dataset import ImageDataset

PROFILES = ("exp", "step")


def _raw_counts(
    n_max: int, num_classes: int, ratio: float, profile: str, step_fraction: float
) -> np.ndarray:
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not math.isfinite(ratio) or ratio < 1:
        raise ValueError(
            f"imbalance ratio must be a finite number >= 1 (head / tail size), got {ratio!r}"
        )
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction!r}")
    n_max, c = int(n_max), int(num_classes)
    tail = math.floor(Fraction(n_max) / Fraction(ratio))
    if c == 1:
        return np.array([n_max], dtype=np.int64)
    if profile == "step":
        n_head = min(c, max(1, math.floor(c * step_fraction + 1e-9)))
        return np.array([n_max] * n_head + [tail] * (c - n_head), dtype=np.int64)
    values = n_max * np.power(float(ratio), -np.arange(c) / (c - 1))
    counts = np.floor(values * (1 + 1e-10)).astype(np.int64)
    counts[0], counts[-1] = n_max, tail
    return np.minimum.accumulate(counts)  # Real values decrease; keep floats from reordering ties.


def longtail_counts(
    n_max: int, num_classes: int, ratio: float, profile: str = "exp", step_fraction: float = 0.5
) -> np.ndarray:
    """Images per class position (0 = head), int64 (num_classes,), non-increasing.

    Raises ValueError for ratio < 1 or when a position would get 0 images.
    """
    counts = _raw_counts(n_max, num_classes, ratio, profile, step_fraction)
    if counts[-1] == 0:
        first = int(np.argmax(counts == 0))
        raise ValueError(
            f"ratio {ratio} leaves the class positions {first}..{num_classes - 1} of "
            f"{num_classes} with 0 images (n_max {n_max} * ratio^(-i/{num_classes - 1}) < 1). "
            f"Use a ratio <= n_max ({n_max}) or a larger n_max"
        )
    return counts


def _check_order(class_order: Sequence[int] | None, num_classes: int) -> np.ndarray:
    if class_order is None:
        return np.arange(num_classes)
    order = np.asarray(class_order)
    if order.shape != (num_classes,) or not np.array_equal(np.sort(order), np.arange(num_classes)):
        raise ValueError(
            f"class_order must be a permutation of 0..{num_classes - 1} (head first), got "
            f"{list(order)}"
        )
    return order.astype(np.int64)


def longtail_indices(
    labels: np.ndarray,
    ratio: float,
    *,
    num_classes: int | None = None,
    n_max: int | None = None,
    profile: str = "exp",
    step_fraction: float = 0.5,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted indices into `labels`, images kept per class id) of a long-tailed subset.

    `class_order[i]` is the class put at position i (`class_order[0]` is the head);
    default 0, 1, ... . `n_max` defaults to the smallest class size (the class size of a
    balanced set). `class_names` only improves error messages.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
        )
    c = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0))
    if c < 1:
        raise ValueError("no classes: labels is empty and num_classes was not given")
    if len(labels) and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), found {labels.min()}..{labels.max()}")

    def name(k: int) -> str:
        return f"class {k}" + (f" ({class_names[k]})" if class_names is not None else "")

    available = np.bincount(labels, minlength=c)
    order = _check_order(class_order, c)
    if n_max is None:
        n_max = int(available.min())
        if n_max == 0:
            raise ValueError(
                f"{name(int(np.argmin(available)))} has no images; every class needs some"
            )
    by_position = _raw_counts(n_max, c, ratio, profile, step_fraction)
    if by_position[-1] == 0:
        empty = np.flatnonzero(by_position == 0)
        named = ", ".join(name(int(order[pos])) for pos in empty[:10]) + (
            ", ..." if len(empty) > 10 else ""
        )
        raise ValueError(
            f"ratio {ratio} leaves {len(empty)} class(es) with 0 images: {named} (positions "
            f"{int(empty[0])}..{c - 1} of {c}; n_max {n_max} * ratio^(-i/{c - 1}) < 1). "
            f"Use a ratio <= n_max ({n_max}) or a larger n_max"
        )
    counts = np.empty(c, dtype=np.int64)
    counts[order] = by_position
    short = np.flatnonzero(available < counts)
    if len(short):
        details = "; ".join(
            f"{name(int(k))} has {available[k]}, needs {counts[k]}" for k in short[:10]
        )
        raise ValueError(
            f"{len(short)} class(es) have fewer images than the {profile} profile at ratio "
            f"{ratio} asks for: {details}. Lower n_max (now {n_max}) or change class_order"
        )

    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(available)])
    chosen = []
    for k in range(c):
        members = by_class[starts[k] : starts[k + 1]]
        rng = np.random.default_rng([int(seed), k])
        chosen.append(rng.permutation(members)[: counts[k]])
    return np.sort(np.concatenate(chosen)).astype(np.int64), counts


def make_longtailed(
    dataset: ImageDataset,
    ratio: float,
    *,
    n_max: int | None = None,
    profile: str = "exp",
    step_fraction: float = 0.5,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
) -> tuple[ImageDataset, np.ndarray]:
    """(long-tailed subset, images kept per class id); see `longtail_indices`."""
    indices, counts = longtail_indices(
        dataset.labels,
        ratio,
        num_classes=dataset.num_classes,
        n_max=n_max,
        profile=profile,
        step_fraction=step_fraction,
        seed=seed,
        class_order=class_order,
        class_names=dataset.class_names,
    )
    return dataset.subset(indices), counts
