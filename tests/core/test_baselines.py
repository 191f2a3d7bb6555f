"""The field's baselines inside the trainer: batch compositions, deferred re-sampling
and re-weighting, LDAM, prior-corrected losses, cRT and post-hoc corrections."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax import losses, quotas, step, train
from tlc_jax.metrics import confusion_matrix
from tlc_jax.stages import CLASS_BALANCED, INSTANCE, stages_from_config

from helpers import tiny_config

LOGITS = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
LABELS = jnp.asarray([0, 1, 2, 3, 0, 1])
PRIOR = jnp.asarray([0.5, 0.3, 0.15, 0.05], jnp.float32)
COUNTS = (100, 60, 30, 10)


@pytest.mark.parametrize("name,reference", [
    ("ce", lambda: losses.cross_entropy(LOGITS, LABELS)),
    ("cot", lambda: losses.cross_entropy(LOGITS, LABELS)),
    ("focal", lambda: losses.focal_loss(LOGITS, LABELS, 1.5)),
    ("ldam", lambda: losses.ldam_loss(LOGITS, LABELS, jnp.asarray(COUNTS), 0.4, 20.0)),
    ("logit_adjusted", lambda: losses.logit_adjusted_loss(LOGITS, LABELS, PRIOR, 0.7)),
    ("balanced_softmax", lambda: losses.balanced_softmax_loss(LOGITS, LABELS, PRIOR)),
])
def test_the_step_uses_the_configured_loss(name, reference):
    cfg = step.StepConfig(num_classes=4, frozen_stages=0, loss=name, focal_gamma=1.5,
                          class_counts=COUNTS, ldam_max_margin=0.4, ldam_scale=20.0,
                          logit_adjust_tau=0.7)
    np.testing.assert_allclose(step.per_example_loss(cfg, LOGITS, LABELS, PRIOR),
                               reference(), rtol=1e-6)


def test_unknown_loss_and_ldam_without_counts_are_refused():
    with pytest.raises(ValueError, match="Unknown loss 'ldamx'"):
        step.StepConfig(num_classes=4, frozen_stages=0, loss="ldamx")
    with pytest.raises(ValueError, match="needs StepConfig.class_counts"):
        step.StepConfig(num_classes=4, frozen_stages=0, loss="ldam")


def test_stages_carry_drs_drw_and_crt():
    config = tiny_config(**{"sampling.composition": "class_balanced",
                            "sampling.defer_epochs": 1,
                            "train.class_weighting": "effective_number",
                            "train.reweight_epoch": 1, "decoupled.enabled": True,
                            "decoupled.epochs": 3, "decoupled.images_per_class": 2})
    finetune, crt = stages_from_config(config, num_classes=10, model_stages=4)
    assert [finetune.composition_at(e) for e in range(2)] == [INSTANCE, CLASS_BALANCED]
    assert [finetune.reweights_at(e) for e in range(2)] == [False, True]
    assert (crt.name, crt.composition, crt.frozen_stages, crt.reinit_head) == (
        "crt", CLASS_BALANCED, 4, True)
    assert (crt.epochs, crt.batch_size, crt.loss, crt.reweight_epoch) == (3, 20, "ce", None)
    plain = tiny_config(**{"train.class_weighting": "none"})
    assert stages_from_config(plain, 10, 4)[0].reweight_epoch is None


@pytest.mark.parametrize("overrides,message", [
    ({"sampling.defer_epochs": 1, "sampling.composition": "instance"},
     "already starts as instance sampling"),
    ({"train.loss": "cot", "train.class_weighting": "effective_number"},
     "class weighting is defined for the other losses only"),
    ({"train.cb_beta": 1.0}, "cb_beta must lie in (0, 1)"),
    ({"eval.tau_norm": -1.0}, "eval.tau_norm must be >= 0"),
    ({"train.loss": "ldam"}, "Set --config.model.head=cosine"),
    ({"model.head": "cosine", "eval.tau_norm": 1.0}, "the cosine head has no bias"),
    ({"model.head": "cosine", "eval.logit_adjust_tau": 1.0}, "the cosine head has no bias"),
    ({"model.head": "normed"}, "config.model.head='normed' is not one of: linear, cosine"),
    ({"eval.tau_candidates": (0.5, 1.0)}, "turn on exactly one of eval.tau_norm"),
    ({"eval.tau_candidates": (0.5,), "eval.tau_norm": 1.0, "eval.logit_adjust_tau": 1.0},
     "turn on exactly one of eval.tau_norm"),
    ({"eval.tau_candidates": (0.5, -1.0), "eval.tau_norm": 1.0},
     "tau_candidates must be numbers >= 0"),
])
def test_meaningless_combinations_fail_at_validation(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train.Trainer(tiny_config(**overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class KeepStages(train.Trainer):
    """Keeps each stage's final variables."""

    def run_stage(self, stage, *args):
        variables, state = super().run_stage(stage, *args)
        self.finals = {**getattr(self, "finals", {}), stage.name: jax.device_get(variables)}
        return variables, state


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    """LDAM with deferred re-sampling (class-balanced from epoch 2) and deferred
    re-weighting, then cRT, evaluated with tau-normalisation and post-hoc logit
    adjustment: every baseline mechanism in one tiny run. (LDAM on the linear head
    with s = 1 here, as the post-hoc corrections need a linear head; LDAM with its
    cosine head is `test_ldam_trains_a_cosine_head`.)"""
    workdir = tmp_path_factory.mktemp("baselines")
    config = tiny_config(**{
        "train.loss": "ldam", "train.ldam_scale": 1.0,
        "sampling.composition": "class_balanced",
        "sampling.defer_epochs": 1, "train.class_weighting": "effective_number",
        "train.reweight_epoch": 1, "train.log_every_steps": 1,
        "decoupled.enabled": True, "decoupled.epochs": 1,
        "eval.tau_norm": 1.0, "eval.logit_adjust_tau": 1.0})
    trainer = KeepStages(config, workdir)
    report = trainer.run()
    return trainer, report, workdir


def test_deferred_resampling_switches_composition_after_the_deferred_epochs(baseline_run):
    trainer, report, workdir = baseline_run
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if l["prefix"] == "finetune"]
    per_epoch = len(steps) // 2
    first, second = steps[:per_epoch], steps[per_epoch:]
    # Epoch 1 (instance): class counts vary; the step's quotas are the prior x B.
    assert len({tuple(l["class_counts"]) for l in first}) > 1
    assert all(l["quota_mismatch"] > 0 for l in first)
    # Epoch 2 (class-balanced): exactly 4 of each class in every batch of 40.
    assert all(l["class_counts"] == [4] * 10 and l["quota_mismatch"] == 0 for l in second)
    crt = [l for l in lines if l["prefix"] == "crt"]
    assert crt and all(l["class_counts"] == [4] * 10 for l in crt)
    assert [e["phase"] for e in report["history"]["epochs"]] == [
        "finetune", "finetune", "crt"]


def test_class_weights_apply_from_the_reweight_epoch(baseline_run):
    trainer, _, _ = baseline_run
    finetune = trainer.stages[0]
    iterators = trainer.batches(finetune)
    try:
        weights = [np.asarray(trainer.begin_epoch(finetune, e, iterators)[2])
                   for e in range(2)]
    finally:
        for it in iterators.values():
            it.close()
    np.testing.assert_array_equal(weights[0], np.ones(10))
    np.testing.assert_allclose(weights[1], losses.class_balanced_weights(
        trainer.train_counts, 0.9999), rtol=1e-6)


def test_static_compositions_set_their_quotas(tmp_path):
    for composition, expected in (
            ("sqrt", lambda t, e: quotas.sqrt_quotas(t.train_counts, 40)),
            ("progressive", lambda t, e: quotas.progressive_quotas(t.train_counts, 40, e, 2))):
        trainer = train.Trainer(tiny_config(**{"sampling.composition": composition}),
                                tmp_path / composition)
        stage = trainer.stages[0]
        iterators = trainer.batches(stage)
        try:
            for epoch in range(2):
                iterator, step_quotas, _ = trainer.begin_epoch(stage, epoch, iterators)
                np.testing.assert_array_equal(iterator.sampler.quotas,
                                              expected(trainer, epoch))
                np.testing.assert_array_equal(np.asarray(step_quotas),
                                              iterator.sampler.quotas)
        finally:
            for it in iterators.values():
                it.close()


def test_crt_retrains_only_a_fresh_classifier(baseline_run):
    trainer, _, _ = baseline_run
    before, after = trainer.finals["finetune"], trainer.finals["crt"]
    for collection in ("params", "batch_stats"):
        for name, tree in before[collection].items():
            same = all(np.array_equal(a, b) for a, b in zip(
                jax.tree.leaves(tree), jax.tree.leaves(after[collection][name])))
            assert same == (name != "classifier"), (collection, name)


def test_posthoc_corrections_are_what_the_test_metrics_use(baseline_run):
    trainer, report, _ = baseline_run
    variables = trainer.finals["crt"]
    images = trainer.data.test.images
    _, features = jax.jit(lambda v, x: trainer.model.apply(v, x, return_features=True))(
        variables, (images / 255.0 - 0.5) / 0.25)
    head = variables["params"]["classifier"]
    kernel = np.asarray(head["kernel"], np.float64)
    kernel = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)  # tau = 1
    prior = trainer.train_counts / trainer.train_counts.sum()
    logits = np.asarray(features, np.float64) @ kernel + np.asarray(head["bias"]) - np.log(prior)
    want = confusion_matrix(trainer.data.test.labels, logits.argmax(-1), 10)
    np.testing.assert_array_equal(report["test"]["confusion_matrix"], want)
    assert "test_without_posthoc" in report
    assert report["config"]["eval"]["tau_norm"] == 1.0


def test_a_trained_run_is_evaluated_under_other_posthoc_corrections(baseline_run,
                                                                    tmp_path):
    """evaluate_trained: the baseline run's final weights evaluated without its
    post-hoc corrections give exactly the report's own uncorrected figures (and its
    history, split and best checkpoint), nothing trained; a config that would train
    differently, or a source that never finished, is refused with the reason."""
    trainer, report, workdir = baseline_run
    plain = trainer.config.copy_and_resolve_references()
    with plain.unlocked():
        plain.eval.tau_norm, plain.eval.logit_adjust_tau = 0.0, 0.0
    got = train.evaluate_trained(plain, tmp_path / "plain", workdir)
    assert got["test"] == report["test_without_posthoc"]
    assert "test_without_posthoc" not in got
    assert got["history"] == report["history"]
    assert got["best_checkpoint"] == report["best_checkpoint"]
    assert got["evaluated_from"] == str(workdir.absolute())
    assert json.loads((tmp_path / "plain" / "report.json").read_text())["test"] == got["test"]
    assert ((tmp_path / "plain" / "data_split.json").read_text()
            == (workdir / "data_split.json").read_text())
    assert not (tmp_path / "plain" / "checkpoints").exists()
    # Finished: read back, not evaluated again.
    written = (tmp_path / "plain" / "report.json").stat().st_mtime_ns
    assert train.evaluate_trained(plain, tmp_path / "plain", workdir)["test"] == got["test"]
    assert (tmp_path / "plain" / "report.json").stat().st_mtime_ns == written

    other = plain.copy_and_resolve_references()
    with other.unlocked():
        other.train.epochs = 3
    with pytest.raises(ValueError, match=r"trained with another config \(train.epochs: "
                                         r"2 -> 3\); only evaluation fields"):
        train.evaluate_trained(other, tmp_path / "other", workdir)
    with pytest.raises(FileNotFoundError, match="no finished run there"):
        train.evaluate_trained(plain, tmp_path / "again", tmp_path / "nothing")


def test_tau_is_chosen_on_the_contrast_set_by_balanced_accuracy(baseline_run, tmp_path):
    """eval.tau_candidates: every candidate's contrast-set balanced accuracy (checked
    against scikit-learn on logits computed here in float64), the best one (the first
    on a tie) chosen, and the test metrics those of the chosen tau."""
    from sklearn.metrics import balanced_accuracy_score

    trainer, _, workdir = baseline_run
    variables = trainer.finals["crt"]
    candidates = (0.0, 0.5, 1.0, 2.0)
    config = trainer.config.copy_and_resolve_references()
    with config.unlocked():
        config.eval.tau_norm, config.eval.logit_adjust_tau = 1.0, 0.0
        config.eval.tau_candidates = candidates
    head = variables["params"]["classifier"]
    kernel = np.asarray(head["kernel"], np.float64)
    apply = jax.jit(lambda v, x: trainer.model.apply(v, x, return_features=True))

    def predictions(split, tau):
        images = getattr(trainer.data, split).images
        _, features = apply(variables, (images / 255.0 - 0.5) / 0.25)
        k = kernel / np.linalg.norm(kernel, axis=0, keepdims=True) ** tau
        return (np.asarray(features, np.float64) @ k + np.asarray(head["bias"])).argmax(-1)

    labels = trainer.data.contrast.labels
    want = [balanced_accuracy_score(labels, predictions("contrast", t)) for t in candidates]
    got = train.evaluate_trained(config, tmp_path / "tuned", workdir)
    choice = got["tau_choice"]
    assert choice["field"] == "eval.tau_norm" and choice["candidates"] == list(candidates)
    np.testing.assert_allclose(choice["contrast_balanced_accuracy"], want, atol=1e-12)
    assert choice["chosen"] == candidates[int(np.argmax(want))]
    np.testing.assert_array_equal(got["test"]["confusion_matrix"], confusion_matrix(
        trainer.data.test.labels, predictions("test", choice["chosen"]), 10))


def test_active_sampling_variants_reach_the_quota_rule(tmp_path, monkeypatch):
    """sampling.signal / balanced_contrast / mix_balanced go into next_quotas."""
    from tlc_jax.active_sampling import ActiveSampling, ActiveState, next_quotas

    config = tiny_config(**{"sampling.signal": "recall",
                            "sampling.balanced_contrast": True,
                            "sampling.mix_balanced": 0.25, "sampling.min_quota": 2})
    trainer = train.Trainer(config, tmp_path)
    confusion = np.diag(np.arange(10, 20)) + np.eye(10, k=1, dtype=int)[::-1] * 3
    monkeypatch.setattr(trainer, "contrast_confusion", lambda *args: confusion)
    stage = trainer.stages[0]
    iterators = trainer.batches(stage)
    try:
        trainer.update_quotas(stage, None, iterators["sampler"], step=5)
        policy = ActiveSampling(40, trainer.train_counts, 2, 0.0, signal="recall",
                                balanced=True, mix_balanced=0.25)
        _, want = next_quotas(policy, ActiveState(), confusion)
        np.testing.assert_array_equal(iterators["sampler"].sampler.quotas, want)
        assert trainer.active.quotas == (tuple(want.tolist()),)
    finally:
        for it in iterators.values():
            it.close()


def test_ldam_trains_a_cosine_head(tmp_path):
    """LDAM-DRW as Cao et al. run it: cosine classifier, s = 30. The loss falls, the
    head has no bias, cRT re-initialises it, and the saved run restores the same
    predictions through model.json."""
    from tlc_jax.inference import load_run

    config = tiny_config(**{
        "model.head": "cosine", "train.loss": "ldam", "sampling.composition": "instance",
        "train.class_weighting": "effective_number", "train.reweight_epoch": 1,
        "train.epochs": 3, "train.learning_rate": 0.1, "train.log_every_steps": 1,
        "decoupled.enabled": True, "decoupled.epochs": 1})
    trainer = KeepStages(config, tmp_path / "run")
    report = trainer.run()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses_seen = np.array([l["loss"] for l in lines if l["prefix"] == "finetune"])
    # s = 30 on cosines: the loss starts near 30 x (the largest wrong cosine - the true
    # one + margin) and falls steadily; with the linear head it diverged (to 100+).
    per_epoch = losses_seen.reshape(3, -1).mean(axis=1)
    assert np.all(np.isfinite(losses_seen)), losses_seen
    assert np.all(np.diff(per_epoch) < 0) and per_epoch[-1] < 0.8 * per_epoch[0], per_epoch
    head = trainer.finals["finetune"]["params"]["classifier"]
    assert set(head) == {"kernel"}
    assert not np.array_equal(trainer.finals["crt"]["params"]["classifier"]["kernel"],
                              head["kernel"])
    assert report["config"]["model"]["head"] == "cosine"
    run = load_run(tmp_path / "run")
    assert run.spec.kwargs["head"] == "cosine"
    images = trainer.data.test.images[:16]
    want = jax.jit(trainer.model.apply)(trainer.finals["crt"], (images / 255.0 - 0.5) / 0.25)
    got = jax.jit(run.model.apply)(run.variables, (images / 255.0 - 0.5) / 0.25)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
