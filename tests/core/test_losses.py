"""The long-tail baselines' losses against their papers' formulas and reference code.

Class-balanced weights (Cui et al. 2019), weighted reductions against PyTorch, LDAM
(Cao et al. 2019) against a transcription of its reference LDAMLoss, logit adjustment
(Menon et al. 2021) and balanced softmax (Ren et al. 2020) against the formulas, and
tau-normalisation (Kang et al. 2020) against a numpy transcription.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax import losses

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(1)
K = 6
LOGITS = (RNG.normal(size=(40, K)) * 2).astype(np.float32)
LABELS = RNG.integers(0, K, 40)
COUNTS = np.array([5000, 2000, 500, 120, 30, 5])


def log_softmax64(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# --- class-balanced weights -----------------------------------------------------------


def cui_weights(counts, beta):
    """The authors' code (class-balanced-loss), in float64."""
    effective_num = 1.0 - np.power(beta, counts)
    weights = (1.0 - beta) / np.array(effective_num)
    return weights / np.sum(weights) * len(counts)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999])
def test_class_balanced_weights_match_the_reference_code(beta):
    got = losses.class_balanced_weights(COUNTS, beta)
    assert got.dtype == jnp.float32 and got.shape == (K,)
    np.testing.assert_allclose(got, cui_weights(COUNTS.astype(np.float64), beta),
                               rtol=2e-6)
    assert float(jnp.sum(got)) == pytest.approx(K, rel=1e-6)


def test_class_balanced_weights_by_hand_and_limits():
    # n = [1, 2], beta = 1/2: raw [0.5 / 0.5, 0.5 / 0.75] = [1, 2/3], sum 5/3 -> * 6/5.
    np.testing.assert_allclose(losses.class_balanced_weights([1, 2], 0.5), [1.2, 0.8],
                               rtol=1e-6)
    # beta = 0: no re-weighting; beta -> 1: inverse class frequency.
    np.testing.assert_allclose(losses.class_balanced_weights(COUNTS, 0.0), np.ones(K))
    inverse = (1 / COUNTS) / (1 / COUNTS).sum() * K
    np.testing.assert_allclose(losses.class_balanced_weights(COUNTS, 1 - 1e-9), inverse,
                               rtol=1e-4)


def test_class_balanced_weights_empty_class_gets_zero():
    counts = np.array([400, 0, 40, 4])
    got = np.asarray(losses.class_balanced_weights(counts, 0.99))
    assert got[1] == 0 and np.isfinite(got).all()
    assert got.sum() == pytest.approx(4, rel=1e-6)
    present = cui_weights(np.array([400.0, 40, 4]), 0.99)  # Sums to 3 over 3 classes.
    np.testing.assert_allclose(got[[0, 2, 3]], present * 4 / 3, rtol=2e-6)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_class_balanced_weights_reject_beta_outside_0_1(beta):
    with pytest.raises(ValueError, match="beta must lie in"):
        losses.class_balanced_weights(COUNTS, beta)


# --- applying class weights -----------------------------------------------------------


def test_weighted_is_the_label_weight_times_the_loss():
    w = RNG.random(K).astype(np.float32)
    per_example = losses.cross_entropy(LOGITS, LABELS)
    np.testing.assert_allclose(losses.weighted(per_example, LABELS, w),
                               w[LABELS] * np.asarray(per_example), rtol=1e-6)


def test_weighted_mean_matches_torch_weighted_cross_entropy():
    w = losses.class_balanced_weights(COUNTS, 0.999)
    per_example = losses.cross_entropy(LOGITS, LABELS)
    ref = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS),
                          weight=torch.tensor(np.asarray(w)))
    got = losses.weighted_mean(per_example, LABELS, w)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    # Not the plain mean of the weighted losses: that one divides by B, not sum w_y.
    plain = float(jnp.mean(losses.weighted(per_example, LABELS, w)))
    assert plain == pytest.approx(float(got) * float(jnp.sum(w[LABELS])) / len(LABELS),
                                  rel=1e-5)
    assert plain != pytest.approx(float(got), rel=1e-3)
    # Unit weights: both are the mean.
    ones = np.ones(K, np.float32)
    assert float(losses.weighted_mean(per_example, LABELS, ones)) == pytest.approx(
        float(jnp.mean(per_example)), rel=1e-6)


def test_weighted_mean_is_zero_where_torch_gives_nan():
    w = np.zeros(K, np.float32)
    w[0] = 1.0
    labels = np.array([1, 2, 3])
    per_example = losses.cross_entropy(LOGITS[:3], labels)
    assert np.isnan(F.cross_entropy(torch.tensor(LOGITS[:3]), torch.tensor(labels),
                                    weight=torch.tensor(w)).item())
    assert float(losses.weighted_mean(per_example, labels, w)) == 0.0
    grad = jax.jit(jax.grad(lambda p: losses.weighted_mean(p, labels, w)))(per_example)
    np.testing.assert_array_equal(grad, 0.0)


# --- LDAM -----------------------------------------------------------------------------


class ReferenceLDAMLoss(torch.nn.Module):
    """kaidic/LDAM-DRW losses.py LDAMLoss, with the CUDA tensors made CPU ones."""

    def __init__(self, cls_num_list, max_m=0.5, weight=None, s=30, reduction="mean"):
        super().__init__()
        m_list = 1.0 / np.sqrt(np.sqrt(cls_num_list))
        m_list = m_list * (max_m / np.max(m_list))
        self.m_list = torch.FloatTensor(m_list)
        self.s, self.weight, self.reduction = s, weight, reduction

    def forward(self, x, target):
        index = torch.zeros_like(x, dtype=torch.uint8)
        index.scatter_(1, target.data.view(-1, 1), 1)
        index_float = index.type(torch.FloatTensor)
        batch_m = torch.matmul(self.m_list[None, :], index_float.transpose(0, 1))
        batch_m = batch_m.view((-1, 1))
        x_m = x - batch_m
        output = torch.where(index.bool(), x_m, x)
        return F.cross_entropy(self.s * output, target, weight=self.weight,
                               reduction=self.reduction)


@pytest.mark.parametrize("max_margin, scale", [(0.5, 30.0), (0.3, 10.0), (0.5, 1.0)])
def test_ldam_matches_the_reference_loss(max_margin, scale):
    x = (LOGITS / 4).astype(np.float32)  # Cosine-sized logits, as LDAM expects.
    ref = ReferenceLDAMLoss(COUNTS, max_m=max_margin, s=scale, reduction="none")
    expected = ref(torch.tensor(x), torch.tensor(LABELS)).numpy()
    got = losses.ldam_loss(x, LABELS, COUNTS, max_margin=max_margin, scale=scale)
    assert got.shape == (40,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(losses.ldam_margins(COUNTS, max_margin),
                               ref.m_list.numpy(), rtol=1e-6)


def test_ldam_with_drw_weights_matches_the_reference_loss():
    # LDAM-DRW's deferred re-weighting stage: LDAMLoss(weight=per_cls_weights).
    x = (LOGITS / 4).astype(np.float32)
    w = losses.class_balanced_weights(COUNTS, 0.9999)
    ref = ReferenceLDAMLoss(COUNTS, weight=torch.tensor(np.asarray(w)))
    got = losses.weighted_mean(losses.ldam_loss(x, LABELS, COUNTS), LABELS, w)
    expected = ref(torch.tensor(x), torch.tensor(LABELS)).item()
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_ldam_two_classes_by_hand():
    # n = [16, 1]: n^(-1/4) = [1/2, 1], largest margin 0.5 -> m = [0.25, 0.5].
    counts = [16, 1]
    np.testing.assert_allclose(losses.ldam_margins(counts), [0.25, 0.5])
    z = np.array([[1.0, 0.5], [1.0, 0.5]], np.float32)
    got = losses.ldam_loss(z, np.array([0, 1]), counts, scale=2.0)
    # Two classes: -log softmax(s * (z_y - m_y, z_o))_y = softplus(s (z_o - z_y + m_y)).
    expected = [np.logaddexp(0, 2.0 * (0.5 - 1.0 + 0.25)),
                np.logaddexp(0, 2.0 * (1.0 - 0.5 + 0.5))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_ldam_with_zero_margin_is_scaled_cross_entropy():
    got = losses.ldam_loss(LOGITS, LABELS, COUNTS, max_margin=0.0, scale=3.0)
    np.testing.assert_allclose(got, losses.cross_entropy(3.0 * LOGITS, LABELS),
                               rtol=1e-6)


def test_ldam_empty_class_is_finite_and_leaves_the_others_margins():
    counts = np.array([100, 0, 1, 16])
    margins = np.asarray(losses.ldam_margins(counts, 0.5))
    ref = ReferenceLDAMLoss(np.array([100, 1, 16])).m_list.numpy()
    np.testing.assert_allclose(margins[[0, 2, 3]], ref, rtol=1e-6)
    assert margins[1] == 0.5
    labels = np.array([0, 1, 2, 3])
    total = lambda z: losses.ldam_loss(z, labels, counts).sum()  # noqa: E731
    loss, grad = jax.jit(jax.value_and_grad(total))(jnp.asarray(LOGITS[:4, :4]))
    assert np.isfinite(loss) and np.isfinite(np.asarray(grad)).all()


# --- logit adjustment and balanced softmax --------------------------------------------


PRIOR = (COUNTS / COUNTS.sum()).astype(np.float32)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_loss_is_the_formula(tau):
    # -log(pi_y^tau e^{z_y} / sum_j pi_j^tau e^{z_j}), Menon et al. Eq. 10.
    prior, z = PRIOR.astype(np.float64), LOGITS.astype(np.float64)
    num = prior[LABELS] ** tau * np.exp(z[np.arange(40), LABELS])
    den = (prior[None] ** tau * np.exp(z)).sum(-1)
    got = losses.logit_adjusted_loss(LOGITS, LABELS, PRIOR, tau=tau)
    assert got.shape == (40,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, -np.log(num / den), rtol=1e-5, atol=1e-6)


def test_logit_adjusted_with_tau_0_is_cross_entropy():
    got = losses.logit_adjusted_loss(LOGITS, LABELS, PRIOR, tau=0.0)
    np.testing.assert_allclose(got, losses.cross_entropy(LOGITS, LABELS), rtol=1e-6)


def test_balanced_softmax_is_the_formula_with_raw_counts():
    # Ren et al.: -log(n_y e^{z_y} / sum_j n_j e^{z_j}); N cancels, so counts or prior.
    weighted_exp = COUNTS[None].astype(np.float64) * np.exp(LOGITS.astype(np.float64))
    expected = -np.log(weighted_exp[np.arange(40), LABELS] / weighted_exp.sum(-1))
    got = losses.balanced_softmax_loss(LOGITS, LABELS, PRIOR)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got, losses.logit_adjusted_loss(LOGITS, LABELS, PRIOR, 1.0))


def test_zero_prior_is_finite_and_nearly_drops_the_class():
    prior = np.array([0.5, 0.0, 0.3, 0.2], np.float32)
    z = LOGITS[:8, :4]
    labels = np.array([0, 2, 3, 0, 2, 3, 0, 1])  # The last is the zero-prior class.
    loss, grad = jax.jit(jax.value_and_grad(
        lambda z: losses.balanced_softmax_loss(z, labels, prior).sum()))(jnp.asarray(z))
    assert np.isfinite(loss) and np.isfinite(np.asarray(grad)).all()
    # For the other labels, class 1 contributes 1e-12 * e^{z_1}: as if it were absent.
    kept = [0, 2, 3]
    without = losses.balanced_softmax_loss(z[:7][:, kept],
                                           np.array([0, 1, 2] * 2 + [0]), prior[kept])
    np.testing.assert_allclose(losses.balanced_softmax_loss(z, labels, prior)[:7],
                               without, rtol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5])
def test_posthoc_adjustment_is_the_formula_and_undoes_the_training_shift(tau):
    got = losses.posthoc_logit_adjustment(LOGITS, PRIOR, tau)
    np.testing.assert_allclose(got, LOGITS - tau * np.log(PRIOR)[None], rtol=1e-6,
                               atol=1e-6)
    # The loss is cross-entropy on z + tau log pi; the post-hoc step removes that shift.
    shifted = LOGITS + tau * np.log(PRIOR)[None]
    np.testing.assert_allclose(losses.posthoc_logit_adjustment(shifted, PRIOR, tau),
                               LOGITS, atol=1e-5)
    np.testing.assert_allclose(losses.logit_adjusted_loss(LOGITS, LABELS, PRIOR, tau),
                               losses.cross_entropy(shifted, LABELS), rtol=1e-5)


def test_posthoc_adjustment_favours_rare_classes_on_ties():
    pred = jnp.argmax(losses.posthoc_logit_adjustment(jnp.zeros((1, K)), PRIOR), -1)
    assert int(pred[0]) == K - 1  # The rarest class (5 images).


# --- tau-normalisation ----------------------------------------------------------------


def kang_tau_norm(weight, p):
    """classifier-balancing's tau-normalisation, on a (num_classes, in) weight."""
    return weight / np.power(np.linalg.norm(weight, 2, 1), p)[:, None]


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.7, 1.0, 2.0])
def test_tau_normalized_kernel_matches_a_transcription(tau):
    kernel = (RNG.normal(size=(16, K)) * RNG.random(K)[None] * 3).astype(np.float32)
    got = losses.tau_normalized_kernel(kernel, tau)
    assert got.shape == kernel.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, kang_tau_norm(kernel.T.astype(np.float64), tau).T,
                               rtol=1e-5)


def test_tau_normalized_kernel_identity_and_unit_norms():
    kernel = (RNG.normal(size=(8, 4)) * [[0.1, 1, 5, 20]]).astype(np.float32)
    np.testing.assert_array_equal(losses.tau_normalized_kernel(kernel, 0.0), kernel)
    unit = losses.tau_normalized_kernel(kernel, 1.0)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=0), 1.0, rtol=1e-6)
    # Column directions never change.
    cos = (np.asarray(unit) * kernel).sum(0) / np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)


def test_tau_normalized_kernel_zero_column_and_dtype():
    kernel = np.ones((3, 2), np.float32)
    kernel[:, 1] = 0
    got = losses.tau_normalized_kernel(jnp.asarray(kernel, jnp.bfloat16), 1.0)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32)[:, 0], 1 / np.sqrt(3),
                               rtol=1e-2)
    np.testing.assert_array_equal(np.asarray(got, np.float32)[:, 1], 0.0)
