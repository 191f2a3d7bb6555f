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
