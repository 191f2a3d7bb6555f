"""The work directory's config check: what a resumed run may and may not change."""

import json

import pytest

from tlc_jax.workdir import CONFIG_FILE, claim_workdir, config_changes

from helpers import tiny_config


def test_changes_are_listed_except_resumable_fields():
    old = json.loads(tiny_config().to_json())
    new = json.loads(tiny_config(**{"train.epochs": 5, "eval.batch_size": 7}).to_json())
    assert config_changes(old, new) == {"train.epochs": (2, 5)}


def test_a_field_added_to_the_schema_since_is_no_change_at_its_default(tmp_path):
    """An upgrade that adds a config field must not orphan the runs made before it."""
    recorded = json.loads(tiny_config().to_json())
    del recorded["sampling"]["signal"]  # As a run from before the field existed.
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)  # It saved a checkpoint.
    (tmp_path / CONFIG_FILE).write_text(json.dumps(recorded))
    claim_workdir(tmp_path, tiny_config(), overwrite=False)  # Resumes.
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["sampling"]["signal"] == "f1"
    # At another value than the default the run would have been another one.
    (tmp_path / CONFIG_FILE).write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="sampling.signal: None -> 'recall'"):
        claim_workdir(tmp_path, tiny_config(**{"sampling.signal": "recall"}),
                      overwrite=False)
    # A field that was removed since is a change: its old value cannot be judged.
    recorded["sampling"]["active"] = True
    assert "sampling.active" in config_changes(recorded, json.loads(
        tiny_config().to_json()))


# --- the lock, and starts that failed ---------------------------------------------------

LOCK_HOLDER = """
import sys, time
from pathlib import Path
from tlc_jax.workdir import lock_workdir
fd = lock_workdir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_trainer_is_refused_while_the_first_holds_the_workdir(tmp_path):
    """The lock names the holder, and a holder killed with SIGKILL leaves no stale lock."""
    import subprocess
    import sys

    from tlc_jax import train
    from tlc_jax.workdir import WorkdirBusyError

    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(workdir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # Blocks until it holds it.
        with pytest.raises(WorkdirBusyError,
                           match=rf"in use by another training process \(pid {holder.pid}\)"):
            train.Trainer(tiny_config(), workdir)
        assert not (workdir / CONFIG_FILE).exists()  # Refused before writing anything.
    finally:
        holder.kill()
        holder.wait(timeout=60)
    trainer = train.Trainer(tiny_config(), workdir)  # The kernel released the lock.
    with pytest.raises(WorkdirBusyError):  # One trainer per directory, also in-process.
        train.Trainer(tiny_config(), workdir)
    del trainer
    import gc
    gc.collect()
    train.Trainer(tiny_config(), workdir)


@pytest.mark.parametrize("field,value,message", [
    ("data.image_size", -5, "config.data.image_size must be a side in pixels"),
    ("data.test_fraction", 1.5, r"config.data.test_fraction must lie in \[0, 1\)"),
    ("data.contrast_fraction", -0.5, r"config.data.contrast_fraction must lie in \[0, 1\)"),
    ("data.channels", 2, "config.data.channels must be 1 .grey. or 3"),
    ("data.n_max", -1, "config.data.n_max must be >= 0"),
    ("model.pretrained", "imagenet", "no ImageNet weights are published for "
     "config.model.name='densenet_bc'; models that have them: densenet121, "),
])
def test_bad_values_are_refused_before_the_disk_is_touched(tmp_path, field, value,
                                                           message):
    from tlc_jax import train

    with pytest.raises(ValueError, match=message):
        train.Trainer(tiny_config(**{field: value}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_start_that_failed_before_its_first_checkpoint_blocks_nothing(tmp_path):
    """A run that failed to start (here: its weights file is missing) recorded its
    config but saved no checkpoint; the corrected command is not 'another config'."""
    from tlc_jax import train

    workdir = tmp_path / "run"
    bad = tiny_config(**{"model.pretrained": str(tmp_path / "missing.pth")})
    with pytest.raises(Exception):
        train.Trainer(bad, workdir).run()
    assert (workdir / CONFIG_FILE).exists() and not list(workdir.glob("checkpoints/[0-9]*"))
    train.Trainer(tiny_config(), workdir)  # Accepted without --overwrite.
    assert json.loads((workdir / CONFIG_FILE).read_text())["model"]["pretrained"] == ""
    (workdir / "checkpoints" / "0").mkdir(parents=True)  # Now it holds a run.
    with pytest.raises(ValueError, match="holds a run with another config"):
        claim_workdir(workdir, bad, overwrite=False)
