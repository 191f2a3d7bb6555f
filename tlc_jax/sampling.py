"""The quota sampler: every batch holds exactly `quotas[k]` images of class k.

`QuotaSampler` needs only numpy, so it ports into any training loop. It plans batches
as index arrays. Within a class, images are drawn without replacement in a seeded
order; when the class is used up a new order is drawn (a class whose quota exceeds what
it has is oversampled, and augmentation makes the repeats differ). Everything follows
from (seed, step, quotas): pass k over class c is ordered by a keyed hash of (seed, c,
k), so planning 1 step or 10,000 at once gives the same batches, the state is a few
integers per class, and restoring it resumes exactly. Each of several processes takes
its slice of the same global batch (grain's `ShardOptions` / `ShardByJaxProcess`
convention: shard i of n is the i-th of n equal blocks), so the per-class quotas hold
exactly over the global batch, and every process's sampler state is the same. Quotas
may change before any step (every epoch, every K steps, ...).
`tlc_jax.input_pipeline.QuotaBatchIterator` runs the plan through grain.

A plain Python loop needs nothing else:

    sampler = QuotaSampler(labels, num_classes=10, batch_size=128, seed=0)
    for step in range(steps):
        idx = sampler.next_batch()            # (128,) indices, class counts == quotas
        train_step(images[idx], labels[idx])
        if (step + 1) % sampler.steps_per_epoch == 0:
            sampler.set_quotas(update_quotas(contrast_f1(), 128))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from tlc_jax.quotas import uniform_quotas

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CLASS_STREAM, _ROW_SHUFFLE = 0, 1  # Hash domains.


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 with good avalanche."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(*parts: Any) -> np.ndarray:
    """A uint64 hash of integer arrays (broadcast together); order-sensitive."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x243F6A8885A308D3)
        for part in parts:
            h = _mix(h ^ _mix(np.asarray(part).astype(np.uint64) + _GOLDEN))
    return h


@dataclasses.dataclass
class SamplerState:
    """Where each class's stream stands; all a resumed sampler needs."""

    step: int  # Global batches planned and consumed so far.
    passes: np.ndarray  # (C,) passes over each class started so far.
    positions: np.ndarray  # (C,) position inside the current pass.
    quotas: np.ndarray  # (C,) images of each class per global batch.

    def to_json(self) -> dict[str, Any]:
        return {"step": int(self.step), "passes": self.passes.tolist(),
                "positions": self.positions.tolist(), "quotas": self.quotas.tolist()}


class QuotaSampler:
    """Plans global batches with fixed per-class counts; returns this process's slice.

    Args:
      labels: (N,) integer class of every training example.
      num_classes: C.
      batch_size: global batch size B (all processes together).
      seed: everything random follows from it.
      quotas: initial per-class counts summing to B; uniform (B / C) by default.
      shard_index, shard_count: this process's slice of every global batch
        (e.g. `jax.process_index()`, `jax.process_count()`); B must divide evenly.
      shard_options: the same as a `grain.sharding.ShardOptions` (anything with
        `shard_index` and `shard_count`), e.g. `ShardByJaxProcess(drop_remainder=True)`;
        overrides the two above.
      shuffle_within_batch: mix classes inside a batch (else grouped by class), so each
        device's share of a sharded batch is not a handful of classes.
    """

    def __init__(self, labels: np.ndarray, num_classes: int, batch_size: int, *,
                 seed: int = 0, quotas: np.ndarray | None = None, shard_index: int = 0,
                 shard_count: int = 1, shard_options: Any = None,
                 shuffle_within_batch: bool = True):
        if shard_options is not None:
            shard_index, shard_count = shard_options.shard_index, shard_options.shard_count
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array; got {labels.dtype} "
                             f"of shape {labels.shape}.")
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise ValueError(f"labels outside [0, {num_classes}): {np.unique(bad)[:10]}.")
        if batch_size <= 0 or batch_size % shard_count:
            raise ValueError(f"batch_size {batch_size} must be positive and divisible by "
                             f"the number of processes ({shard_count}).")
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} not in [0, {shard_count}).")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.seed = int(seed)
        self.shuffle_within_batch = shuffle_within_batch
        self.shard_index, self.shard_count = shard_index, shard_count
        self.shard = slice(shard_index * batch_size // shard_count,  # grain's even_split
                           (shard_index + 1) * batch_size // shard_count)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
        self._class_indices = [order[bounds[c]:bounds[c + 1]] for c in range(num_classes)]
        self.class_counts = np.diff(bounds)
        self.num_examples = labels.size
        self._order_cache: dict[int, tuple[int, np.ndarray]] = {}  # c -> (pass, order)
        self._state = SamplerState(0, np.zeros(num_classes, np.int64),
                                   np.zeros(num_classes, np.int64),
                                   np.zeros(num_classes, np.int64))
        self.set_quotas(uniform_quotas(batch_size, num_classes) if quotas is None
                        else quotas)

    # --- quotas and state -----------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        """Batches that together hold as many images as the training set (at least 1)."""
        return max(1, self.num_examples // self.batch_size)

    @property
    def step(self) -> int:
        return self._state.step

    @property
    def quotas(self) -> np.ndarray:
        return self._state.quotas.copy()

    def set_quotas(self, quotas: np.ndarray) -> None:
        """Quotas for every batch from the next one on."""
        quotas = np.asarray(quotas)
        if quotas.shape != (self.num_classes,):
            raise ValueError(f"quotas must have one entry per class ({self.num_classes}); "
                             f"got shape {quotas.shape}.")
        if not np.issubdtype(quotas.dtype, np.integer) or np.any(quotas < 0):
            raise ValueError(f"quotas must be non-negative integers; got {quotas}.")
        if int(quotas.sum()) != self.batch_size:
            raise ValueError(f"quotas sum to {int(quotas.sum())}, not the batch size "
                             f"{self.batch_size}.")
        empty = np.flatnonzero((quotas > 0) & (self.class_counts == 0))
        if empty.size:
            raise ValueError(f"classes {empty.tolist()} have no training images but "
                             f"quotas {quotas[empty].tolist()}; give them quota 0.")
        self._state.quotas = quotas.astype(np.int64)

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state; `set_state` of it resumes at the identical batch."""
        return {"seed": self.seed, "num_examples": int(self.num_examples),
                "class_counts": self.class_counts.tolist(), **self._state.to_json()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if (state["seed"] != self.seed or state["num_examples"] != self.num_examples
                or list(state["class_counts"]) != self.class_counts.tolist()):
            raise ValueError(
                "Sampler state belongs to another sampler (seed, dataset size or class "
                f"counts differ: state seed={state['seed']}, N={state['num_examples']}; "
                f"this seed={self.seed}, N={self.num_examples}). Restore with the same "
                "data split and seed.")
        self._state = SamplerState(int(state["step"]),
                                   np.asarray(state["passes"], np.int64),
                                   np.asarray(state["positions"], np.int64),
                                   self._state.quotas)
        self.set_quotas(np.asarray(state["quotas"], np.int64))

    # --- planning -------------------------------------------------------------------

    def _pass_orders(self, c: int, first: int, last: int) -> np.ndarray:
        """(last - first + 1, n_c) orders of class c's passes first..last.

        The order of a pass depends only on (seed, class, pass). The last pass computed
        is cached per class, so planning one batch at a time costs O(batch), not a
        fresh sort of every class.
        """
        n = self.class_counts[c]
        cached = self._order_cache.get(c)
        if cached is not None and first == last == cached[0]:
            return cached[1][None]
        passes = np.arange(first, last + 1)
        keys = _hash(self.seed, _CLASS_STREAM, c, passes[:, None], np.arange(n)[None, :])
        orders = np.argsort(keys, axis=1)
        self._order_cache[c] = (last, orders[-1])
        return orders

    def _class_stream(self, c: int, start: int, count: int) -> np.ndarray:
        """Items [start, start + count) of class c's endless stream of passes."""
        n = self.class_counts[c]
        first, last = start // n, (start + count - 1) // n
        order = self._pass_orders(c, first, last).ravel()
        offset = start - first * n
        return self._class_indices[c][order[offset:offset + count]]

    def plan(self, num_steps: int) -> np.ndarray:
        """(num_steps, B / shard_count) indices of the next batches; does not advance."""
        s = self._state
        columns = [
            self._class_stream(c, s.passes[c] * self.class_counts[c] + s.positions[c],
                               num_steps * q).reshape(num_steps, q)
            for c, q in enumerate(s.quotas) if q > 0]
        batches = np.concatenate(columns, axis=1)
        if self.shuffle_within_batch:
            steps = s.step + np.arange(num_steps)[:, None]
            keys = _hash(self.seed, _ROW_SHUFFLE, steps, np.arange(self.batch_size)[None])
            batches = np.take_along_axis(batches, np.argsort(keys, axis=1), axis=1)
        return batches[:, self.shard]

    def advance(self, num_steps: int) -> None:
        """Marks `num_steps` planned batches as consumed."""
        s = self._state
        n = np.maximum(self.class_counts, 1)
        consumed = s.positions + num_steps * s.quotas
        s.passes = s.passes + consumed // n
        s.positions = consumed % n
        s.step += num_steps

    def next_batch(self) -> np.ndarray:
        batch = self.plan(1)[0]
        self.advance(1)
        return batch
