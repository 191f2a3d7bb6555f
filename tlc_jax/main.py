"""Command line: `python -m tlc_jax.main --config=configs/digits_lt.py --workdir=DIR`.

Kept short on purpose: the training algorithm lives in tlc_jax/train.py. Override any
config field with `--config.section.field=value`, or pass the config file's argument
string (`--config=configs/digits_lt.py:ratio=100,loss=focal`). `--help` lists every
config field with its default.

A mistake on the command line or in the data (a mistyped field, a value out of range,
missing files, no network for a download, a work directory holding another run) ends
with one message saying what is wrong and the flag that fixes it, and exit status 2;
tracebacks are for bugs (and for any error with --verbose). Ctrl-C stops the run
before its next step (a second Ctrl-C at once); the same command resumes it. Re-running a finished run prints its results without
evaluating again (--reevaluate to evaluate its final checkpoint anew).
"""

import logging as std_logging
import re
import signal
import sys
import traceback
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from tlc_jax import config as config_lib
from tlc_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, split, "
                               "metrics and report. Re-running resumes from it.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "If --workdir holds a run of another "
                               "config, delete it and start afresh (else refuse).")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False, "For a finished run: evaluate and "
                                "write its report again (else it is only printed).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Tracebacks for every error, also for "
                             "mistakes in the command line or the data.")

USAGE_ERROR = 2  # Exit status for a mistake the user can fix (as argparse uses).
_TLC_JAX = str(Path(__file__).resolve().parent)


def _quiet_libraries(record) -> bool:
    """Keeps orbax's and grain's per-step INFO chatter out of the run's log."""
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax"))
    return record.levelno >= std_logging.WARNING or not noisy


def raised_by_tlc_jax(error: BaseException) -> bool:
    """Whether tlc-jax's own code raised `error` on purpose (its innermost frame is in
    this package): a message written for the user, not a failure inside a library."""
    tb = error.__traceback__
    if tb is None:
        return False
    innermost = traceback.extract_tb(tb)[-1].filename
    return str(Path(innermost).resolve()).startswith(_TLC_JAX)


def user_error(error: BaseException) -> bool:
    """A mistake in the command line, config, data or work directory (see module doc)."""
    from tlc_jax.fileio import DownloadError
    from tlc_jax.workdir import WorkdirBusyError

    if isinstance(error, (WorkdirBusyError, DownloadError)):
        return True
    return (isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError,
                               ImportError)) and raised_by_tlc_jax(error))


def fail(message: str) -> None:
    print(f"error: {message}\n(--verbose shows the traceback)", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _innermost_message(error: BaseException) -> str:
    """The message under ml_collections' wrappers (AttributeError(KeyError(text)))."""
    inner: object = error
    while isinstance(inner, BaseException) and inner.args:
        inner = inner.args[0]
    return str(inner).strip()


def flag_error_message(error: BaseException, argv: list[str]) -> str:
    """A flag parsing error as one line naming the flag: a config field that does not
    exist (with ml_collections' suggestion), or a value of the wrong type."""
    text = _innermost_message(error)
    unknown = re.match(r"'(\w+)'\s*(Did you mean (.*))?", text, re.S)
    if unknown and not isinstance(error, flags.Error):
        field = unknown.group(1)
        flag = next((a.split("=")[0] for a in argv
                     if re.search(rf"^--config\.(\w+\.)*{field}(\.|$)", a.split("=")[0])),
                    f"--config....{field}")
        hint = f" (did you mean {unknown.group(3).strip()})" if unknown.group(2) else ""
        return f"{flag}: no such config field{hint}"
    return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a mistyped config field or a value of the wrong type
    as a usage error naming the flag (absl would print a traceback or exit 1)."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        fail(f"{flag_error_message(e, argv)}. `python -m tlc_jax.main --help` lists "
             f"every flag and config field.")


def print_outputs(report: dict, workdir: str) -> None:
    test = report["test"]
    summary = ", ".join(f"{k} {test[k]:.4f}" for k in (
        "accuracy", "macro_f1", "balanced_accuracy", "worst_class_accuracy",
        "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
        if test.get(k) is not None)
    logging.info("Test: %s", summary)
    folder = Path(workdir)
    print(f"Test: {summary}\nReport: {folder / 'report.json'}\n"
          f"Summary: {folder / 'summary.md'}\nPlots: {folder / 'plots'}/")


def _on_ctrl_c(signum, frame) -> None:
    """First Ctrl-C: stop before the next step (checkpoints finish writing); second:
    at once."""
    if train.stop_requested():
        raise KeyboardInterrupt
    train.request_stop()
    print("\nstopping before the next step (Ctrl-C again to stop at once)...",
          file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
    signal.signal(signal.SIGINT, _on_ctrl_c)
    config = _CONFIG.value
    try:
        report = train.train_and_evaluate(config, _WORKDIR.value, _OVERWRITE.value,
                                          reevaluate=_REEVALUATE.value)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - user mistakes become one line, bugs stay.
        if _VERBOSE.value or not user_error(e):
            raise
        fail(str(e))
    print_outputs(report, _WORKDIR.value)


def print_help() -> None:
    print(__doc__.strip() + "\n")
    print(flags.FLAGS.main_module_help())
    print("\nConfig fields (--config.<section>.<field>=<value>; defaults of "
          "tlc_jax/config.py, an experiment file may change them):\n")
    print(config_lib.reference(), flush=True)


if __name__ == "__main__":
    if any(a in ("--help", "-h", "-?", "--helpshort") for a in sys.argv[1:]):
        print_help()
        sys.exit(0)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
