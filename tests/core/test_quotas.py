"""Eq. 4 (per-class F1 -> quotas) against hand computations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlc_jax import quotas as Q


@pytest.mark.parametrize("f1, batch, min_quota, expected", [
    # Exact shares: w = 1 - F1 = [.1, .5, 1, .4], 20 * w / 2.0.
    ([0.9, 0.5, 0.0, 0.6], 20, 1, [1, 5, 10, 4]),
    # Shares [1.11, 3.89, 5.0]: floors sum to 9, the unit goes to class 1 (.89).
    ([0.8, 0.3, 0.1], 10, 1, [1, 4, 5]),
    # Floor 2: class 0 pinned; 8 left over w [.7, .9] -> [3.5, 4.5]; the tie of .5 and
    # .5 goes to the lower index.
    ([0.8, 0.3, 0.1], 10, 2, [2, 4, 4]),
    # A perfect class would get 0; the floor keeps one image of it.
    ([1.0, 0.5, 0.5], 9, 1, [1, 4, 4]),
    ([1.0, 0.5, 0.5], 9, 0, [0, 5, 4]),
    # Undefined F1 counts as 0; all perfect -> uniform; all zero -> uniform.
    ([np.nan, 0.5], 6, 1, [4, 2]),
    ([1.0, 1.0, 1.0], 10, 1, [4, 3, 3]),
    ([0.0, 0.0, 0.0], 10, 1, [4, 3, 3]),
    ([0.3], 7, 1, [7]),
])
def test_update_quotas_worked_examples(f1, batch, min_quota, expected):
    np.testing.assert_array_equal(Q.update_quotas(np.array(f1), batch, min_quota=min_quota),
                                  expected)


def test_update_quotas_paper_start_is_uniform():
    np.testing.assert_array_equal(Q.uniform_quotas(12 * 10, 10), np.full(10, 12))


@pytest.mark.parametrize("kwargs, message", [
    ({"f1": np.array([0.5, 1.5]), "batch_size": 4}, "must lie in \\[0, 1\\]"),
    ({"f1": np.zeros((2, 2)), "batch_size": 4}, "non-empty vector"),
    ({"f1": np.zeros(5), "batch_size": 4}, "at least 5"),
    ({"f1": np.zeros(2), "batch_size": 4, "min_quota": -1}, "min_quota must be >= 0"),
])
def test_update_quotas_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Q.update_quotas(**kwargs)


f1_vectors = st.lists(st.one_of(st.floats(0, 1), st.just(float("nan")), st.just(1.0),
                                st.just(0.0)), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(f1=f1_vectors, per_class=st.integers(1, 8), min_quota=st.integers(0, 2),
       extra=st.integers(0, 50))
def test_update_quotas_properties(f1, per_class, min_quota, extra):
    f1 = np.array(f1)
    batch = len(f1) * max(per_class, min_quota) + extra
    q = Q.update_quotas(f1, batch, min_quota=min_quota)
    assert q.dtype == np.int64 and q.shape == f1.shape
    assert q.sum() == batch
    assert q.min() >= min_quota
    # Monotone: a class with larger 1 - F1 never gets fewer images (weights closer than
    # float noise count as ties).
    w = 1 - np.nan_to_num(f1, nan=0.0)
    for i in range(len(f1)):
        for j in range(len(f1)):
            if w[i] > w[j] + 1e-9:
                assert q[i] >= q[j], (f1, q)
    # Equal to the rounded Eq. 4 wherever the floor does not bind.
    if w.sum() > 0 and min_quota == 0:
        assert np.all(np.abs(q - batch * w / w.sum()) < 1)


def test_update_quotas_is_fast_enough_to_call_every_step():
    # Not a timing test: just the 1,000-class case the benchmark reports, end to end.
    f1 = np.random.default_rng(0).random(1000)
    q = Q.update_quotas(f1, 4096)
    assert q.sum() == 4096 and q.min() >= 1


def test_instance_quotas_are_the_expected_batch_counts():
    np.testing.assert_allclose(Q.instance_quotas([30, 10, 0], 8), [6.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="at least one training image"):
        Q.instance_quotas([0, 0], 8)


# --- static compositions of the sampling baselines ------------------------------------


@pytest.mark.parametrize("prior, batch, expected", [
    ([0.5, 0.3, 0.2], 10, [5, 3, 2]),
    ([1, 1, 1], 10, [4, 3, 3]),  # Ties to the lower index, like uniform_quotas.
    # Unnormalised: shares [4.67, 0, 2.33]; floors sum to 6, the unit goes to class 0.
    ([2, 0, 1], 7, [5, 0, 2]),
    # A zero-prior class gets nothing even where a tiny positive share rounds to 0.
    ([0, 1e-12, 1], 5, [0, 0, 5]),
    ([3.0], 4, [4]),
    ([0.2, 0.8], 0, [0, 0]),
])
def test_quotas_from_prior_worked_examples(prior, batch, expected):
    q = Q.quotas_from_prior(np.array(prior), batch)
    assert q.dtype == np.int64
    np.testing.assert_array_equal(q, expected)


@pytest.mark.parametrize("prior, batch, message", [
    ([0.0, 0.0], 4, "not all zero"),
    ([0.5, -0.1], 4, "non-negative"),
    ([np.nan, 1.0], 4, "finite"),
    ([[0.5, 0.5]], 4, "non-empty vector"),
    ([], 4, "non-empty vector"),
    ([0.5, 0.5], -1, "batch_size must be >= 0"),
])
def test_quotas_from_prior_bad_input(prior, batch, message):
    with pytest.raises(ValueError, match=message):
        Q.quotas_from_prior(np.array(prior), batch)


priors = st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e6)), min_size=1,
                  max_size=40).filter(lambda p: sum(p) > 0)


@settings(max_examples=300, deadline=None)
@given(prior=priors, batch=st.integers(0, 5000))
def test_quotas_from_prior_properties(prior, batch):
    prior = np.array(prior)
    q = Q.quotas_from_prior(prior, batch)
    assert q.dtype == np.int64 and q.shape == prior.shape
    assert q.sum() == batch and q.min() >= 0
    assert np.all(q[prior == 0] == 0)
    assert np.all(np.abs(q - batch * prior / prior.sum()) < 1)
    # Deterministic.
    np.testing.assert_array_equal(q, Q.quotas_from_prior(prior, batch))


def test_class_balanced_quotas_are_uniform_quotas():
    np.testing.assert_array_equal(Q.class_balanced_quotas(10, 3), [4, 3, 3])
    np.testing.assert_array_equal(Q.class_balanced_quotas(128, 10),
                                  Q.uniform_quotas(128, 10))
    # With counts, an empty class gets 0 and the others share the batch equally.
    np.testing.assert_array_equal(Q.class_balanced_quotas(10, 4, [5, 0, 7, 1]),
                                  [4, 0, 3, 3])
    np.testing.assert_array_equal(Q.class_balanced_quotas(10, 3, [5, 9, 1]), [4, 3, 3])
    with pytest.raises(ValueError, match="not num_classes=4"):
        Q.class_balanced_quotas(10, 4, [5, 9, 1])


@pytest.mark.parametrize("counts, batch, expected", [
    ([100, 25, 0, 4], 17, [10, 5, 0, 2]),  # sqrt [10, 5, 0, 2] sums to 17: exact.
    # sqrt [3, 2, 1] -> shares [5, 3.33, 1.67]; the unit goes to class 2 (.67).
    ([9, 4, 1], 10, [5, 3, 2]),
    ([6000, 60], 11, [10, 1]),  # sqrt ratio 10: shares [10, 1] (instance: [10.9, .1]).
])
def test_sqrt_quotas_worked_examples(counts, batch, expected):
    np.testing.assert_array_equal(Q.sqrt_quotas(np.array(counts), batch), expected)


@pytest.mark.parametrize("epoch, expected", [
    (0, [12, 6, 2]),   # p = n / N = [.6, .3, .1]: instance-balanced.
    # t/T = 1/4: p = .75 [.6, .3, .1] + .25 / 3 -> shares [10.67, 6.17, 3.17].
    (1, [11, 6, 3]),
    # t/T = 1/2: shares [9.33, 6.33, 4.33]; equal remainders, the unit to class 0.
    (2, [10, 6, 4]),
    (4, [7, 7, 6]),    # p = 1/3 each: class-balanced.
])
def test_progressive_quotas_worked_examples(epoch, expected):
    np.testing.assert_array_equal(Q.progressive_quotas([60, 30, 10], 20, epoch, 4),
                                  expected)


def test_progressive_quotas_empty_class_gets_zero_throughout():
    for epoch in range(5):
        q = Q.progressive_quotas([60, 0, 30, 10], 20, epoch, 4)
        assert q[1] == 0 and q.sum() == 20
    np.testing.assert_array_equal(Q.progressive_quotas([60, 0, 30, 10], 20, 4, 4),
                                  [7, 0, 7, 6])


counts_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=30).filter(
    lambda c: sum(c) > 0)


@settings(max_examples=200, deadline=None)
@given(counts=counts_lists, batch=st.integers(1, 1000), total=st.integers(1, 200),
       data=st.data())
def test_baseline_quotas_properties_and_limits(counts, batch, total, data):
    counts = np.array(counts)
    n = counts.size
    epoch = data.draw(st.integers(0, total))
    progressive = Q.progressive_quotas(counts, batch, epoch, total)
    for q in (Q.sqrt_quotas(counts, batch), progressive,
              Q.class_balanced_quotas(batch, n, counts)):
        assert q.dtype == np.int64 and q.shape == (n,)
        assert q.sum() == batch and q.min() >= 0
        assert np.all(q[counts == 0] == 0)
    # Progressive within one image of B * p_k(t) for every t.
    t = epoch / total
    p = (1 - t) * counts / counts.sum() + t * (counts > 0) / (counts > 0).sum()
    assert np.all(np.abs(progressive - batch * p) < 1)
    # t = 0: instance-balanced up to rounding; t = T: class-balanced.
    start = Q.progressive_quotas(counts, batch, 0, total)
    np.testing.assert_array_equal(start, Q.quotas_from_prior(counts, batch))
    assert np.all(np.abs(start - Q.instance_quotas(counts, batch)) < 1)
    np.testing.assert_array_equal(Q.progressive_quotas(counts, batch, total, total),
                                  Q.class_balanced_quotas(batch, n, counts))
    assert np.all(np.abs(Q.sqrt_quotas(counts, batch)
                         - batch * np.sqrt(counts) / np.sqrt(counts).sum()) < 1)


@pytest.mark.parametrize("call, message", [
    (lambda: Q.progressive_quotas([5, 5], 4, 5, 4), "0 <= epoch <= total_epochs"),
    (lambda: Q.progressive_quotas([5, 5], 4, -1, 4), "0 <= epoch <= total_epochs"),
    (lambda: Q.progressive_quotas([5, 5], 4, 0, 0), "total_epochs > 0"),
    (lambda: Q.sqrt_quotas([5, -1], 4), "non-negative counts"),
    (lambda: Q.sqrt_quotas([0, 0], 4), "at least one training image"),
    (lambda: Q.class_balanced_quotas(4, 2, [0, 0]), "at least one training image"),
])
def test_baseline_quotas_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
