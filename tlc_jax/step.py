"""One training step and one evaluation step, as pure functions for `jax.jit`.

    step = make_train_step(model, tx, cot_tx, StepConfig(...))
    state, metrics = step(state, {"image": uint8 NHWC, "label": int}, quotas, rng)

`quotas` is a traced (C,) float vector: the number of images of each class the batch
is expected to hold - exact integers under class-quota (active) sampling, the
training set's prior times the batch size under instance sampling. A new quota vector
never recompiles. The loss receives the batch's class prior (`quotas / sum`), and the
step reports how far the batch's class counts were from the quotas (0 under
class-quota sampling).

The trainer, the memory analysis (`tlc_jax.memory`) and the benchmarks all build their
step from here, so what they measure is what trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from tlc_jax import augment, losses, metrics
from tlc_jax.preprocess import model_input, normalize, to_float


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    cot_opt_state: Any  # The complement step's own optimizer state (COT), else None.


def make_optimizer(kind: str, learning_rate: float | optax.Schedule, *,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   frozen: Any) -> optax.GradientTransformation:
    """`kind` ("adam" or "sgd") on trained parameters; frozen ones get no update."""
    if kind == "adam":
        tx = optax.adam(learning_rate)
    elif kind == "sgd":
        tx = optax.sgd(learning_rate, momentum=momentum)
    else:
        raise ValueError(f"Unknown optimizer {kind!r}; valid: adam, sgd.")
    if weight_decay:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def init_state(variables: dict, tx: optax.GradientTransformation,
               cot_tx: optax.GradientTransformation | None) -> TrainState:
    """A step-0 train state (pure: jit it with the shardings the state should have)."""
    params = variables["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, variables["batch_stats"],
                      tx.init(params), cot_tx.init(params) if cot_tx else None)


LOSSES = ("ce", "focal", "cot", "ldam", "logit_adjusted", "balanced_softmax")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the jitted train step closes over (static for compilation)."""

    num_classes: int
    frozen_stages: int
    loss: str  # One of LOSSES.
    focal_gamma: float = 2.0
    augment: augment.AugmentOptions | None = None  # None: no augmentation.
    class_counts: tuple[int, ...] | None = None  # Training images per class (LDAM).
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    logit_adjust_tau: float = 1.0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}.")
        if self.loss == "ldam" and self.class_counts is None:
            raise ValueError("The LDAM loss needs StepConfig.class_counts.")


def per_example_loss(cfg: StepConfig, logits: jax.Array, labels: jax.Array,
                     prior: jax.Array) -> jax.Array:
    """The primary loss per example (COT's first update is cross-entropy). `prior` is
    the batch's expected class distribution - the training prior under instance
    sampling, as the logit-adjusted and Balanced Softmax papers use it; under class-quota
    sampling the quotas' distribution, so the correction follows what the batch holds."""
    if cfg.loss == "focal":
        return losses.focal_loss(logits, labels, cfg.focal_gamma)
    if cfg.loss == "ldam":
        return losses.ldam_loss(logits, labels, jnp.asarray(cfg.class_counts),
                                cfg.ldam_max_margin, cfg.ldam_scale)
    if cfg.loss == "logit_adjusted":
        return losses.logit_adjusted_loss(logits, labels, prior, cfg.logit_adjust_tau)
    if cfg.loss == "balanced_softmax":
        return losses.balanced_softmax_loss(logits, labels, prior)
    return losses.cross_entropy(logits, labels)  # "ce", and COT's first update.


def make_loss(model, cfg: StepConfig) -> Callable:
    """`loss(params, batch_stats, images, labels, prior, class_weights=None) ->
    (mean, (logits, stats))`: train-mode forward pass (BatchNorm statistics of this
    batch, frozen stages held) on normalised images, then the configured loss, averaged
    over the batch - weighted by `class_weights[label]` when given, normalised by the
    weights' sum as PyTorch's weighted cross-entropy is."""

    def loss(params, batch_stats, images, labels, prior, class_weights=None):
        logits, new = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, frozen_stages=cfg.frozen_stages,
                                  mutable=["batch_stats"])
        logits = logits.astype(jnp.float32)
        per_example = per_example_loss(cfg, logits, labels, prior)
        mean = (per_example.mean() if class_weights is None else
                losses.weighted_mean(per_example, labels, class_weights))
        return mean, (logits, new["batch_stats"])

    return loss


def make_train_step(model, tx: optax.GradientTransformation,
                    cot_tx: optax.GradientTransformation | None,
                    cfg: StepConfig) -> Callable:
    """(state, batch, quotas, rng, class_weights=None) -> (state, metrics); pure, for
    jax.jit. `class_weights` (C,), traced: per-class loss weights (class-balanced
    losses, deferred re-weighting); None: unweighted."""
    primary_loss = make_loss(model, cfg)

    def complement_loss(params, batch_stats, images, labels):
        logits, new = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, frozen_stages=cfg.frozen_stages,
                                  mutable=["batch_stats"])
        return (losses.complement_entropy(logits.astype(jnp.float32), labels).mean(),
                new["batch_stats"])

    def train_step(state: TrainState, batch: dict, quotas: jax.Array, rng: jax.Array,
                   class_weights: jax.Array | None = None):
        rng = jax.random.fold_in(rng, state.step)
        images = to_float(batch["image"])
        if cfg.augment is not None:
            images = augment.augment_batch(rng, images, cfg.augment)
        images, labels = normalize(images, model), batch["label"]
        quotas = quotas.astype(jnp.float32)
        prior = quotas / jnp.maximum(quotas.sum(), 1.0)

        grad_fn = jax.value_and_grad(primary_loss, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(state.params, state.batch_stats,
                                                       images, labels, prior, class_weights)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        cot_opt_state = state.cot_opt_state
        if cfg.loss == "cot":  # Second update: a fresh forward pass, its own optimizer.
            (c_loss, batch_stats), c_grads = jax.value_and_grad(
                complement_loss, has_aux=True)(params, batch_stats, images, labels)
            c_updates, cot_opt_state = cot_tx.update(c_grads, cot_opt_state, params)
            params = optax.apply_updates(params, c_updates)
            out["complement_loss"] = c_loss
        counts = jnp.bincount(labels, length=cfg.num_classes)
        out.update(accuracy=jnp.mean(jnp.argmax(logits, -1) == labels),
                   class_counts=counts,
                   # 0 under class-quota sampling; the sampling noise under instance.
                   quota_mismatch=jnp.sum(jnp.abs(counts - quotas)))
        return TrainState(state.step + 1, params, batch_stats, opt_state,
                          cot_opt_state), out

    return train_step


def make_eval_step(model) -> Callable:
    """(variables, images, labels, valid, confusion) -> confusion, accumulated on device."""

    def eval_step(variables, images, labels, valid, confusion):
        logits = model.apply(variables, model_input(images, model), train=False)
        return metrics.accumulate_confusion(confusion, labels, jnp.argmax(logits, -1),
                                            valid)

    return eval_step
