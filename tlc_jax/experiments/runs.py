"""What a run folder of a grid holds, and what state the run is in.

Besides the trainer's own files (config.json, checkpoints/, report.json, ...), the
runner keeps three files in each run's folder:

    command.txt     the exact command line; running it alone trains or resumes the run
    log.txt         the run's stdout and stderr, every attempt appended after a header
    attempts.json   {"attempts": [{"started", "seconds", "returncode", "stopped"}]}

and holds an exclusive `flock` on `.lock` while the run's process lives (the process
inherits the lock, so it stays held even if the runner itself is killed): a second
runner never starts a run that is already going.

Records: a grid may name a records folder (its "records" key), meant to be committed.
Each finished run's report is copied there as <records>/<variant>/<method>/seed<S>.json
({"report", "wall_seconds", "command", "split_sha256"}; the data split's digest stands
for the run's data_split.json, too large to commit), so a grid outlives its work
directory: on a fresh machine (an empty work directory) the runs recorded there count
as finished, the runner skips them and the results are written from the records.

A run is
    finished  report.json exists and its config is the cell's (or, without a
              report.json, the run's record does);
    running   its lock is held;
    conflict  report.json or config.json records another config (the trainer would
              refuse the folder: delete it, or use another grid work directory), or
              the run's record does (delete the record to train the run again);
    failed    its last attempt exited non-zero (and it was not stopped by the runner);
    partial   it started (config.json, or an attempt) but has no report: rerunning
              its command resumes from the last checkpoint;
    missing   it never started.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

from tlc_jax.experiments.grid import COMMAND_FILE, config_differences
from tlc_jax import fileio
from tlc_jax.data.prepare import SPLIT_FILE
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
    record: Path | None = None  # Set when the state comes from this record,
    stored: dict | None = None  # which holds this (finished runs).


def run_state(folder: Path, expected: Mapping, compare=None,
              record: Path | None = None) -> RunState:
    """The state of the run in `folder`, whose config should be `expected`; `record`
    is the run's record file (see the module docstring), if the grid keeps records.

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
    try:
        stored = read_record(record) if record is not None else None
    except ValueError as e:
        return RunState(CONFLICT, str(e), record=record)
    if stored is not None:
        changed = compare(stored["report"].get("config") or {}, expected)
        if changed:
            return RunState(CONFLICT, f"its record {record} is of another config "
                                      f"({_fields(changed)}); delete the record to "
                                      f"train the run again", record=record)
        return RunState(FINISHED, f"from its record {record}", report=stored["report"],
                        record=record, stored=stored)
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


# --- records -------------------------------------------------------------------------

def record_path(records: Path, variant: str, method: str, seed: int) -> Path:
    """Where a run's record lives: <records>/<variant>/<method>/seed<seed>.json."""
    return Path(records) / variant / method / f"seed{seed}.json"


def read_record(path: Path) -> dict | None:
    """A record (see the module docstring), or None when there is none.
    Raises ValueError for a file that is there but is not a record (never silently
    retrains a run whose record was damaged)."""
    if not Path(path).exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("report"), dict):
        raise ValueError(f"{path} is not a run record (a JSON object with a 'report'); "
                         f"restore it from git, or delete it to train the run again.")
    return data


def write_record(folder: Path, path: Path) -> bool:
    """Copies the finished run in `folder` to its record `path` (atomically) unless the
    record already holds the same report; returns whether it wrote."""
    report = read_json(folder / REPORT_FILE)
    if report is None:
        raise ValueError(f"{folder} has no report.json to record.")
    existing = read_json(path) if Path(path).exists() else None
    if isinstance(existing, dict) and existing.get("report") == report:
        return False
    command = folder / COMMAND_FILE
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {
        "report": report, "wall_seconds": wall_seconds(folder),
        "command": command.read_text().strip() if command.exists() else None,
        "split_sha256": split_digest(folder)})
    return True


def split_digest(folder: Path) -> str | None:
    """SHA-256 of the run's data split (data_split.json, canonical JSON), or None."""
    split = read_json(folder / SPLIT_FILE)
    if split is None:
        return None
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()


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
