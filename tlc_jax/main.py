"""Command line: `python -m tlc_jax.main --config=configs/digits_lt.py --workdir=DIR`.

Kept short on purpose: the training algorithm lives in tlc_jax/train.py. Override any
config field with `--config.section.field=value`, or pass the config file's argument
string (`--config=configs/digits_lt.py:ratio=100,loss=focal`). `--help` lists every
config field with its default.

A mistake on the command line or in the data (a mistyped field, a value out of range,
missing files, no network for a download, a work directory holding another run) ends
with one message saying what is wrong and the flag that fixes it, and exit status 2;
tracebacks are for bugs (and for any error with --verbose). Ctrl-C stops the run
before its next step (a second Ctrl-C at once); the same command resumes it. Re-running
a finished run prints its results without evaluating again (--reevaluate to evaluate its
final checkpoint anew). `--evaluate_from=DIR` trains nothing: it evaluates the finished
run in DIR, trained with the same config, under this config's post-hoc corrections
(eval.tau_norm, eval.logit_adjust_tau), e.g. to try tau-normalisation on a trained run.

Several processes (hosts) run one training together when launched as such: by SLURM's
srun or Open MPI's mpirun with more than one task (detected as JAX detects them), or with
--coordinator_address, --num_processes and --process_id (or the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID variables launch/local_processes.sh sets); a single
process needs none of them. Process 0 logs and writes the outputs, the others log
warnings only (--log_all_processes for all). An error on one process stops all of them;
when a process dies, the others end within --heartbeat_timeout seconds. See
docs/MULTIHOST.md.
"""

if __name__ == "__main__":  # First of all: restart with tcmalloc (tlc_jax/allocator.py).
    from tlc_jax import allocator
    allocator.use_tcmalloc()

import logging as std_logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tlc_jax import config as config_lib
from tlc_jax import distributed, train, xla_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, split, "
                               "metrics and report. Re-running resumes from it.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "If --workdir holds a run of another "
                               "config, delete it and start afresh (else refuse).")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False, "For a finished run: evaluate and "
                                "write its report again (else it is only printed).")
_EVALUATE_FROM = flags.DEFINE_string(
    "evaluate_from", None, "Train nothing: evaluate the finished run in this directory "
    "(trained with the same config up to evaluation fields such as eval.tau_norm and "
    "eval.logit_adjust_tau) with this config's post-hoc corrections; the report goes "
    "to --workdir.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Tracebacks for every error, also for "
                             "mistakes in the command line or the data.")
# --- several processes (docs/MULTIHOST.md); a single process needs none of these ---
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Several processes: HOST:PORT of process 0's "
    "coordinator (default $JAX_COORDINATOR_ADDRESS, or SLURM's / Open MPI's).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Several processes: how many run together (default "
    "$JAX_NUM_PROCESSES, or SLURM's / Open MPI's task count).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Several processes: this one's index, 0 .. num_processes - 1 "
    "(default $JAX_PROCESS_ID, or SLURM's / Open MPI's rank).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Several processes: seconds after which a silent process "
    "counts as dead and the others stop.", lower_bound=1)
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout", 300, "Several processes: seconds to wait for all to join.",
    lower_bound=1)
_LOG_ALL = flags.DEFINE_bool("log_all_processes", False, "Several processes: INFO logs "
                             "from every process (else from process 0 only).")

USAGE_ERROR = 2  # Exit status for a mistake the user can fix (as argparse uses).


def _quiet_libraries(record) -> bool:
    """Keeps orbax's and grain's per-step INFO chatter out of the run's log."""
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax"))
    return record.levelno >= std_logging.WARNING or not noisy


user_error = train.user_error  # A mistake in the command line, config, data, workdir.


def fail(message: str) -> None:
    print(f"error: {message}\n(--verbose shows the traceback)", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def exit_at_once(status: int) -> None:
    """Ends this process of a multi-process run without waiting for the others at
    JAX's shutdown barrier (up to its timeout): they stop when they miss it."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.flush()
    os._exit(status)


def lost_contact(error: BaseException) -> bool:
    """A collective or the coordination service failed because another process of the
    run is gone."""
    text = str(error)
    return (distributed.is_multiprocess() and type(error).__name__ == "JaxRuntimeError"
            and any(s in text for s in ("Gloo", "Connection closed", "coordination",
                                        "NCCL", "UNAVAILABLE", "DEADLINE_EXCEEDED")))


def start_processes() -> None:
    """Joins a multi-process run when launched as one (see the module doc); logs
    which process this is and its devices; quiets the others' logs."""
    try:
        launch = distributed.detect_launch(_COORDINATOR.value, _NUM_PROCESSES.value,
                                           _PROCESS_ID.value)
    except ValueError as e:
        fail(str(e))
    if launch is not None:
        distributed.initialize(launch, heartbeat_timeout=_HEARTBEAT.value,
                               init_timeout=_INIT_TIMEOUT.value)
    logging.info("%s", distributed.describe())
    if distributed.is_multiprocess() and jax.process_index() != 0 and not _LOG_ALL.value:
        logging.set_verbosity(logging.WARNING)


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
    where = ("the next step all processes agree on" if distributed.is_multiprocess()
             else "the next step")
    print(f"\nstopping before {where} (Ctrl-C again to stop at once)...",
          file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
    signal.signal(signal.SIGINT, _on_ctrl_c)
    config = _CONFIG.value
    start_processes()
    try:
        if _EVALUATE_FROM.value:
            report = train.evaluate_trained(config, _WORKDIR.value, _EVALUATE_FROM.value,
                                            _OVERWRITE.value, _REEVALUATE.value)
        else:
            report = train.train_and_evaluate(config, _WORKDIR.value, _OVERWRITE.value,
                                              reevaluate=_REEVALUATE.value)
    except KeyboardInterrupt as e:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        if distributed.is_multiprocess() and not isinstance(e, train.Stopped):
            exit_at_once(130)  # Stopped at once: the others are not stopping with it.
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - user mistakes become one line, bugs stay.
        if not distributed.is_multiprocess():
            if _VERBOSE.value or not user_error(e):
                raise
            fail(str(e))
        # Several processes: an error every process raised together (the run's checks
        # make sure of that) ends through JAX's shutdown; any other ends this process
        # at once, and the others stop when they miss it.
        if lost_contact(e) and not _VERBOSE.value:
            print(f"error: process {jax.process_index()} lost contact with another "
                  f"process of this run (it died, or its host did): "
                  f"{str(e).splitlines()[0][:300]}\nRun the same launch again to resume "
                  f"from the last checkpoint.", file=sys.stderr)
            exit_at_once(1)
        if _VERBOSE.value or not user_error(e):
            traceback.print_exc()
            exit_at_once(1)
        if not distributed.raised_everywhere(e):
            print(f"error: {e}", file=sys.stderr)
            exit_at_once(USAGE_ERROR)
        fail(str(e))
    if jax.process_index() == 0:
        print_outputs(report, _WORKDIR.value)


def print_help() -> None:
    print(__doc__.strip() + "\n")
    print(flags.FLAGS.main_module_help())
    print("\nConfig fields (--config.<section>.<field>=<value>; defaults of "
          "tlc_jax/config.py, an experiment file may change them):\n")
    print(config_lib.reference(), flush=True)


if __name__ == "__main__":
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    if any(a in ("--help", "-h", "-?", "--helpshort") for a in sys.argv[1:]):
        print_help()
        sys.exit(0)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
