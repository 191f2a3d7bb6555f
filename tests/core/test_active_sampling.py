"""The active-sampling state: F1 smoothing, Eq. 4 with the floor, history, JSON."""

import json

import numpy as np
import pytest

from tlc_jax.active_sampling import (ActiveSampling, ActiveState, next_quotas,
                                     smooth_f1)
from tlc_jax.quotas import update_quotas


def test_smooth_f1():
    assert np.allclose(smooth_f1(None, [0.5, np.nan], 0.9), [0.5, 0.0])
    assert np.allclose(smooth_f1(np.array([1.0, 0.0]), [0.0, 1.0], 0.75), [0.75, 0.25])
    assert np.allclose(smooth_f1(np.array([1.0, 0.0]), [0.0, 1.0], 0.0), [0.0, 1.0])


def test_next_quotas_without_smoothing_is_eq4_and_records_history():
    policy = ActiveSampling(batch_size=20, class_counts=[50, 20, 5, 1], min_quota=1)
    f1s = [np.array([0.9, 0.5, 0.2, np.nan]), np.array([0.8, 0.8, 0.6, 0.1])]
    state = ActiveState()
    for f1 in f1s:
        state, quotas = next_quotas(policy, state, f1)
        np.testing.assert_array_equal(quotas, update_quotas(f1, 20, min_quota=1))
    assert state.quotas == tuple(tuple(update_quotas(f, 20).tolist()) for f in f1s)
    assert state.contrast_f1[0][:3] == (0.9, 0.5, 0.2) and np.isnan(state.contrast_f1[0][3])
    assert all(sum(q) == 20 for q in state.quotas)


def test_next_quotas_smooths_f1_with_momentum():
    policy = ActiveSampling(batch_size=12, class_counts=[9, 9, 9], f1_momentum=0.5)
    state, _ = next_quotas(policy, ActiveState(), np.array([1.0, 0.0, 0.5]))
    state, quotas = next_quotas(policy, state, np.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(state.f1_ema, [0.5, 0.5, 0.5])  # By hand.
    np.testing.assert_array_equal(quotas, [4, 4, 4])
    assert state.contrast_f1[-1] == (0.0, 1.0, 0.5)  # History keeps the raw F1.


def test_classes_without_training_images_get_no_quota():
    policy = ActiveSampling(batch_size=12, class_counts=[9, 0, 9], min_quota=1)
    _, quotas = next_quotas(policy, ActiveState(), np.array([0.5, 0.5, 0.5]))
    assert quotas[1] == 0


def test_state_round_trips_through_json_and_is_not_mutated():
    policy = ActiveSampling(batch_size=8, class_counts=[4, 4], f1_momentum=0.9)
    first, _ = next_quotas(policy, ActiveState(), np.array([0.25, 0.75]))
    second, _ = next_quotas(policy, first, np.array([0.5, 0.5]))
    assert len(first.quotas) == 1 and len(second.quotas) == 2  # Pure: no mutation.
    again = ActiveState.from_json(json.loads(json.dumps(second.to_json())))
    assert again == second
    with pytest.raises(ValueError, match="min_quota"):
        next_quotas(ActiveSampling(batch_size=1, class_counts=[4, 4]), ActiveState(),
                    np.array([0.5, 0.5]))
