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
