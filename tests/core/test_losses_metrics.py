"""Losses against direct formulas and optax/torch; metrics against scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import metrics as skm

from tlc_jax import losses
from tlc_jax import metrics as M
from tlc_jax.metrics import accumulate_confusion, classification_report

RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(size=(32, 7)) * 3).astype(np.float32)
LABELS = RNG.integers(0, 7, 32)


def softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_matches_optax_and_torch():
    got = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))
    np.testing.assert_allclose(
        got, optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS), rtol=1e-5)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS),
                                            reduction="none")
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_loss_matches_the_formula(gamma):
    p = softmax64(LOGITS)[np.arange(32), LABELS]
    alpha = RNG.random(7)
    expected = -alpha[LABELS] * (1 - p) ** gamma * np.log(p)
    got = losses.focal_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS), gamma=gamma,
                            alpha=jnp.asarray(alpha))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_focal_with_gamma_0_is_cross_entropy():
    np.testing.assert_allclose(losses.focal_loss(LOGITS, LABELS, gamma=0.0),
                               losses.cross_entropy(LOGITS, LABELS), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.2, 0.5, 2.0])
def test_focal_gradient_is_finite_when_confident(gamma):
    logits = jnp.array([[60.0, -60.0, 0.0], [0.0, 1.0, 2.0]])  # p_y -> 1 in row 0.
    grad = jax.grad(lambda z: losses.focal_loss(z, jnp.array([0, 2]), gamma).sum())(logits)
    assert np.isfinite(np.asarray(grad)).all()


def test_complement_entropy_matches_the_formula():
    p = softmax64(LOGITS)
    q = p / (1 - p[np.arange(32), LABELS])[:, None]
    terms = np.where(np.arange(7)[None] == LABELS[:, None], 0.0, q * np.log(q))
    expected = terms.sum(-1) / (7 - 1)
    got = losses.complement_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Minimum -log(K-1)/(K-1) when wrong classes are uniform.
    flat = jnp.zeros((1, 7)).at[0, 3].set(5.0)
    np.testing.assert_allclose(losses.complement_entropy(flat, jnp.array([3])),
                               -np.log(6) / 6, rtol=1e-6)


def test_complement_entropy_gradient_is_finite_and_ignores_the_true_logit():
    grad = jax.grad(lambda z: losses.complement_entropy(z, jnp.asarray(LABELS)).sum())(
        jnp.asarray(LOGITS) * 20)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[np.arange(32), LABELS], 0.0)


def test_report_matches_scikit_learn():
    y = RNG.integers(0, 5, 400)
    p = np.where(RNG.random(400) < 0.7, y, RNG.integers(0, 5, 400))
    p[p == 4] = 0  # Class 4 never predicted: precision undefined -> 0.
    cm = np.asarray(accumulate_confusion(jnp.zeros((5, 5), jnp.int32), jnp.asarray(y),
                                         jnp.asarray(p), jnp.ones(400, bool)))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=range(5)))
    r = classification_report(cm, train_counts=[500, 120, 100, 20, 19])
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro",
                                                       zero_division=0))
    recall = skm.recall_score(y, p, average=None)
    np.testing.assert_allclose(r["per_class"]["accuracy"], recall)
    np.testing.assert_allclose(r["per_class"]["precision"],
                               skm.precision_score(y, p, average=None, zero_division=0))
    assert r["worst_class_accuracy"] == pytest.approx(recall.min())
    # > 100 many, 20..100 medium, < 20 few.
    assert r["many_shot_accuracy"] == pytest.approx(recall[:2].mean())
    assert r["medium_shot_accuracy"] == pytest.approx(recall[2:4].mean())
    assert r["few_shot_accuracy"] == pytest.approx(recall[4])


def test_confusion_mask_drops_padding_and_empty_groups_are_none():
    cm = accumulate_confusion(jnp.zeros((3, 3), jnp.int32), jnp.array([0, 1, 2]),
                              jnp.array([0, 1, 1]), jnp.array([True, True, False]))
    assert int(cm.sum()) == 2 and int(cm[2, 1]) == 0
    r = classification_report(np.asarray(cm), train_counts=[5, 5, 5])
    assert r["many_shot_accuracy"] is None and r["few_shot_accuracy"] == 1.0


def test_confusion_and_f1_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    # Class 5 is never predicted and class 4 never occurs: both have undefined values.
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 5, 500))
    y[y == 4] = 3
    p[p == 5] = 0
    cm = M.confusion_matrix(y, p, 6)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=range(6)))
    precision, recall, f1 = M.precision_recall_f1(cm)
    ref = skm.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    np.testing.assert_allclose(precision, ref[0])
    np.testing.assert_allclose(recall, ref[1])
    np.testing.assert_allclose(f1, ref[2])
    assert f1[4] == 0 and f1[5] == 0


def test_confusion_rejects_out_of_range():
    with pytest.raises(ValueError, match="labels outside \\[0, 3\\)"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        M.confusion_matrix([0, 1], [0], 3)
