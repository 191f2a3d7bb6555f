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

Also here, the static batch compositions of the sampling baselines (class-balanced,
square-root, progressively balanced), all through `quotas_from_prior`: integer quotas
summing to B, 0 for a class with no training images. Under these every batch holds
exactly quotas[k] images of class k (class-quota batches), whereas `instance_quotas`
gives what uniform instance sampling holds on average (floats).
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


# --- static compositions of the sampling baselines ------------------------------------


def quotas_from_prior(prior: np.ndarray, batch_size: int) -> np.ndarray:
    """Integer quotas (C,) int64 summing to batch_size, proportional to `prior`.

    B * prior_k / sum(prior), rounded by `largest_remainder` (deterministic, ties to the
    lower class index). `prior` need not be normalised; a class with prior 0 gets 0
    exactly (only the positive entries share the batch).
    """
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or prior.size == 0:
        raise ValueError(f"prior must be a non-empty vector, one value per class; got "
                         f"shape {prior.shape}.")
    if not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
        raise ValueError(f"prior must be finite, non-negative and not all zero; got "
                         f"{prior}.")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0; got {batch_size}.")
    positive = prior > 0
    quotas = np.zeros(prior.size, dtype=np.int64)
    quotas[positive] = largest_remainder(
        batch_size * prior[positive] / prior[positive].sum(), batch_size)
    return quotas


def _counts(class_counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"class_counts must be a vector of non-negative counts with "
                         f"at least one training image; got {class_counts}.")
    return counts


def class_balanced_quotas(batch_size: int, num_classes: int,
                          class_counts: np.ndarray | None = None) -> np.ndarray:
    """Class-balanced sampling: B / C of every class (`uniform_quotas`).

    Given `class_counts`, classes with no training images get 0 and the batch is shared
    equally among the others (the sampler refuses a quota for an empty class).
    """
    # Class-balanced sampling (p_k = 1 / C), as in Kang et al. 2020, "Decoupling
    # Representation and Classifier for Long-Tailed Recognition", ICLR 2020.
    if class_counts is None:
        return uniform_quotas(batch_size, num_classes)
    present = _counts(class_counts) > 0
    if present.size != num_classes:
        raise ValueError(f"class_counts has {present.size} entries, not num_classes="
                         f"{num_classes}.")
    quotas = np.zeros(num_classes, dtype=np.int64)
    quotas[present] = uniform_quotas(batch_size, int(present.sum()))
    return quotas


def sqrt_quotas(class_counts: np.ndarray, batch_size: int) -> np.ndarray:
    """Square-root sampling: p_k proportional to n_k^(1/2)."""
    # Mahajan et al. 2018, "Exploring the Limits of Weakly Supervised Pretraining", ECCV
    # 2018; as a long-tail baseline in Kang et al. 2020 (see class_balanced_quotas).
    return quotas_from_prior(np.sqrt(_counts(class_counts)), batch_size)


def progressive_quotas(class_counts: np.ndarray, batch_size: int, epoch: int,
                       total_epochs: int) -> np.ndarray:
    """Progressively-balanced sampling: p_k(t) = (1 - t/T) n_k / N + (t/T) / C.

    t = `epoch` (0-based), T = `total_epochs`: instance-balanced at t = 0, moving
    linearly to class-balanced (reached at t = T; the last epoch of training is
    t = T - 1). C counts the classes with training images; an empty class gets 0.
    """
    # Kang et al. 2020 (see class_balanced_quotas), progressively-balanced
    # sampling.
    counts = _counts(class_counts)
    if total_epochs <= 0 or not 0 <= epoch <= total_epochs:
        raise ValueError(f"need 0 <= epoch <= total_epochs and total_epochs > 0; got "
                         f"epoch {epoch}, total_epochs {total_epochs}.")
    t = epoch / total_epochs
    present = counts > 0
    prior = (1 - t) * counts / counts.sum() + t * present / present.sum()
    return quotas_from_prior(prior, batch_size)
