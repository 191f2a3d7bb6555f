"""Eq. 4 of TLC: per-class F1 on the contrast set -> images per class per batch.

Pure numpy, importable alone (per-class F1 itself: `tlc_jax.metrics.precision_recall_f1`;
the state that smooths F1 between updates: `tlc_jax.active_sampling`). TLC (Liu et al. 2023, Algorithm 1, Eq. 3-4) sets the
number of images of class k in every batch to

    quota_k = B * (1 - F1_k) / sum_s (1 - F1_s),

where B is the batch size (the paper writes N*, but the text keeps the total per
iteration fixed). We settle what the paper leaves open: integer quotas
that sum exactly to B (largest-remainder rounding, ties to the lower class index),
undefined F1 counts as 0, all F1 == 1 gives uniform quotas, and a floor `min_quota`
keeps every class in training.
"""

from __future__ import annotations

import numpy as np


def instance_quotas(class_counts: np.ndarray, batch_size: int) -> np.ndarray:
    """Expected images per class in a batch drawn uniformly from the training images:
    B * n_k / N (floats; what instance sampling gives on average)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("instance_quotas needs at least one training image.")
    return batch_size * counts / counts.sum()


def uniform_quotas(batch_size: int, num_classes: int) -> np.ndarray:
    """B / C per class; the B mod C leftover images go to the lowest class indices."""
    quotas = np.full(num_classes, batch_size // num_classes, dtype=np.int64)
    quotas[: batch_size % num_classes] += 1
    return quotas


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to `total`, each floor(share) or floor(share) + 1.

    The leftover units go to the largest fractional parts; ties to the lower index, so
    the result is deterministic. Shares are compared to 1e-9, so float noise (3.4999...
    for 3.5) neither breaks a tie nor loses a whole unit.
    """
    shares = np.asarray(shares, dtype=np.float64)
    whole = np.floor(shares + 1e-9).astype(np.int64)
    leftover = int(total - whole.sum())
    if leftover:
        # Stable sort of the negated remainders: larger first, lower index on ties.
        order = np.argsort(-np.round(shares - whole, 9), kind="stable")
        whole[order[:leftover]] += 1
    return whole


def update_quotas(f1: np.ndarray, batch_size: int, *, min_quota: int = 1) -> np.ndarray:
    """Eq. 4: images per class per batch from per-class F1; sums exactly to batch_size.

    Args:
      f1: per-class F1 in [0, 1]; NaN (undefined) counts as 0.
      batch_size: B, the fixed number of images per batch.
      min_quota: every class gets at least this many (so none leaves training).

    Classes whose proportional share falls below the floor get the floor; the rest of
    the batch is shared among the others in proportion to 1 - F1 (repeated until no
    share is below the floor), then rounded by largest remainder.
    """
    f1 = np.asarray(f1, dtype=np.float64)
    if f1.ndim != 1 or f1.size == 0:
        raise ValueError(f"f1 must be a non-empty vector, one value per class; got "
                         f"shape {f1.shape}.")
    num_classes = f1.size
    f1 = np.nan_to_num(f1, nan=0.0)
    if np.any(f1 < -1e-9) or np.any(f1 > 1 + 1e-9):
        raise ValueError(f"F1 values must lie in [0, 1]; got min {f1.min()}, max "
                         f"{f1.max()}.")
    if min_quota < 0:
        raise ValueError(f"min_quota must be >= 0; got {min_quota}.")
    if batch_size < num_classes * min_quota:
        raise ValueError(
            f"batch_size {batch_size} cannot give each of {num_classes} classes "
            f"min_quota={min_quota} images; use a batch of at least "
            f"{num_classes * min_quota} or lower min_quota.")
    weights = 1.0 - np.clip(f1, 0.0, 1.0)
    if weights.sum() <= 0:  # Every class perfect: nothing to favour.
        return uniform_quotas(batch_size, num_classes)

    floored = np.zeros(num_classes, dtype=bool)
    while True:
        free = ~floored & (weights > 0)
        budget = batch_size - min_quota * floored.sum()
        shares = np.where(floored, float(min_quota), 0.0)
        if free.any():
            shares[free] = budget * weights[free] / weights[free].sum()
        below = ~floored & (shares < min_quota)
        if not below.any():
            break
        floored |= below
    # The class with the largest weight is never floored (its share is at least the
    # budget per free class, which is at least min_quota), so `~floored` is not empty.
    quotas = np.where(floored, min_quota, 0).astype(np.int64)
    quotas[~floored] = largest_remainder(shares[~floored], batch_size - quotas.sum())
    return quotas
