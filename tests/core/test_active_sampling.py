"""The active-sampling state: per-class scores, F1 smoothing, Eq. 4 with the floor,
mixing with equal quotas, history, JSON."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from tlc_jax.active_sampling import (ActiveSampling, ActiveState, class_scores,
                                     next_quotas, smooth_f1)
from tlc_jax.metrics import balanced_confusion, precision_recall_f1
from tlc_jax.quotas import update_quotas

# Rows: true class; a head class (0) whose errors all land in the tail class (2).
CONFUSION = np.array([[80, 0, 20],
                      [2, 16, 2],
                      [0, 1, 4]])


def test_smooth_f1():
    assert np.allclose(smooth_f1(None, [0.5, np.nan], 0.9), [0.5, 0.0])
    assert np.allclose(smooth_f1(np.array([1.0, 0.0]), [0.0, 1.0], 0.75), [0.75, 0.25])
    assert np.allclose(smooth_f1(np.array([1.0, 0.0]), [0.0, 1.0], 0.0), [0.0, 1.0])


def test_next_quotas_without_smoothing_is_eq4_of_f1_and_records_history():
    policy = ActiveSampling(batch_size=20, class_counts=[50, 20, 5], min_quota=1)
    second = np.array([[90, 5, 5], [1, 18, 1], [1, 0, 4]])
    state = ActiveState()
    for cm in (CONFUSION, second):
        state, quotas = next_quotas(policy, state, cm)
        f1 = precision_recall_f1(cm)[2]
        np.testing.assert_array_equal(quotas, update_quotas(f1, 20, min_quota=1))
    assert len(state.quotas) == 2 and all(sum(q) == 20 for q in state.quotas)
    np.testing.assert_allclose(state.contrast_f1[0], np.round(
        precision_recall_f1(CONFUSION)[2], 4))


def test_scores_f1_recall_and_balanced_against_scikit_learn():
    y = np.repeat(np.arange(3), CONFUSION.sum(axis=1))
    p = np.concatenate([np.repeat(np.arange(3), row) for row in CONFUSION])
    f1 = class_scores(ActiveSampling(9, [1, 1, 1]), CONFUSION)
    np.testing.assert_allclose(f1, skm.f1_score(y, p, average=None))
    recall = class_scores(ActiveSampling(9, [1, 1, 1], signal="recall"), CONFUSION)
    np.testing.assert_allclose(recall, skm.recall_score(y, p, average=None))
    # Balanced: every true class weighted to the same total, as scikit-learn's
    # sample_weight = 1 / class size does (up to a common factor).
    weights = 1.0 / CONFUSION.sum(axis=1)[y]
    balanced = class_scores(ActiveSampling(9, [1, 1, 1], balanced=True), CONFUSION)
    np.testing.assert_allclose(balanced, skm.f1_score(y, p, average=None,
                                                      sample_weight=weights))
    # The tail class's precision no longer pays for the head class's size.
    assert balanced[2] > f1[2]


def test_balanced_confusion_keeps_recall_and_equalises_rows():
    cm = balanced_confusion(CONFUSION)
    np.testing.assert_allclose(cm.sum(axis=1), np.full(3, CONFUSION.sum() / 3))
    np.testing.assert_allclose(precision_recall_f1(cm)[1],
                               precision_recall_f1(CONFUSION)[1])
    empty = balanced_confusion(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(empty, [[3, 1], [0, 0]])


def test_mixing_with_equal_quotas():
    policy = ActiveSampling(batch_size=30, class_counts=[50, 20, 5], mix_balanced=0.5)
    _, mixed = next_quotas(policy, ActiveState(), CONFUSION)
    eq4 = update_quotas(precision_recall_f1(CONFUSION)[2], 30)
    shares = 0.5 * eq4 + 0.5 * 10  # By hand: halfway to 10 per class.
    assert mixed.sum() == 30 and np.all(np.abs(mixed - shares) < 1)
    with pytest.raises(ValueError, match="mix_balanced"):
        ActiveSampling(batch_size=30, class_counts=[1, 1, 1], mix_balanced=1.5)
    with pytest.raises(ValueError, match="signal 'precision'"):
        ActiveSampling(batch_size=30, class_counts=[1, 1, 1], signal="precision")


def test_next_quotas_smooths_the_score_with_momentum():
    policy = ActiveSampling(batch_size=12, class_counts=[9, 9, 9], f1_momentum=0.5,
                            signal="recall")
    state, _ = next_quotas(policy, ActiveState(), np.array(
        [[4, 0, 0], [4, 0, 0], [2, 0, 2]]))  # Recall [1, 0, 0.5].
    state, quotas = next_quotas(policy, state, np.array(
        [[0, 4, 0], [0, 4, 0], [2, 0, 2]]))  # Recall [0, 1, 0.5].
    np.testing.assert_allclose(state.f1_ema, [0.5, 0.5, 0.5])  # By hand.
    np.testing.assert_array_equal(quotas, [4, 4, 4])


def test_classes_without_training_images_get_no_quota():
    policy = ActiveSampling(batch_size=12, class_counts=[9, 0, 9], min_quota=1)
    _, quotas = next_quotas(policy, ActiveState(), np.diag([5, 0, 5]))
    assert quotas[1] == 0 and quotas.sum() <= 12


def test_state_round_trips_through_json_and_is_not_mutated():
    policy = ActiveSampling(batch_size=8, class_counts=[4, 4], f1_momentum=0.9)
    first, _ = next_quotas(policy, ActiveState(), np.array([[3, 1], [2, 2]]))
    second, _ = next_quotas(policy, first, np.array([[4, 0], [1, 3]]))
    assert len(first.quotas) == 1 and len(second.quotas) == 2  # Pure: no mutation.
    again = ActiveState.from_json(json.loads(json.dumps(second.to_json())))
    assert again == second
    with pytest.raises(ValueError, match="min_quota"):
        next_quotas(ActiveSampling(batch_size=1, class_counts=[4, 4]), ActiveState(),
                    np.eye(2))
