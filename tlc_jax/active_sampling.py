"""Active sampling's state between quota updates, and its one transition.

    policy = ActiveSampling(batch_size=80, class_counts=train_counts, min_quota=1)
    state = ActiveState()
    state, quotas = next_quotas(policy, state, contrast_f1)   # after each update period

`next_quotas` is pure: it smooths the contrast set's per-class F1 (an exponential
moving average, off by default as in the paper), applies Eq. 4 with the floor
(`tlc_jax.quotas.update_quotas`), and appends F1 and quotas to the state's history.
Pure numpy and dataclasses: a JAX codebase can take this file, `quotas.py` and
`sampling.py` without the rest of tlc_jax. The state is plain JSON (`to_json` /
`from_json`) for checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tlc_jax.quotas import update_quotas


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
    f1_momentum: float = 0.0  # EMA of contrast F1 between updates; 0 = off.


@dataclasses.dataclass(frozen=True)
class ActiveState:
    """What changes between updates: the smoothed F1 and the history of updates."""

    f1_ema: tuple[float, ...] | None = None
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


def next_quotas(policy: ActiveSampling, state: ActiveState,
                contrast_f1: np.ndarray) -> tuple[ActiveState, np.ndarray]:
    """Eq. 4 from the (smoothed) per-class contrast F1; returns the new state and the
    quotas (int64, one per class) for the batches from now on."""
    f1 = np.asarray(contrast_f1, dtype=np.float64)
    ema = smooth_f1(None if state.f1_ema is None else np.asarray(state.f1_ema), f1,
                    policy.f1_momentum)
    quotas = update_quotas(ema, policy.batch_size, min_quota=policy.min_quota)
    quotas[np.asarray(policy.class_counts) == 0] = 0  # Defensive: splits keep every class.
    new = ActiveState(
        f1_ema=tuple(float(x) for x in ema),
        contrast_f1=state.contrast_f1 + (tuple(np.round(f1, 4).tolist()),),
        quotas=state.quotas + (tuple(quotas.tolist()),))
    return new, quotas
