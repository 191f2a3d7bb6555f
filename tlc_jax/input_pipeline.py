"""Quota batches through grain: a checkpointable iterator over `QuotaSampler` plans.

`QuotaBatchIterator` is a `grain.DatasetIterator`, so orbax saves and restores it with
`grain.checkpoint.CheckpointSave` / `CheckpointRestore`. With several processes each
plans and loads only its slice of every global batch (the sampler's `shard_options`,
grain's `ShardByJaxProcess` convention) and each checkpoints its own iterator (grain's
handler writes `process_<i>-of-<n>.json`), so a run resumes with as many processes as
saved it. Batches are planned as index
arrays in the main process (cheap) and loaded by one call per batch: a single numpy
gather for images held in memory or memory-mapped, which runs at millions of images/s;
grain worker processes (`worker_count`) pay off only when loading decodes files.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import grain
import numpy as np
from absl import flags

from tlc_jax.sampling import QuotaSampler


class ArrayBatchLoader:
    """`loader(indices)` -> {name: array[indices], ..., "index": indices}.

    Reads in sorted order (friendlier to memmaps); the batch keeps the planned order.
    """

    def __init__(self, **arrays: np.ndarray):
        self.arrays = arrays

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        order = np.argsort(indices, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        out = {name: a[indices[order]][inverse] for name, a in self.arrays.items()}
        out["index"] = indices
        return out


class QuotaBatchIterator(grain.DatasetIterator):
    """Yields `load(indices)` for every planned batch; its state is the sampler's.

    Batches are planned `chunk_steps` at a time (default: one epoch) and run through a
    grain pipeline with a bounded read-ahead (`read_options`). `set_quotas` takes effect
    from the next batch (planned batches are dropped), and the state is exact at every
    batch: restoring it yields the identical next batch. With `worker_count > 0` the
    worker processes restart with every chunk (every epoch and every quota change, a
    few seconds each): worth it only when loading a batch is slow.
    """

    def __init__(self, sampler: QuotaSampler, load: Callable[[np.ndarray], Any], *,
                 chunk_steps: int | None = None, worker_count: int = 0,
                 read_options: grain.ReadOptions | None = None):
        super().__init__()
        self.sampler = sampler
        self.load = load
        self.chunk_steps = chunk_steps or sampler.steps_per_epoch
        self.worker_count = worker_count
        # Each element is a whole batch: grain's default read-ahead (hundreds of
        # elements on 16 threads) would hold hundreds of batches in memory.
        self.read_options = read_options or grain.ReadOptions(num_threads=2,
                                                              prefetch_buffer_size=4)
        self._inner = None
        self._pending = 0  # Planned batches not yet handed out.

    def _start_chunk(self) -> None:
        ds = grain.MapDataset.source(self.sampler.plan(self.chunk_steps)).map(self.load)
        ds = ds.to_iter_dataset(self.read_options)
        if self.worker_count > 0:
            if not flags.FLAGS.is_parsed():  # Outside an absl app grain's flags are
                flags.FLAGS.mark_as_parsed()  # unparsed; its workers read the defaults.
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
        self._inner, self._pending = iter(ds), self.chunk_steps

    def _drop_chunk(self) -> None:
        if self._inner is not None and hasattr(self._inner, "close"):
            self._inner.close()
        self._inner, self._pending = None, 0

    def __next__(self):
        if self._pending == 0:
            self._drop_chunk()
            self._start_chunk()
        batch = next(self._inner)
        self._pending -= 1
        self.sampler.advance(1)
        return batch

    def set_quotas(self, quotas: np.ndarray) -> None:
        self.sampler.set_quotas(quotas)
        self._drop_chunk()

    def get_state(self) -> dict[str, Any]:
        return self.sampler.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.sampler.set_state(state)
        self._drop_chunk()

    def close(self) -> None:
        self._drop_chunk()
