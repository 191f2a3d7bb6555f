"""Train / contrast / test splits: the tiny-class rule, groups, determinism."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlc_jax.data import longtail_indices, split_indices
from tlc_jax.data.splits import split_class_counts


def rule(n, test_fraction, contrast_fraction, m):
    """The documented rule, written out independently."""
    half_up = lambda x: math.floor(x + 0.5 + 1e-9)  # noqa: E731
    t = min(half_up(test_fraction * n), n - 1)
    c = min(max(half_up(contrast_fraction * n), m), n - t - 1) if contrast_fraction > 0 else 0
    return n - t - c, c, t


def check_partition(split, n):
    everything = np.concatenate([split["train"], split["contrast"], split["test"]])
    assert len(everything) == n and len(np.unique(everything)) == n  # Disjoint and covering.
    for idx in split.values():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)


def test_cifar100_lt_r100_tail_classes_of_five():
    labels = np.repeat(np.arange(100), 500)
    idx, counts = longtail_indices(labels, 100, seed=0)
    lt_labels = labels[idx]
    assert counts.min() == 5 and len(lt_labels) == 10847
    split = split_indices(
        lt_labels, test_fraction=0.0, contrast_fraction=0.1, min_contrast_per_class=1, seed=0
    )
    check_partition(split, len(lt_labels))
    per = split_class_counts(split, lt_labels, 100)
    assert per["test"].sum() == 0
    assert per["contrast"].min() >= 1 and per["train"].min() >= 1
    tail = counts == 5
    assert np.all(per["contrast"][tail] == 1) and np.all(per["train"][tail] == 4)
    assert per["contrast"][0] == 50 and per["train"][0] == 450  # Head: 10%.
    # With a floor of 2 contrast images the tail classes give 2 and keep 3.
    split2 = split_indices(
        lt_labels, test_fraction=0.0, contrast_fraction=0.1, min_contrast_per_class=2
    )
    per2 = split_class_counts(split2, lt_labels, 100)
    assert np.all(per2["contrast"][tail] == 2) and np.all(per2["train"][tail] == 3)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 10, 11, 57])
@pytest.mark.parametrize("fractions", [(0.0, 0.1), (0.2, 0.1), (0.5, 0.4), (0.0, 0.0)])
@pytest.mark.parametrize("m", [0, 1, 3])
def test_tiny_class_rule_exact(n, fractions, m):
    test_fraction, contrast_fraction = fractions
    labels = np.zeros(n, dtype=np.int64)
    split = split_indices(
        labels,
        test_fraction=test_fraction,
        contrast_fraction=contrast_fraction,
        min_contrast_per_class=m,
    )
    got = tuple(len(split[k]) for k in ("train", "contrast", "test"))
    assert got == rule(n, test_fraction, contrast_fraction, m)
    assert got[0] >= 1


def test_no_contrast_set_when_its_fraction_is_zero():
    # Carving only a test set must not drop min_contrast_per_class images into a contrast set.
    labels = np.repeat(np.arange(3), [1, 5, 20])
    split = split_indices(
        labels, test_fraction=0.2, contrast_fraction=0.0, min_contrast_per_class=2
    )
    assert len(split["contrast"]) == 0
    assert len(split["train"]) + len(split["test"]) == len(labels)


def test_single_image_class_stays_in_train():
    labels = np.array([0, 0, 0, 0, 0, 0, 1])
    split = split_indices(
        labels, test_fraction=0.3, contrast_fraction=0.3, min_contrast_per_class=2
    )
    assert 6 in split["train"]


def test_deterministic_and_seeded():
    labels = np.random.default_rng(0).integers(0, 7, size=500)
    a = split_indices(labels, test_fraction=0.2, contrast_fraction=0.1, seed=5)
    b = split_indices(labels, test_fraction=0.2, contrast_fraction=0.1, seed=5)
    c = split_indices(labels, test_fraction=0.2, contrast_fraction=0.1, seed=6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["contrast"], c["contrast"])


def test_grouped_split_keeps_groups_together_and_is_roughly_stratified():
    rng = np.random.default_rng(1)
    group_sizes = rng.integers(1, 5, size=1500)
    groups = np.repeat(np.arange(1500) * 7 + 3, group_sizes)  # Non-contiguous ids.
    group_labels = rng.choice(5, size=1500, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    labels = np.repeat(group_labels, group_sizes)
    perm = rng.permutation(len(labels))  # Images of a group need not be adjacent.
    labels, groups = labels[perm], groups[perm]
    split = split_indices(labels, groups=groups, test_fraction=0.2, contrast_fraction=0.1, seed=0)
    check_partition(split, len(labels))
    owners = {}
    for name, idx in split.items():
        for g in np.unique(groups[idx]):
            assert owners.setdefault(g, name) == name
    totals = np.bincount(labels, minlength=5)
    per = split_class_counts(split, labels, 5)
    np.testing.assert_allclose(per["test"] / totals, 0.2, atol=0.02)
    np.testing.assert_allclose(per["contrast"] / totals, 0.1, atol=0.02)


def test_grouped_with_one_group_per_class_keeps_it_for_training():
    labels = np.array([0, 0, 0, 1, 1])
    groups = np.array([9, 9, 9, 4, 4])
    split = split_indices(labels, groups=groups, test_fraction=0.2, contrast_fraction=0.2)
    np.testing.assert_array_equal(split["train"], np.arange(5))


def test_bad_arguments():
    labels = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="test_fraction"):
        split_indices(labels, test_fraction=1.0, contrast_fraction=0.0)
    with pytest.raises(ValueError, match="< 1"):
        split_indices(labels, test_fraction=0.6, contrast_fraction=0.5)
    with pytest.raises(ValueError, match="groups"):
        split_indices(labels, test_fraction=0.1, contrast_fraction=0.1, groups=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        split_indices(np.array([0, 2]), test_fraction=0.1, contrast_fraction=0.1, num_classes=2)
    with pytest.raises(ValueError, match="min_contrast_per_class"):
        split_indices(labels, test_fraction=0.1, contrast_fraction=0.1, min_contrast_per_class=-1)


# --- properties -----------------------------------------------------------------------------

fractions = st.tuples(st.floats(0.0, 0.6), st.floats(0.0, 0.39))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    class_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    fracs=fractions,
    m=st.integers(0, 5),
    seed=st.integers(0, 2**31),
)
def test_split_properties(class_sizes, fracs, m, seed):
    test_fraction, contrast_fraction = fracs
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(class_sizes)), class_sizes))
    split = split_indices(
        labels,
        test_fraction=test_fraction,
        contrast_fraction=contrast_fraction,
        min_contrast_per_class=m,
        seed=seed,
    )
    check_partition(split, len(labels))
    per = split_class_counts(split, labels, len(class_sizes))
    for k, n in enumerate(class_sizes):
        train, contrast, test = rule(n, test_fraction, contrast_fraction, m)
        assert (per["train"][k], per["contrast"][k], per["test"][k]) == (train, contrast, test)
        assert per["train"][k] >= 1
        if n - test >= m + 1 and contrast_fraction > 0:
            assert per["contrast"][k] >= m
    # Every image being its own group gives the same split.
    grouped = split_indices(
        labels,
        groups=np.arange(len(labels)),
        test_fraction=test_fraction,
        contrast_fraction=contrast_fraction,
        min_contrast_per_class=m,
        seed=seed,
    )
    for name in split:
        np.testing.assert_array_equal(grouped[name], split[name])


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    group_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=40),
    num_classes=st.integers(1, 5),
    mixed=st.booleans(),
    fracs=fractions,
    m=st.integers(0, 4),
    seed=st.integers(0, 2**31),
)
def test_grouped_split_properties(group_sizes, num_classes, mixed, fracs, m, seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(rng.permutation(len(group_sizes)) * 3, group_sizes)
    if mixed:  # Groups may hold several labels.
        labels = rng.integers(0, num_classes, size=len(groups))
    else:  # One label per group, like HAM10000 lesions.
        labels = np.repeat(rng.integers(0, num_classes, size=len(group_sizes)), group_sizes)
    order = rng.permutation(len(groups))
    labels, groups = labels[order], groups[order]
    split = split_indices(
        labels,
        groups=groups,
        test_fraction=fracs[0],
        contrast_fraction=fracs[1],
        min_contrast_per_class=m,
        seed=seed,
        num_classes=num_classes,
    )
    check_partition(split, len(labels))
    owner = {}
    for name, idx in split.items():
        for g in groups[idx]:
            assert owner.setdefault(int(g), name) == name  # Never straddles.
    if not mixed:
        present = np.unique(labels)
        assert set(np.unique(labels[split["train"]])) == set(present)  # No empty train class.
