"""A run's work directory: which config it belongs to, and what a run writes there.

`lock_workdir` makes a trainer the directory's only user while it runs (an exclusive
lock the kernel releases when the process ends, however it ends). `claim_workdir`
records the resolved config in `config.json`. A directory that holds a run of another
config is refused - unless `overwrite`, which deletes that run's outputs first - so a
resumed run never mixes two experiments; a run that never saved a checkpoint (a start
that failed) holds nothing to mix, and gives way to the new config. Fields that only
say where things are or how often to log (`RESUMABLE_FIELDS`) may change between a run
and its resumption, and so may fields added to the schema since, while they keep their
default.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import ml_collections
from absl import logging

from tlc_jax.config import base_config
from tlc_jax.data.prepare import SPLIT_FILE
from tlc_jax.fileio import try_lock, write_json_atomic
from tlc_jax.inference import CHECKPOINT_DIR, MODEL_FILE

CONFIG_FILE = "config.json"
LOCK_FILE = ".trainer.lock"  # Not the experiment runner's ".lock", which it hands down.
RESUMABLE_FIELDS = {"data.root", "data.download", "data.cache_dir", "model.weights_dir",
                    "train.log_every_steps", "train.checkpoint_every_epochs",
                    "eval.batch_size"}
# Fields that change only how a trained run's final weights are evaluated (post-hoc
# corrections), never its training: a finished run of a config that differs from this
# one only in these is evaluated as this config's run without training again
# (`tlc_jax.train.evaluate_trained`, `tlc_jax.main --evaluate_from`).
EVALUATION_FIELDS = {"eval.logit_adjust_tau", "eval.tau_norm", "eval.tau_candidates"}
RUN_OUTPUTS = (CHECKPOINT_DIR, "tensorboard", "plots", SPLIT_FILE, "metrics.jsonl",
               "report.json", "summary.md", CONFIG_FILE, MODEL_FILE)


def _flat(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def training_changes(recorded: Mapping, current: Mapping) -> dict[str, tuple[Any, Any]]:
    """`config_changes` that would change training: without `EVALUATION_FIELDS`."""
    return {k: v for k, v in config_changes(recorded, current).items()
            if k not in EVALUATION_FIELDS}


def config_changes(recorded: Mapping, current: Mapping) -> dict[str, tuple[Any, Any]]:
    """{dotted field: (recorded value, current value)} for every field two configs (as
    JSON dicts) disagree on, except those a resumed run may change. A field the recorded
    config lacks is no change when the current value is the schema's default: tlc-jax
    gained that field after the run was recorded, and its default keeps the behaviour
    the run had (so an upgrade does not orphan runs)."""
    old = _flat(json.loads(json.dumps(recorded)))
    new = _flat(json.loads(json.dumps(current)))
    defaults = _flat(json.loads(base_config().to_json()))
    added_at_default = {k for k in new.keys() - old.keys()
                        if k in defaults and new[k] == defaults[k]}
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k) and k not in RESUMABLE_FIELDS
            and k not in added_at_default}


class WorkdirBusyError(RuntimeError):
    """Another trainer is using the work directory."""


def lock_workdir(workdir: Path) -> int:
    """Takes `workdir`'s trainer lock; returns its file descriptor (close it, or end
    the process, to release). Raises WorkdirBusyError, naming the holder's process id,
    if another trainer holds it."""
    path = workdir / LOCK_FILE
    fd = try_lock(path)
    if fd is None:
        holder = path.read_text().strip() or "?"
        raise WorkdirBusyError(
            f"{workdir} is in use by another training process (pid {holder}). Wait for "
            f"it to end (or stop it), or use another --workdir.")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def has_checkpoint(workdir: Path) -> bool:
    """Whether the run in `workdir` ever saved a checkpoint (orbax's step folders)."""
    folder = workdir / CHECKPOINT_DIR
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def claim_workdir(workdir: Path, config: ml_collections.ConfigDict,
                  overwrite: bool) -> None:
    """Records the resolved config; refuses a workdir that holds another config's run
    (one with a checkpoint: a start that failed before its first one blocks nothing)."""
    path = workdir / CONFIG_FILE
    current = json.loads(config.to_json())
    if path.exists():
        changed = config_changes(json.loads(path.read_text()), current)
        if changed and not overwrite and has_checkpoint(workdir):
            details = ", ".join(f"{k}: {a!r} -> {b!r}"
                                for k, (a, b) in list(changed.items())[:8])
            raise ValueError(
                f"{workdir} holds a run with another config ({details}). Use a new "
                f"--workdir, or pass --overwrite to delete that run and start afresh.")
        if changed:
            if not overwrite:
                logging.info("%s: the earlier start never saved a checkpoint; starting "
                             "afresh with this config.", workdir)
            for name in RUN_OUTPUTS:
                target = workdir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    write_json_atomic(path, current)
