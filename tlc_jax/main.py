"""Command line: `python -m tlc_jax.main --config=configs/digits_lt.py --workdir=DIR`.

Kept short on purpose: the training algorithm lives in tlc_jax/train.py. Override any
config field with `--config.section.field=value`, or pass the config file's argument
string (`--config=configs/digits_lt.py:ratio=100,loss=focal`).
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from tlc_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, split, "
                               "metrics and report. Re-running resumes from it.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "If --workdir holds a run of another "
                               "config, delete it and start afresh (else refuse).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_libraries(record) -> bool:
    """Keeps orbax's and grain's per-step INFO chatter out of the run's log."""
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax"))
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
    report = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _OVERWRITE.value)
    test = report["test"]
    summary = ", ".join(f"{k} {test[k]:.4f}" for k in (
        "accuracy", "macro_f1", "balanced_accuracy", "worst_class_accuracy",
        "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
        if test.get(k) is not None)
    logging.info("Test: %s", summary)
    print(f"Test: {summary}\nReport: {_WORKDIR.value}/report.json")


if __name__ == "__main__":
    app.run(main)
