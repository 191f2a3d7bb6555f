"""Training stages built from the config: the paper's two, and what each may hold."""

import dataclasses

import pytest

from tlc_jax.stages import ACTIVE, INSTANCE, Stage, stages_from_config

from helpers import tiny_config


def test_warmup_then_finetune_as_the_paper_has_them():
    config = tiny_config(**{"warmup.enabled": True, "warmup.epochs": 3,
                            "warmup.batch_size": 32, "warmup.learning_rate": 1e-3,
                            "train.frozen_stages": 2, "train.loss": "cot",
                            "sampling.update_every_steps": 5})
    warmup, finetune = stages_from_config(config, num_classes=10, model_stages=4)
    assert warmup == Stage(name="warmup", epochs=3, batch_size=32, composition=INSTANCE,
                           optimizer="adam", learning_rate=1e-3, frozen_stages=4,
                           loss="ce", seed_offset=0)  # COT's complement: fine-tuning only.
    assert (finetune.name, finetune.composition, finetune.optimizer) == (
        "finetune", ACTIVE, "sgd")
    assert finetune.batch_size == 4 * 10  # images_per_class x classes.
    assert (finetune.frozen_stages, finetune.loss, finetune.update_every_steps) == (
        2, "cot", 5)
    assert (finetune.learning_rate, finetune.lr_schedule, finetune.seed_offset) == (
        0.05, "constant", 1)


def test_no_warmup_and_instance_sampling():
    config = tiny_config(**{"warmup.enabled": False, "sampling.composition": "instance"})
    (only,) = stages_from_config(config, num_classes=10, model_stages=4)
    assert only.name == "finetune" and only.composition == INSTANCE
    config = tiny_config(**{"warmup.enabled": True, "warmup.epochs": 0})
    assert [s.name for s in stages_from_config(config, 10, 4)] == ["finetune"]


def test_stages_are_values():
    stage = Stage(name="crt", epochs=1, batch_size=8, composition=INSTANCE,
                  optimizer="sgd", learning_rate=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.epochs = 2
    with pytest.raises(ValueError, match="composition 'balanced' is not one of"):
        dataclasses.replace(stage, composition="balanced")
