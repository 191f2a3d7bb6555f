"""Training stages as data: what each stage of a run does, built from the config once.

TLC trains in two stages (Liu et al. 2023):
    warmup    only the new classifier trains (Adam), uniform instance sampling;
    finetune  SGD with the first `train.frozen_stages` stages frozen; under active
              sampling every batch holds quotas[k] images of class k, and the quotas
              follow Eq. 4 from the contrast set's per-class F1.
The field's baselines are further stages or stage settings, never trainer branches:
    crt       classifier re-training (Kang et al. 2020, cRT): a fresh classifier on the
              frozen backbone, class-balanced batches;
    batch compositions (instance, class-balanced, square-root, progressively-balanced),
    deferred re-sampling (DRS) and deferred re-weighting (DRW, Cao et al. 2019) are
    fields of a stage.
The trainer runs the list `stages_from_config` returns and never asks a stage's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

INSTANCE = "instance"  # Uniform over training images.
ACTIVE = "active"  # Class quotas per batch, updated from contrast-set F1 (Eq. 4).
CLASS_BALANCED = "class_balanced"  # Equal quotas (Kang et al. 2020).
SQRT = "sqrt"  # Quotas proportional to sqrt(n_k) (Mahajan et al. 2018).
PROGRESSIVE = "progressive"  # Instance -> class-balanced over the stage (Kang et al.).
BATCH_COMPOSITIONS = (INSTANCE, ACTIVE, CLASS_BALANCED, SQRT, PROGRESSIVE)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of training; frozen, so a stage is a value that can be compared."""

    name: str  # Metric prefix, progress label and checkpoint tag.
    epochs: int
    batch_size: int  # Global batch, over all devices and processes.
    composition: str  # One of BATCH_COMPOSITIONS.
    optimizer: str  # "adam" or "sgd".
    learning_rate: float
    lr_schedule: str = "constant"  # Or "cosine": decay to 0 over the stage's steps.
    momentum: float = 0.9  # SGD only.
    weight_decay: float = 0.0
    frozen_stages: int = 0  # The model's first stages that do not train.
    loss: str = "ce"  # See tlc_jax.config.LOSSES.
    seed_offset: int = 0  # Picks the stage's sampler seed and RNG stream.
    update_every_steps: int = 0  # ACTIVE: quota update period; 0 = every epoch.
    defer_epochs: int = 0  # DRS: instance sampling for the first epochs, then composition.
    reweight_epoch: int | None = None  # Class weights from this epoch on; None = never.
    reinit_head: bool = False  # Start from a freshly initialised classifier (cRT).

    def __post_init__(self):
        if self.composition not in BATCH_COMPOSITIONS:
            raise ValueError(f"Stage {self.name!r}: composition {self.composition!r} is "
                             f"not one of {', '.join(BATCH_COMPOSITIONS)}.")

    def composition_at(self, epoch: int) -> str:
        """The batch composition of `epoch` (0-based, within the stage)."""
        return INSTANCE if epoch < self.defer_epochs else self.composition

    def reweights_at(self, epoch: int) -> bool:
        """Whether the class weights apply in `epoch`."""
        return self.reweight_epoch is not None and epoch >= self.reweight_epoch


def stages_from_config(c: Any, num_classes: int, model_stages: int) -> list[Stage]:
    """The stages `config` asks for, in order; `model_stages` is the backbone's
    stage count (warm-up and cRT freeze all of them)."""
    t = c.train
    stages = []
    if c.warmup.enabled and c.warmup.epochs > 0:
        stages.append(Stage(
            name="warmup", epochs=c.warmup.epochs, batch_size=c.warmup.batch_size,
            composition=INSTANCE, optimizer="adam", learning_rate=c.warmup.learning_rate,
            frozen_stages=model_stages,
            # COT's complement step belongs to fine-tuning only.
            loss="ce" if t.loss == "cot" else t.loss, seed_offset=0))
    stages.append(Stage(
        name="finetune", epochs=t.epochs, batch_size=t.images_per_class * num_classes,
        composition=c.sampling.composition, optimizer="sgd",
        learning_rate=t.learning_rate, lr_schedule=t.lr_schedule, momentum=t.momentum,
        weight_decay=t.weight_decay, frozen_stages=t.frozen_stages, loss=t.loss,
        seed_offset=1, update_every_steps=c.sampling.update_every_steps,
        defer_epochs=c.sampling.defer_epochs,
        reweight_epoch=None if t.class_weighting == "none" else t.reweight_epoch))
    if c.decoupled.enabled:
        d = c.decoupled
        stages.append(Stage(
            name="crt", epochs=d.epochs,
            batch_size=(d.images_per_class or t.images_per_class) * num_classes,
            composition=CLASS_BALANCED, optimizer="sgd", learning_rate=d.learning_rate,
            lr_schedule="cosine", momentum=t.momentum, weight_decay=t.weight_decay,
            frozen_stages=model_stages, loss="ce", seed_offset=2, reinit_head=True))
    return stages
