"""What a run folder of a grid holds, and what state the run is in.

Besides the trainer's own files (config.json, checkpoints/, report.json, ...), the
runner keeps three files in each run's folder:

    command.txt     the exact command line; running it alone trains or resumes the run
    log.txt         the run's stdout and stderr, every attempt appended after a header
    attempts.json   {"attempts": [{"started", "seconds", "returncode", "stopped"}]}

and holds an exclusive `flock` on `.lock` while the run's process lives (the process
inherits the lock, so it stays held even if the runner itself is killed): a second
runner never starts a run that is already going.

A run is
    finished  report.json exists and its config is the cell's;
    running   its lock is held;
    conflict  report.json or config.json records another config (the trainer would
              refuse the folder: delete it, or use another grid work directory);
    failed    its last attempt exited non-zero (and it was not stopped by the runner);
    partial   it started (config.json, or an attempt) but has no report: rerunning
              its command resumes from the last checkpoint;
    missing   it never started.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from tlc_jax.experiments.grid import config_differences
from tlc_jax import fileio
from tlc_jax.fileio import read_json, write_json_atomic
from tlc_jax.workdir import CONFIG_FILE

REPORT_FILE = "report.json"
LOG_FILE = "log.txt"
ATTEMPTS_FILE = "attempts.json"
LOCK_FILE = ".lock"

FINISHED, RUNNING, CONFLICT, FAILED, PARTIAL, MISSING = (
    "finished", "running", "conflict", "failed", "partial", "missing")


@dataclasses.dataclass(frozen=True)
class RunState:
    """A run folder's state (see the module docstring), why, and its report if finished."""

    state: str
    detail: str = ""
    report: dict | None = None


def run_state(folder: Path, expected: Mapping, compare=None) -> RunState:
    """The state of the run in `folder`, whose config should be `expected`.

    `compare(recorded, expected)` lists the differing fields (default: every field but
    the resumable ones); the sklearn row compares only its data fields.
    """
    compare = compare or config_differences
    report = read_json(folder / REPORT_FILE)
    if report is not None:
        changed = compare(report.get("config") or {}, expected)
        if not changed:
            return RunState(FINISHED, report=report)
        return RunState(CONFLICT, f"report.json is of another config ({_fields(changed)})")
    if lock_is_held(folder):
        return RunState(RUNNING, "its lock is held by a live process")
    recorded = read_json(folder / CONFIG_FILE)
    if recorded is not None:
        changed = compare(recorded, expected)
        if changed:
            return RunState(CONFLICT,
                            f"config.json is of another config ({_fields(changed)})")
    attempts = read_attempts(folder)
    last = attempts[-1] if attempts else None
    if last and last.get("returncode") not in (0, None) and not last.get("stopped"):
        return RunState(FAILED, f"exit code {last['returncode']} after "
                                f"{len(attempts)} attempt(s); see {folder / LOG_FILE}")
    if recorded is not None or attempts:
        why = "stopped" if last and last.get("stopped") else "interrupted or unfinished"
        return RunState(PARTIAL, f"{why}, no report.json yet; rerunning resumes it")
    return RunState(MISSING, "never started")


def _fields(changed: list[str], shown: int = 5) -> str:
    return ", ".join(changed[:shown]) + (f", ... ({len(changed)} fields)"
                                         if len(changed) > shown else "")


# --- attempts --------------------------------------------------------------------------

def read_attempts(folder: Path) -> list[dict]:
    data = read_json(folder / ATTEMPTS_FILE)
    return list(data.get("attempts", [])) if isinstance(data, dict) else []


def record_attempt(folder: Path, index: int | None, **fields) -> int:
    """Adds an attempt (index None) or updates attempt `index`; returns its index."""
    attempts = read_attempts(folder)
    if index is None:
        attempts.append({})
        index = len(attempts) - 1
    attempts[index].update(fields)
    write_json_atomic(folder / ATTEMPTS_FILE, {"attempts": attempts})
    return index


def wall_seconds(folder: Path) -> float | None:
    """Seconds the runner's attempts at this run took, all together (None: unknown)."""
    times = [a["seconds"] for a in read_attempts(folder) if a.get("seconds") is not None]
    return float(sum(times)) if times else None


# --- the lock --------------------------------------------------------------------------

def try_lock(folder: Path) -> int | None:
    """An open file descriptor holding `folder`'s exclusive lock, or None if another
    process holds it. Close the descriptor (in every process holding a copy) to release."""
    return fileio.try_lock(folder / LOCK_FILE)


def lock_is_held(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock (a run going on right now)."""
    if not (folder / LOCK_FILE).exists():
        return False
    fd = try_lock(folder)
    if fd is None:
        return True
    os.close(fd)
    return False


def log_tail(folder: Path, start: int = 0, lines: int = 25) -> str:
    """The last `lines` lines of log.txt written after byte `start` (one attempt's
    output when `start` is where the log ended before it)."""
    try:
        with open(folder / LOG_FILE, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
