"""Quota sampler: exact class counts, no replacement within a pass, determinism, resume,
several processes, and the grain iterator saved and restored through orbax."""

import json

import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from tlc_jax.input_pipeline import ArrayBatchLoader, QuotaBatchIterator
from tlc_jax.sampling import QuotaSampler

COUNTS = [50, 20, 10, 7, 3]  # A small long tail.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(5), COUNTS))


def class_counts(labels_of_batch):
    return np.bincount(labels_of_batch, minlength=5)


@pytest.mark.parametrize("quotas", [
    [4, 4, 4, 4, 4],
    [2, 3, 4, 5, 6],  # Classes 3 and 4 are oversampled (more per batch than they have).
    [20, 0, 0, 0, 0],
    [0, 0, 0, 1, 19],
])
def test_every_batch_has_exactly_the_quotas(quotas):
    sampler = QuotaSampler(LABELS, 5, 20, seed=3, quotas=np.array(quotas))
    for batch in sampler.plan(25):
        np.testing.assert_array_equal(class_counts(LABELS[batch]), quotas)


def test_uniform_start_and_epoch_length():
    sampler = QuotaSampler(LABELS, 5, 21)
    np.testing.assert_array_equal(sampler.quotas, [5, 4, 4, 4, 4])
    assert sampler.steps_per_epoch == len(LABELS) // 21
    assert QuotaSampler(LABELS, 5, 1000).steps_per_epoch == 1


@pytest.mark.parametrize("cls, quota", [(0, 6), (3, 5), (4, 7)])
def test_without_replacement_within_a_pass(cls, quota):
    quotas = np.full(5, 2)
    quotas[cls] = quota
    sampler = QuotaSampler(LABELS, 5, int(quotas.sum()), seed=1, quotas=quotas,
                           shuffle_within_batch=False)
    plan = sampler.plan(40)
    start = int(quotas[:cls].sum())
    stream = plan[:, start:start + quota].ravel()  # Class `cls` in drawing order.
    n = COUNTS[cls]
    members = np.flatnonzero(LABELS == cls)
    passes = [stream[i:i + n] for i in range(0, len(stream) - n + 1, n)]
    for p in passes:  # Each pass uses every image of the class exactly once.
        np.testing.assert_array_equal(np.sort(p), members)
    assert any(not np.array_equal(passes[0], p) for p in passes[1:])  # Reshuffled.


def test_deterministic_and_seed_dependent():
    a = QuotaSampler(LABELS, 5, 20, seed=7).plan(10)
    np.testing.assert_array_equal(a, QuotaSampler(LABELS, 5, 20, seed=7).plan(10))
    assert not np.array_equal(a, QuotaSampler(LABELS, 5, 20, seed=8).plan(10))


def run(sampler, schedule):
    """Steps one at a time, applying {step: quotas} changes; returns the batches."""
    out = []
    for step in range(sampler.step, 30):
        if step in schedule:
            sampler.set_quotas(np.array(schedule[step]))
        out.append(sampler.next_batch())
    return np.stack(out)


SCHEDULE = {0: [4, 4, 4, 4, 4], 6: [1, 2, 3, 6, 8], 17: [10, 5, 3, 1, 1]}


def test_planning_in_chunks_equals_step_by_step():
    stepwise = run(QuotaSampler(LABELS, 5, 20, seed=2), SCHEDULE)
    chunked = QuotaSampler(LABELS, 5, 20, seed=2)
    parts = []
    for start, end in [(0, 6), (6, 17), (17, 30)]:
        chunked.set_quotas(np.array(SCHEDULE[start]))
        parts.append(chunked.plan(end - start))
        chunked.advance(end - start)
    np.testing.assert_array_equal(np.concatenate(parts), stepwise)


@pytest.mark.parametrize("stop", [3, 6, 11, 23])
def test_resume_from_saved_state_gives_the_same_batches(stop):
    uninterrupted = run(QuotaSampler(LABELS, 5, 20, seed=2), SCHEDULE)
    first = QuotaSampler(LABELS, 5, 20, seed=2)
    head = run_until(first, stop)
    state = json.loads(json.dumps(first.get_state()))  # Through JSON, as on disk.
    resumed = QuotaSampler(LABELS, 5, 20, seed=2)
    resumed.set_state(state)
    tail = run(resumed, {k: v for k, v in SCHEDULE.items() if k >= stop})
    np.testing.assert_array_equal(np.concatenate([head, tail]), uninterrupted)


def run_until(sampler, stop):
    out = []
    for step in range(stop):
        if step in SCHEDULE:
            sampler.set_quotas(np.array(SCHEDULE[step]))
        out.append(sampler.next_batch())
    return np.stack(out)


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_take_slices_of_the_same_global_batch(processes):
    quotas = np.array([2, 3, 4, 5, 6])
    whole = QuotaSampler(LABELS, 5, 20, seed=5, quotas=quotas).plan(8)
    slices = [QuotaSampler(LABELS, 5, 20, seed=5, quotas=quotas, shard_index=i,
                           shard_count=processes).plan(8) for i in range(processes)]
    assert slices[0].shape == (8, 20 // processes)
    np.testing.assert_array_equal(np.concatenate(slices, axis=1), whole)


def test_images_are_used_evenly():
    sampler = QuotaSampler(LABELS, 5, 20, seed=0)
    uses = np.bincount(sampler.plan(200).ravel(), minlength=len(LABELS))
    for c in range(5):
        members = uses[LABELS == c]
        assert members.max() - members.min() <= 1  # Only the unfinished pass differs.


@pytest.mark.parametrize("kwargs, message", [
    ({"quotas": np.array([4, 4, 4, 4])}, "one entry per class"),
    ({"quotas": np.array([4, 4, 4, 4, 5])}, "sum to 21, not the batch size 20"),
    ({"quotas": np.array([8, 8, 8, 0, -4])}, "non-negative integers"),
    ({"quotas": np.array([4.0, 4, 4, 4, 4])}, "non-negative integers"),
    ({"shard_count": 3}, "divisible by the number of processes"),
])
def test_bad_sampler_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuotaSampler(LABELS, 5, 20, **kwargs)


def test_bad_labels_and_empty_classes():
    with pytest.raises(ValueError, match="labels outside \\[0, 5\\)"):
        QuotaSampler(np.array([0, 1, 5]), 5, 5)
    with pytest.raises(ValueError, match="1-D integer"):
        QuotaSampler(np.array([0.0, 1.0]), 2, 2)
    with pytest.raises(ValueError, match="classes \\[2\\] have no training images"):
        QuotaSampler(np.array([0, 1, 0, 1]), 3, 3)
    sampler = QuotaSampler(np.array([0, 1, 0, 1]), 3, 4, quotas=np.array([2, 2, 0]))
    assert class_counts(np.array([0, 1, 0, 1])[sampler.next_batch()])[:3].tolist() == [2, 2, 0]


def test_state_of_another_sampler_is_refused():
    state = QuotaSampler(LABELS, 5, 20, seed=1).get_state()
    with pytest.raises(ValueError, match="belongs to another sampler"):
        QuotaSampler(LABELS, 5, 20, seed=2).set_state(state)
    with pytest.raises(ValueError, match="belongs to another sampler"):
        QuotaSampler(LABELS[:-1], 5, 20, seed=1).set_state(state)


# ---------------------------------------------------------------------------------
# The grain iterator
# ---------------------------------------------------------------------------------

IMAGES = np.arange(len(LABELS), dtype=np.uint8)[:, None, None, None] * np.ones(
    (1, 4, 4, 3), np.uint8)


def make_iterator(**kwargs):
    sampler = QuotaSampler(LABELS, 5, 20, seed=4)
    return QuotaBatchIterator(sampler, ArrayBatchLoader(image=IMAGES, label=LABELS),
                              **kwargs)


def test_iterator_batches_follow_quotas_and_sampler_plan():
    it = make_iterator(chunk_steps=4)
    expected = QuotaSampler(LABELS, 5, 20, seed=4).plan(10)
    batches = [next(it) for _ in range(10)]
    for batch, idx in zip(batches, expected):
        np.testing.assert_array_equal(batch["index"], idx)
        np.testing.assert_array_equal(batch["label"], LABELS[idx])
        np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], idx.astype(np.uint8))
    it.set_quotas(np.array([1, 1, 1, 1, 16]))  # Mid-chunk: applies to the next batch.
    assert class_counts(next(it)["label"]).tolist() == [1, 1, 1, 1, 16]


def test_iterator_checkpoint_through_orbax(tmp_path):
    it = make_iterator(chunk_steps=3)
    for _ in range(4):
        next(it)
    it.set_quotas(np.array([2, 3, 4, 5, 6]))
    next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(5, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = [next(it)["index"] for _ in range(6)]

    restored = make_iterator(chunk_steps=3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(5, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(restored)))
    np.testing.assert_array_equal(restored.sampler.quotas, [2, 3, 4, 5, 6])
    for idx in expected:
        np.testing.assert_array_equal(next(restored)["index"], idx)


@pytest.mark.slow
def test_iterator_with_grain_worker_processes_matches_in_process():
    in_process = make_iterator(chunk_steps=5)
    workers = make_iterator(chunk_steps=5, worker_count=2)
    try:
        for _ in range(7):
            a, b = next(in_process), next(workers)
            np.testing.assert_array_equal(a["index"], b["index"])
            np.testing.assert_array_equal(a["image"], b["image"])
    finally:
        workers.close()
