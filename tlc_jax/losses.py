"""Per-example losses (pure jnp) and the long-tail baselines' loss-side maths.

Losses: cross-entropy, softmax focal loss, complement entropy, LDAM, logit-adjusted and
balanced-softmax cross-entropy. Each takes logits (B, K) and integer labels (B,) and
returns (B,) float32 losses; the trainer averages. All work from log-softmax, so none
overflows for large logits.

Also here: class-balanced weights by effective number and how a class weight vector
applies to per-example losses (`weighted`, `weighted_mean`), and the evaluation-side
corrections: post-hoc logit adjustment and tau-normalisation of the classifier kernel.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Prior entries are clamped to this before the log, so a class with prior 0 gives a
# finite log-prior (log 1e-12 = -27.6) instead of -inf (an infinite loss for an
# example of that class).
PRIOR_FLOOR = 1e-12


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def focal_loss(logits: jax.Array, labels: jax.Array, gamma: float = 2.0,
               alpha: jax.Array | None = None, eps: float = 1e-7) -> jax.Array:
    """Softmax focal loss (Lin et al. 2017): -alpha_y (1 - p_y)^gamma log p_y.

    (1 - p)^gamma is computed as exp(gamma * log1p(-p)) with p clamped below 1, so its
    gradient stays finite for gamma < 1 (where reference code gives NaN).
    gamma = 0 and no alpha is exactly cross-entropy.
    """
    logp_y = -cross_entropy(logits, labels)
    p_y = jnp.minimum(jnp.exp(logp_y), 1.0 - eps)
    loss = -jnp.exp(gamma * jnp.log1p(-p_y)) * logp_y
    if alpha is not None:
        loss = jnp.asarray(alpha, jnp.float32)[labels] * loss
    return loss


def complement_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """COT's complement objective (Chen et al. 2019), to be minimised.

    With q_ij = p_ij / (1 - p_iy), the softmax over the wrong classes j != y_i, returns
    sum_{j != y_i} q_ij log q_ij / (K - 1): minus the entropy of the wrong-class
    distribution, normalised by the real K - 1 (the reference code hard-codes K = 10).
    Minimising it flattens the probabilities of the wrong classes.
    """
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError("complement_entropy needs at least 2 classes.")
    is_label = jax.nn.one_hot(labels, num_classes, dtype=bool)
    masked = jnp.where(is_label, -jnp.inf, logits.astype(jnp.float32))
    log_q = jax.nn.log_softmax(masked)
    q_log_q = jnp.where(is_label, 0.0, jnp.exp(log_q) * jnp.where(is_label, 0.0, log_q))
    return jnp.sum(q_log_q, axis=-1) / (num_classes - 1)


# --- class weights --------------------------------------------------------------------


def class_balanced_weights(class_counts, beta: float) -> jax.Array:
    """Class-balanced weights by effective number (Cui et al. 2019).

    w_k = (1 - beta) / (1 - beta^{n_k}), rescaled so that sum_k w_k = K (as the
    authors' code does). beta = 0 gives all ones; beta -> 1 tends to weights ~ 1 / n_k.
    A class with n_k = 0 gets weight 0 (its effective number is 0); the others still
    sum to K. 1 - beta^n is computed as -expm1(n log beta): float32 within ~1e-7 of
    the float64 weights for beta close to 1 (1 - beta**n in float32 is off by ~3e-5
    at beta = 0.9999).

    Args:
      class_counts: (K,) training images per class (numpy or jnp, non-negative).
      beta: in [0, 1).
    """
    # Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective Number of
    # Samples", CVPR 2019; code: github.com/richardaecn/class-balanced-loss.
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1); got {beta}.")
    counts = jnp.asarray(class_counts, jnp.float32)
    present = counts > 0
    log_beta = math.log(beta) if beta > 0 else -math.inf
    effective = -jnp.expm1(jnp.where(present, counts, 1.0) * log_beta)  # 1 - beta^n
    weights = jnp.where(present, (1.0 - beta) / effective, 0.0)
    return weights * (counts.shape[0] / jnp.sum(weights))


def weighted(per_example: jax.Array, labels: jax.Array,
             weights: jax.Array) -> jax.Array:
    """w_{y_i} * loss_i, per example (B,).

    The trainer takes the plain mean of these, sum_i w_{y_i} loss_i / B. PyTorch's
    `F.cross_entropy(weight=w)` with reduction='mean' (what LDAM-DRW's code uses for
    its re-weighting) divides by sum_i w_{y_i} instead: that is `weighted_mean`. The two
    differ by the factor B / sum_i w_{y_i}, which changes from batch to batch.
    """
    return jnp.asarray(weights, jnp.float32)[labels] * per_example


def weighted_mean(per_example: jax.Array, labels: jax.Array,
                  weights: jax.Array) -> jax.Array:
    """sum_i w_{y_i} loss_i / sum_i w_{y_i}: PyTorch's weighted reduction='mean'.

    This is exactly what `torch.nn.functional.cross_entropy(logits, y, weight=w)`
    returns for `per_example = cross_entropy(logits, y)`. Where every example's class
    has weight 0 the result is 0 (PyTorch gives NaN).
    """
    w = jnp.asarray(weights, jnp.float32)[labels]
    total = jnp.sum(w)
    safe_total = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, jnp.sum(w * per_example) / safe_total, 0.0)


# --- margin and prior-corrected losses ------------------------------------------------


def ldam_margins(class_counts, max_margin: float = 0.5) -> jax.Array:
    """LDAM's per-class margins (Cao et al. 2019): m_k = C n_k^{-1/4}.

    C is set so the largest margin is `max_margin` (the reference code's `max_m`). The
    scale is taken over the classes with images only, so an empty class changes nobody's
    margin; an empty class (n_k = 0, where n^{-1/4} is infinite) gets `max_margin`, the
    margin of the rarest class. It matters only if that label ever occurs.
    """
    counts = jnp.asarray(class_counts, jnp.float32)
    present = counts > 0
    raw = jnp.where(present, jnp.where(present, counts, 1.0) ** -0.25, 0.0)
    top = jnp.max(raw)
    return jnp.where(present, raw * (max_margin / jnp.where(top > 0, top, 1.0)),
                     max_margin)


def ldam_loss(logits: jax.Array, labels: jax.Array, class_counts,
              max_margin: float = 0.5, scale: float = 30.0) -> jax.Array:
    """Label-distribution-aware margin loss (Cao et al. 2019), per example.

    -log softmax(s * (z - m_y e_y))_y: the true-class logit is lowered by its class
    margin m_y (`ldam_margins`), then all logits are multiplied by s = `scale` (the
    reference code's `s`; it expects normalised features and classifier, where logits
    are cosines). Class weights (LDAM-DRW's deferred re-weighting) go on top with
    `weighted` / `weighted_mean`.
    """
    # Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
    # Label-Distribution-Aware Margin Loss", NeurIPS 2019; code:
    # github.com/kaidic/LDAM-DRW (losses.py, LDAMLoss).
    logits = logits.astype(jnp.float32)
    margin_y = ldam_margins(class_counts, max_margin)[labels]
    is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    adjusted = jnp.where(is_label, logits - margin_y[:, None], logits)
    return cross_entropy(scale * adjusted, labels)


def _log_prior(prior: jax.Array) -> jax.Array:
    """log(max(prior, PRIOR_FLOOR)) as a (1, K) row, ready to add to (B, K) logits."""
    return jnp.log(jnp.maximum(jnp.asarray(prior, jnp.float32), PRIOR_FLOOR))[None, :]


def logit_adjusted_loss(logits: jax.Array, labels: jax.Array, prior: jax.Array,
                        tau: float = 1.0) -> jax.Array:
    """Logit-adjusted cross-entropy (Menon et al. 2021, Eq. 10), per example.

    -log softmax(z + tau * log pi)_y, pi the training class prior (K,). Entries of pi
    below PRIOR_FLOOR are clamped to it (a finite log, no NaN). tau = 0 is plain
    cross-entropy; tau = 1 is the balanced softmax.
    """
    # Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via logit
    # adjustment", ICLR 2021, Eq. 10.
    return cross_entropy(logits.astype(jnp.float32) + tau * _log_prior(prior), labels)


def balanced_softmax_loss(logits: jax.Array, labels: jax.Array,
                          prior: jax.Array) -> jax.Array:
    """Balanced softmax (Ren et al. 2020): -log(pi_y e^{z_y} / sum_j pi_j e^{z_j}).

    With pi_j = n_j / N this is the paper's n_j e^{z_j} form (N cancels); it is the
    logit-adjusted loss at tau = 1.
    """
    # Ren, Yu, Ma, Zhao, Yi, Li, "Balanced Meta-Softmax for Long-Tailed Visual
    # Recognition", NeurIPS 2020.
    return logit_adjusted_loss(logits, labels, prior, tau=1.0)


# --- evaluation-side corrections ------------------------------------------------------


def posthoc_logit_adjustment(logits: jax.Array, prior: jax.Array,
                             tau: float = 1.0) -> jax.Array:
    """Post-hoc logit adjustment (Menon et al. 2021, Eq. 9): z - tau * log pi, (B, K).

    For evaluation: argmax of the result is the balanced-error prediction of a model
    trained with the plain loss. pi is clamped below at PRIOR_FLOOR like in training,
    so a class with prior 0 gets a large finite boost (tau * 27.6): give a prior with no
    zero entries, or expect such a class to be predicted everywhere.
    """
    # Menon et al. 2021 (see logit_adjusted_loss), Eq. 9.
    return logits.astype(jnp.float32) - tau * _log_prior(prior)


def tau_normalized_kernel(kernel: jax.Array, tau: float) -> jax.Array:
    """tau-normalised classifier (Kang et al. 2020): w_k / ||w_k||^tau.

    `kernel` is a Flax Dense kernel (in_features, num_classes): class k's weight vector
    is column k. tau = 0 returns the kernel unchanged, tau = 1 gives unit-norm columns.
    A column of zeros stays zeros. Returns the kernel's dtype (norms in float32); the
    bias, if any, is left to the caller (the paper normalises weights only).
    """
    # Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling Representation and
    # Classifier for Long-Tailed Recognition", ICLR 2020; code:
    # github.com/facebookresearch/classifier-balancing.
    w = jnp.asarray(kernel).astype(jnp.float32)
    norms = jnp.linalg.norm(w, axis=0, keepdims=True)
    norms = jnp.where(norms > 0, norms, 1.0)
    return (w / norms ** tau).astype(jnp.asarray(kernel).dtype)
