"""Active sampling's state between quota updates, and its one transition.

    policy = ActiveSampling(batch_size=80, class_counts=train_counts, min_quota=1)
    state = ActiveState()
    state, quotas = next_quotas(policy, state, contrast_confusion)  # each update period

`next_quotas` is pure: from the contrast set's confusion matrix it takes a per-class
score - F1 as the paper does (Eq. 3), or recall, optionally on the confusion matrix
re-weighted to a class-balanced prior (`policy.signal`, `policy.balanced`) - smooths it
(an exponential moving average, off by default as in the paper), applies Eq. 4 with
the floor (`tlc_jax.quotas.update_quotas`), optionally mixes the result with equal
quotas (`policy.mix_balanced`), and appends the contrast F1 and the quotas to the
state's history.

Why the variants: the contrast set is as long-tailed as the training set, so a tail
class's F1 there is dominated by false positives from head classes; Eq. 4 answers low
precision by sampling that class more, which raises its prior in training and lowers
its precision further. Recall does not depend on the other classes' sizes, and a
balanced confusion matrix (each true class's row scaled to the same total) removes the
head classes' false-positive mass from tail precision.
Pure numpy and dataclasses: a JAX codebase can take this file, `quotas.py` and
`sampling.py` without the rest of tlc_jax. The state is plain JSON (`to_json` /
`from_json`) for checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tlc_jax.metrics import balanced_confusion, precision_recall_f1
from tlc_jax.quotas import largest_remainder, update_quotas

SIGNALS = ("f1", "recall")  # The per-class score Eq. 4 turns into quotas.


def smooth_f1(previous: np.ndarray | None, current: np.ndarray,
              momentum: float) -> np.ndarray:
    """Exponential moving average of F1 (optional; off - momentum 0 - in the paper)."""
    current = np.nan_to_num(np.asarray(current, dtype=np.float64), nan=0.0)
    if previous is None or momentum == 0:
        return current
    return momentum * np.asarray(previous, dtype=np.float64) + (1 - momentum) * current


@dataclasses.dataclass(frozen=True)
class ActiveSampling:
    """The fixed rules of one training stage's active sampling."""

    batch_size: int  # B: every batch holds exactly this many images.
    class_counts: Sequence[int]  # Training images per class (0: the class gets none).
    min_quota: int = 1  # Every present class keeps at least this many per batch.
    f1_momentum: float = 0.0  # EMA of the score between updates; 0 = off.
    signal: str = "f1"  # One of SIGNALS; the paper: "f1".
    balanced: bool = False  # Score on the confusion matrix re-weighted to equal classes.
    mix_balanced: float = 0.0  # Quotas = (1 - a) Eq. 4 + a equal shares; 0 = Eq. 4.

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise ValueError(f"signal {self.signal!r} is not one of {', '.join(SIGNALS)}.")
        if not 0 <= self.mix_balanced <= 1:
            raise ValueError(f"mix_balanced must lie in [0, 1]; got {self.mix_balanced}.")


@dataclasses.dataclass(frozen=True)
class ActiveState:
    """What changes between updates: the smoothed F1 and the history of updates."""

    f1_ema: tuple[float, ...] | None = None  # The smoothed score (F1 or recall).
    contrast_f1: tuple[tuple[float, ...], ...] = ()  # Per update, rounded to 1e-4.
    quotas: tuple[tuple[int, ...], ...] = ()  # Per update; each sums to B.

    def to_json(self) -> dict[str, Any]:
        return {"f1_ema": None if self.f1_ema is None else list(self.f1_ema),
                "contrast_f1": [list(f) for f in self.contrast_f1],
                "quotas": [list(q) for q in self.quotas]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ActiveState":
        ema = data.get("f1_ema")
        return cls(None if ema is None else tuple(float(x) for x in ema),
                   tuple(tuple(float(x) for x in f) for f in data.get("contrast_f1", ())),
                   tuple(tuple(int(x) for x in q) for q in data.get("quotas", ())))


def class_scores(policy: ActiveSampling, confusion: np.ndarray) -> np.ndarray:
    """The per-class score Eq. 4 reads: F1 or recall, of the contrast confusion matrix
    or of its class-balanced re-weighting."""
    confusion = balanced_confusion(confusion) if policy.balanced else confusion
    precision, recall, f1 = precision_recall_f1(confusion)
    return f1 if policy.signal == "f1" else recall


def next_quotas(policy: ActiveSampling, state: ActiveState,
                confusion: np.ndarray) -> tuple[ActiveState, np.ndarray]:
    """Eq. 4 from the (smoothed) per-class score of the contrast set's confusion matrix
    (C x C, rows = true classes); returns the new state and the quotas (int64, one per
    class) for the batches from now on."""
    confusion = np.asarray(confusion)
    score = class_scores(policy, confusion)
    ema = smooth_f1(None if state.f1_ema is None else np.asarray(state.f1_ema), score,
                    policy.f1_momentum)
    quotas = update_quotas(ema, policy.batch_size, min_quota=policy.min_quota)
    present = np.asarray(policy.class_counts) > 0
    if policy.mix_balanced:
        equal = np.where(present, policy.batch_size / present.sum(), 0.0)
        quotas = largest_remainder((1 - policy.mix_balanced) * quotas
                                   + policy.mix_balanced * equal, policy.batch_size)
    quotas[~present] = 0  # Defensive: splits keep every class.
    f1 = precision_recall_f1(confusion)[2]
    new = ActiveState(
        f1_ema=tuple(float(x) for x in ema),
        contrast_f1=state.contrast_f1 + (tuple(np.round(f1, 4).tolist()),),
        quotas=state.quotas + (tuple(quotas.tolist()),))
    return new, quotas
