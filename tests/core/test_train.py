"""The trainer end to end on the embedded digits data, with a tiny DenseNet-BC."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from tlc_jax import train
from tlc_jax.data.prepare import SPLIT_FILE
from tlc_jax.models import create_model, init_variables
from tlc_jax.pretrained import transfer_from_run

from helpers import TEST_XLA_FLAGS, ROOT, load_config, tiny_config


WITH_WARMUP = {"warmup.enabled": True, "warmup.epochs": 1, "warmup.batch_size": 32}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Warm-up, two fine-tuning epochs (two quota updates), evaluation, report."""
    workdir = tmp_path_factory.mktemp("run")
    trainer = RecordingTrainer(tiny_config(**WITH_WARMUP), workdir)
    report = trainer.run()
    return trainer, report, workdir


class RecordingTrainer(train.Trainer):
    """Keeps each stage's compiled train step, to count its compilations."""

    def compile_train_step(self, *args):
        step = super().compile_train_step(*args)
        self.compiled_steps = getattr(self, "compiled_steps", []) + [step]
        return step


def test_run_writes_a_complete_report(finished_run):
    trainer, report, workdir = finished_run
    test = report["test"]
    for key in ("accuracy", "macro_f1", "balanced_accuracy", "worst_class_accuracy",
                "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert key in test
    assert test["num_examples"] == len(trainer.data.test)
    assert len(test["per_class"]["f1"]) == 10
    assert json.loads((workdir / "report.json").read_text())["test"] == test
    split = json.loads((workdir / SPLIT_FILE).read_text())
    assert not set(split["train"]) & set(split["contrast"])
    # The long tail: ratio 10 between the largest and smallest training class.
    counts = report["data"]["train"]
    assert max(counts) / min(counts) == pytest.approx(10, rel=0.15)


def test_report_has_the_final_models_contrast_metrics(finished_run):
    """report["contrast"] - what choices between runs read - equals scikit-learn's
    metrics of the saved model's predictions on the contrast images."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from tlc_jax.inference import load_run, make_predict

    trainer, report, workdir = finished_run
    run = load_run(workdir)  # The final state (this config has no post-hoc step).
    contrast = trainer.data.contrast
    _, top = make_predict(run.model, 1)(run.variables, contrast.images)
    predicted = np.asarray(top)[:, 0]
    got = report["contrast"]
    assert got["num_examples"] == len(contrast)
    assert got["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(contrast.labels, predicted), abs=1e-9)
    assert got["macro_f1"] == pytest.approx(
        f1_score(contrast.labels, predicted, average="macro", labels=range(10),
                 zero_division=0), abs=1e-9)


def test_active_sampling_updates_quotas_every_epoch_without_recompiling(finished_run):
    trainer, report, workdir = finished_run
    quotas = report["history"]["quotas"]
    # Updated after fine-tuning epoch 1; none after the last epoch (it would never be
    # used), so the history's last quotas are those the last epoch trained with.
    assert len(quotas) == 1 and all(sum(q) == 40 and min(q) >= 1 for q in quotas)
    assert len(report["history"]["contrast_f1"]) == 1
    # Quotas are a traced input: one compilation for the whole phase.
    assert [s._cache_size() for s in trainer.compiled_steps] == [1, 1]  # Per stage.
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if l["prefix"] == "finetune"]
    assert steps and all(l["quota_mismatch"] == 0 for l in steps)
    updates = [l for l in lines if l["prefix"] == "quotas"]
    assert [u["quotas"] for u in updates] == quotas
    assert all(sum(l["class_counts"]) == 40 for l in steps)


def read_scalars(folder):
    """Tags and (step, value) pairs of a run's event files, read by TensorBoard's own
    reader (what `tensorboard --logdir` shows)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_config_and_best_checkpoint(finished_run):
    trainer, report, workdir = finished_run
    scalars = read_scalars(workdir / "tensorboard")
    assert {"finetune/loss", "finetune/grad_norm", "epoch/contrast_macro_f1",
            "quotas/contrast_macro_f1"} <= set(scalars)
    assert [s for s, _ in scalars["epoch/loss"]] == [1, 2, 3]  # Warm-up, 2 fine-tuning.
    np.testing.assert_allclose([v for _, v in scalars["epoch/loss"]],
                               [e["loss"] for e in report["history"]["epochs"]], rtol=1e-6)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["depth"] == 10 and saved["train"]["epochs"] == 2
    assert (workdir / "summary.md").read_text().startswith("#")
    assert {p.name for p in (workdir / "plots").iterdir()} == {
        "confusion_matrix.png", "per_class_accuracy.png", "quotas.png",
        "training_curves.png"}
    f1s = [e["contrast_macro_f1"] for e in report["history"]["epochs"]]
    assert report["best_checkpoint"] == int(np.argmax(f1s))
    assert (workdir / "checkpoints" / str(report["best_checkpoint"])).is_dir()


def test_best_checkpoint_is_the_argmax_of_the_recorded_metric(tmp_path, caplog):
    """Across a restart (a new manager reading the folder), "best" is the step with the
    highest contrast macro-F1, not the last; inference's restore_state agrees, and
    skips a damaged latest checkpoint for the newest one that restores."""
    import orbax.checkpoint as ocp

    from tlc_jax.inference import BEST_METRIC, restore_state

    trainer = train.Trainer(tiny_config(), tmp_path)
    mngr = trainer.checkpoint_manager()
    for step, f1 in enumerate([0.2, 0.9, 0.5, 0.4]):
        mngr.save(step, metrics={BEST_METRIC: f1}, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"x": np.arange(3) + step}),
            meta=ocp.args.JsonSave({"phase": "finetune", "epoch": step})))
    mngr.wait_until_finished()
    mngr.close()
    again = trainer.checkpoint_manager()
    assert again.best_step() == 1 and again.latest_step() == 3
    assert sorted(again.all_steps()) == [1, 2, 3]  # The last two and the best.
    again.close()
    step, state = restore_state(tmp_path, "best")
    assert step == 1 and state["x"].tolist() == [1, 2, 3]
    corrupt(tmp_path / "checkpoints" / "3", "truncated_tensors")
    step, state = restore_state(tmp_path, "latest")
    assert step == 2 and state["x"].tolist() == [2, 3, 4]
    assert "Checkpoint 3" in caplog.text and "does not restore" in caplog.text


def test_workdir_of_another_config_is_refused_unless_overwritten(finished_run, tmp_path):
    import shutil

    _, _, workdir = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    other = tiny_config(**WITH_WARMUP, **{"model.growth_rate": 6})
    with pytest.raises(ValueError, match="model.growth_rate: 4 -> 6.*--overwrite"):
        train.Trainer(other, copy)
    assert (copy / "checkpoints").is_dir()  # Nothing was lost.
    # Moving the data or changing the logging cadence is a resumable change.
    train.Trainer(tiny_config(**WITH_WARMUP, **{"train.log_every_steps": 7}), copy)
    train.Trainer(other, copy, overwrite=True)
    assert not (copy / "checkpoints").exists() and not (copy / "report.json").exists()


def corrupt(checkpoint, how):
    """Damages one orbax checkpoint folder: its tensors truncated, or its meta JSON."""
    if how == "truncated_tensors":
        for f in (checkpoint / "state").rglob("d/*"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        (checkpoint / "meta" / "metadata").write_text('{"phase": "finet')


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    config = tiny_config(**{"train.epochs": 3})
    return config, train.Trainer(config, tmp_path_factory.mktemp("reference")).run()


# (The undamaged kill-and-resume is tests/core/test_kill_resume.py's, through the CLI.)
@pytest.mark.parametrize("damage", ["truncated_tensors", "damaged_meta"])
def test_killed_run_resumes_to_the_same_result(reference_run, tmp_path, monkeypatch,
                                               damage, caplog):
    """Killed after its second checkpoint, a run resumes to the uninterrupted run's
    result; when that checkpoint is damaged, from the one before (kept aside, said)."""
    config, reference = reference_run

    saves = []
    original_save = train.Trainer.save

    def save_then_die(self, *args, **kwargs):
        original_save(self, *args, **kwargs)
        saves.append(args[1])
        if len(saves) == 2:
            self_mngr = args[0]
            self_mngr.wait_until_finished()
            raise KeyboardInterrupt("killed after the second checkpoint")

    monkeypatch.setattr(train.Trainer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.Trainer(config, tmp_path / "killed").run()
    monkeypatch.setattr(train.Trainer, "save", original_save)
    if damage:
        corrupt(tmp_path / "killed" / "checkpoints" / "1", damage)
    resumed = train.Trainer(config, tmp_path / "killed").run()
    if damage:
        assert (tmp_path / "killed" / "checkpoints_unreadable" / "1").is_dir()
        assert "Checkpoint 1 does not restore" in caplog.text

    assert resumed["test"]["confusion_matrix"] == reference["test"]["confusion_matrix"]
    assert resumed["history"]["quotas"] == reference["history"]["quotas"]
    np.testing.assert_allclose([e["loss"] for e in resumed["history"]["epochs"]],
                               [e["loss"] for e in reference["history"]["epochs"]])


def test_warmup_trains_only_the_head_and_fine_tuning_keeps_frozen_stages(tmp_path):
    config = tiny_config(**{"warmup.enabled": True, "warmup.epochs": 1,
                            "warmup.batch_size": 32, "train.frozen_stages": 2,
                            "train.epochs": 1, "train.loss": "cot"})
    trainer = train.Trainer(config, tmp_path)
    initial = jax.device_get(trainer.init_variables(jax.random.split(
        jax.random.key(config.seed), 3)[0]))
    report = trainer.run()
    final = jax.device_get({"params": trainer.state.params,
                            "batch_stats": trainer.state.batch_stats})
    for collection in ("params", "batch_stats"):
        for name, tree in initial[collection].items():
            same = all(np.array_equal(a, b) for a, b in zip(
                jax.tree.leaves(tree), jax.tree.leaves(final[collection][name])))
            frozen = name in ("conv0", "denseblock1", "transition1", "denseblock2",
                              "transition2")
            assert same == frozen, (collection, name)
    assert [e["phase"] for e in report["history"]["epochs"]] == ["warmup", "finetune"]
    assert np.isfinite(report["history"]["epochs"][-1]["loss"])


def test_transfer_from_an_earlier_run_with_warmup_and_frozen_stages(finished_run,
                                                                     tmp_path):
    """The full transfer path: a saved tlc-jax run as the source task."""
    source_trainer, _, source_dir = finished_run
    source = jax.device_get({"params": source_trainer.state.params,
                             "batch_stats": source_trainer.state.batch_stats})
    config = tiny_config(**{"model.pretrained": str(source_dir), "warmup.enabled": True,
                            "warmup.epochs": 1, "warmup.batch_size": 32,
                            "train.frozen_stages": 2, "train.epochs": 1})
    trainer = train.Trainer(config, tmp_path)
    start = jax.device_get(trainer.init_variables(jax.random.key(1)))
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(source)):
        np.testing.assert_array_equal(a, b)  # Same classes: the head is kept too.
    trainer.run()
    final = jax.device_get(trainer.state.params)
    for name in ("conv0", "denseblock1", "transition1", "denseblock2", "transition2"):
        for a, b in zip(jax.tree.leaves(final[name]), jax.tree.leaves(source["params"][name])):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(final["classifier"]["kernel"],
                              source["params"]["classifier"]["kernel"])


def test_transfer_replaces_a_head_of_other_classes(finished_run):
    _, _, source_dir = finished_run
    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3,
                               in_channels=1)
    template = jax.device_get(init_variables(model, jax.random.key(5), (1, 8, 8, 1)))
    got = transfer_from_run(source_dir, template)
    np.testing.assert_array_equal(got["params"]["classifier"]["kernel"],
                                  template["params"]["classifier"]["kernel"])
    wrong = create_model("densenet_bc", depth=16, growth_rate=4, num_classes=3,
                               in_channels=1)
    with pytest.raises(ValueError, match="another architecture"):
        transfer_from_run(source_dir, jax.device_get(
            init_variables(wrong, jax.random.key(5), (1, 8, 8, 1))))
    with pytest.raises(FileNotFoundError, match="No tlc-jax checkpoint"):
        transfer_from_run(source_dir / "tensorboard", template)


def test_offline_augmentation_trains_on_materialised_copies(tmp_path):
    config = tiny_config(**{"augment.offline_copies": 2, "train.epochs": 1,
                            "sampling.composition": "instance"})
    trainer = train.Trainer(config, tmp_path)
    n = trainer.train_counts.sum()
    assert len(trainer.data.train) == 3 * n
    np.testing.assert_array_equal(trainer.data.train.labels[n:2 * n],
                                  trainer.data.train.labels[:n])
    report = trainer.run()
    assert report["data"]["train"] == (3 * trainer.train_counts).tolist()
    assert report["test"]["per_class"]["train_count"] == trainer.train_counts.tolist()
    # Instance sampling: the step's quotas are the training prior times the batch, and
    # its mismatch metric is the batch's distance from that expectation.
    expected = 40 * trainer.train_counts / trainer.train_counts.sum()
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if l["prefix"] == "finetune"]
    assert steps
    for line in steps:
        assert line["quota_mismatch"] == pytest.approx(
            np.abs(np.asarray(line["class_counts"]) - expected).sum(), rel=1e-5)


def test_locked_config_rejects_typos_and_bad_values(tmp_path):
    config = tiny_config()
    with pytest.raises(AttributeError):
        config.train.epoch = 3
    bad = {"train.lr_schedule": ("cosin", "'cosin' is not one of: constant, cosine"),
           "train.loss": ("ldamx", "'ldamx' is not one of: ce, focal, cot, ldam, "
                          "logit_adjusted, balanced_softmax"),
           "sampling.composition": ("sqrrt", "'sqrrt' is not one of: instance, active"),
           "train.reweight_epoch": (1, "class_weighting is 'none'"),
           "sampling.defer_epochs": (5, "defer_epochs=5 must lie in [0, train.epochs=2)"),
           "model.name": ("densenet122", "'densenet122' is not one of"),
           "data.name": ("cifar1000", "'cifar1000' is not one of"),
           "train.images_per_class": (1, "min_quota=1 leaves active sampling no room"),
           "data.imbalance_ratio": (0.5, "imbalance_ratio must be >= 1")}
    for field, (value, message) in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            train.Trainer(tiny_config(**{field: value}), tmp_path / field)
        assert not (tmp_path / field).exists()  # Refused before touching the disk.


def test_missing_data_folder_is_a_clear_error(tmp_path):
    config = load_config()
    config.unlock()
    config.data.name = "cifar10"
    config.data.root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        train.Trainer(config, tmp_path / "work")


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    config = tiny_config(**{"train.learning_rate": 1e12, "train.epochs": 3})
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        train.Trainer(config, tmp_path).run()


def test_nan_in_a_later_epoch_keeps_the_good_checkpoints(tmp_path, monkeypatch):
    original = train.Trainer.compile_train_step

    def poisoned(self, *args):
        step = original(self, *args)
        calls = []

        def run(state, batch, *inputs):
            calls.append(1)
            state, out = step(state, batch, *inputs)
            if len(calls) > self.steps_per_epoch_for_test * 2:  # From epoch 3 on.
                out = dict(out, loss=out["loss"] * float("nan"))
            return state, out

        run._cache_size = step._cache_size
        return run

    monkeypatch.setattr(train.Trainer, "compile_train_step", poisoned)
    trainer = train.Trainer(tiny_config(**{"train.epochs": 4}), tmp_path)
    trainer.steps_per_epoch_for_test = len(trainer.data.train) // 40
    with pytest.raises(FloatingPointError, match="finetune epoch 3"):
        trainer.run()
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved == [0, 1]  # Epochs 1 and 2; nothing of the poisoned epoch.


def test_quotas_can_follow_the_contrast_set_every_k_steps(tmp_path):
    config = tiny_config(**{"sampling.update_every_steps": 3, "train.epochs": 1})
    trainer = train.Trainer(config, tmp_path)
    report = trainer.run()
    steps = len(trainer.data.train) // 40
    assert len(report["history"]["quotas"]) == (steps - 1) // 3  # None after the last step.


def test_command_line_with_overrides_on_eight_simulated_devices(tmp_path):
    """`python -m tlc_jax.main` as a user runs it, sharded over 8 CPU devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}",
               JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "tlc_jax.main", "--config=configs/digits_lt.py:epochs=2",
           "--config.data.image_size=0", "--config.model.depth=10",
           "--config.model.growth_rate=4", "--config.eval.batch_size=60",
           "--config.warmup.enabled=true", "--config.warmup.epochs=1",
           "--config.warmup.batch_size=64", f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Test: accuracy" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["eval"]["batch_size"] == 60
    assert report["test"]["num_examples"] > 0
    assert [e["phase"] for e in report["history"]["epochs"]] == ["warmup", "finetune",
                                                                 "finetune"]
    assert len(report["history"]["quotas"]) == 1  # After epoch 1; none after the last.
    typo = subprocess.run(cmd[:-1] + ["--config.train.epoch=2", f"--workdir={tmp_path}/x"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert typo.returncode != 0 and "epoch" in typo.stderr
    uneven = subprocess.run(cmd[:-1] + ["--config.train.images_per_class=3",
                                        "--config.warmup.enabled=false",
                                        f"--workdir={tmp_path}/y"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert uneven.returncode != 0
    assert "batch size 30 must divide evenly over 8 devices" in uneven.stderr


SHARDED_STEP = r'''
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tlc_jax import step as S
from tlc_jax.models import create_model, frozen_mask, init_variables

assert jax.device_count() == 8
model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=10, in_channels=1)
x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype(np.uint8)
y = np.arange(32) % 10
variables = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
tx = S.make_optimizer("sgd", 0.1, frozen=frozen_mask(model, variables["params"], 0))
cfg = S.StepConfig(num_classes=10, frozen_stages=0, loss="ce", focal_gamma=2.0,
                       augment=None)
step = S.make_train_step(model, tx, None, cfg)

def fresh():
    p, b = variables["params"], variables["batch_stats"]
    return S.TrainState(jnp.zeros((), jnp.int32), p, b, tx.init(p), None)

quotas = jnp.zeros(10, jnp.int32)
single, _ = jax.jit(step)(fresh(), {"image": x, "label": y}, quotas, jax.random.key(1))
mesh = Mesh(np.array(jax.devices()), ("data",))
data = NamedSharding(mesh, P("data"))
batch = {"image": jax.device_put(x, data), "label": jax.device_put(y, data)}
sharded, _ = jax.jit(step)(fresh(), batch, quotas, jax.random.key(1))
for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
print("same")
'''


def test_batchnorm_statistics_are_over_the_global_batch_on_eight_devices():
    """A step on a batch split over 8 devices equals the step on one device."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED_STEP], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("same")
