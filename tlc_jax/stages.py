"""Training stages as data: what each stage of a run does, built from the config once.

TLC trains in two stages (Liu et al. 2023):
    warmup    only the new classifier trains (Adam), uniform instance sampling;
    finetune  SGD with the first `train.frozen_stages` stages frozen; under active
              sampling every batch holds quotas[k] images of class k, and the quotas
              follow Eq. 4 from the contrast set's per-class F1.
The trainer runs the list `stages_from_config` returns and never asks a stage's name:
another stage (classifier re-training, deferred re-weighting) is another `Stage` here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

INSTANCE = "instance"  # Uniform over training images.
ACTIVE = "active"  # Class quotas per batch, updated from contrast-set F1 (Eq. 4).
BATCH_COMPOSITIONS = (INSTANCE, ACTIVE)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of training; frozen, so a stage is a value that can be compared."""

    name: str  # Metric prefix, progress label and checkpoint tag.
    epochs: int
    batch_size: int  # Global batch, over all devices and processes.
    composition: str  # INSTANCE or ACTIVE.
    optimizer: str  # "adam" or "sgd".
    learning_rate: float
    lr_schedule: str = "constant"  # Or "cosine": decay to 0 over the stage's steps.
    momentum: float = 0.9  # SGD only.
    weight_decay: float = 0.0
    frozen_stages: int = 0  # The model's first stages that do not train.
    loss: str = "ce"  # "ce", "focal" or "cot".
    seed_offset: int = 0  # Picks the stage's sampler seed and RNG stream.
    update_every_steps: int = 0  # ACTIVE: quota update period; 0 = every epoch.

    def __post_init__(self):
        if self.composition not in BATCH_COMPOSITIONS:
            raise ValueError(f"Stage {self.name!r}: composition {self.composition!r} is "
                             f"not one of {', '.join(BATCH_COMPOSITIONS)}.")


def stages_from_config(c: Any, num_classes: int, model_stages: int) -> list[Stage]:
    """The stages `config` asks for, in order; `model_stages` is the backbone's
    stage count (warm-up freezes all of them)."""
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
        composition=ACTIVE if c.sampling.active else INSTANCE, optimizer="sgd",
        learning_rate=t.learning_rate, lr_schedule=t.lr_schedule, momentum=t.momentum,
        weight_decay=t.weight_decay, frozen_stages=t.frozen_stages, loss=t.loss,
        seed_offset=1, update_every_steps=c.sampling.update_every_steps))
    return stages
