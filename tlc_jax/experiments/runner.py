"""Runs a grid's cells as separate training processes, up to N at once.

Every cell is `python -m tlc_jax.main ...` (its exact command in command.txt), started in
a process group of its own with its output appended to log.txt, so a run can also be
started, inspected or resumed alone. Finished runs are skipped; any other run is
(re)started with the same command, and the trainer resumes from its checkpoints.

Stopping: on SIGINT or SIGTERM the runner starts nothing more, sends SIGINT to every
running training process group (the trainer finishes the checkpoint it is writing and
exits), waits up to `stop_grace_s`, then SIGKILLs what is left (checkpoints are written
atomically, so at most the epoch in progress is lost), records the attempts as stopped
and returns. A second signal kills the runs at once. Rerunning the same grid command
resumes them.

Environment of the runs: the runner's, plus PYTHONUNBUFFERED=1 (log lines in order) and,
when `parallel` > 1, XLA_PYTHON_CLIENT_PREALLOCATE=false (unless set), so that several
runs can share one GPU instead of each reserving 75% of its memory. Thread counts are
left to JAX: on a CPU-only machine every run uses all cores for its computations, so
`parallel` > 1 mostly overlaps what a run does on one core (start-up, data preparation,
compilation, evaluation); on 2 cores --parallel 2 is about as much as helps.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import BinaryIO, Callable, TextIO

from tlc_jax.experiments import baseline
from tlc_jax.experiments.aggregate import cell_record, cell_state
from tlc_jax.experiments.grid import COMMAND_FILE, Cell, Grid, command_line, run_dir
from tlc_jax.experiments.runs import (CONFLICT, FINISHED, LOG_FILE, RUNNING, log_tail,
                                      record_attempt, try_lock, write_record)
from tlc_jax.fileio import atomic_file
from tlc_jax.workdir import has_checkpoint

POLL_SECONDS = 0.2


class Stopped(BaseException):
    """Raised in the runner's own work (the sklearn rows) when a stop signal arrives."""


@dataclasses.dataclass
class Outcome:
    """What happened to one cell in this invocation."""

    cell: Cell
    result: str  # "skipped" (finished earlier), "finished", "failed", "stopped", "busy".
    detail: str = ""


@dataclasses.dataclass
class _Job:
    cell: Cell
    folder: Path
    process: subprocess.Popen
    lock_fd: int
    log: BinaryIO
    attempt: int
    log_start: int
    started: float


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def child_env(parallel: int) -> dict[str, str]:
    """The runs' environment (see the module docstring)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if parallel > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


class Runner:
    """Starts, watches and stops the runs of one grid in one work directory."""

    def __init__(self, grid: Grid, root: Path, parallel: int = 1,
                 stop_grace_s: float = 30.0, out: TextIO | None = None,
                 err: TextIO | None = None):
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1; got {parallel}.")
        self.grid, self.root, self.parallel = grid, Path(root).absolute(), parallel
        self.stop_grace_s = stop_grace_s
        self.out, self.err = out, err  # None: sys.stdout / sys.stderr when printing.
        self.stop_signal: int | None = None
        self._signals = 0
        self._raise_on_signal = False

    # --- signals ---------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        # Only flags: printing here could re-enter a print the signal interrupted.
        self.stop_signal = self.stop_signal or signum
        self._signals += 1
        if self._raise_on_signal:
            raise Stopped(signum)

    def _say_stopping(self) -> None:
        self.say(f"Stopping on {signal.Signals(self.stop_signal).name}; rerunning the "
                 f"grid resumes the runs.")

    def install_signal_handlers(self) -> Callable[[], None]:
        """Handles SIGINT and SIGTERM; returns a function restoring the old handlers."""
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]

    def say(self, line: str, error: bool = False) -> None:
        stream = (self.err or sys.stderr) if error else (self.out or sys.stdout)
        print(line, file=stream, flush=True)

    # --- training runs ---------------------------------------------------------------

    def train(self, cells: list[Cell]) -> list[Outcome]:
        """Runs every unfinished cell, `parallel` at a time; returns one outcome each.
        Stops early (outcomes "stopped") once `stop_signal` is set."""
        outcomes, todo = [], []
        for cell in cells:
            state = cell_state(self.grid, self.root, cell)
            if state.state == FINISHED:
                outcomes.append(Outcome(cell, "skipped", "finished earlier"))
                self.say(f"[skip] {cell.id}: finished earlier")
            elif state.state in (CONFLICT, RUNNING):
                outcomes.append(self._not_started(cell, state.state, state.detail,
                                                  state.record))
            else:
                todo.append(cell)
        running: list[_Job] = []
        total = len(todo)
        while (todo or running) and self.stop_signal is None:
            while len(running) < self.parallel:
                cell = self._next(todo, running)
                if cell is None:
                    break
                todo.remove(cell)
                job = self._start(cell, total - len(todo), total)
                if isinstance(job, Outcome):
                    outcomes.append(job)
                else:
                    running.append(job)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                outcomes.append(self._finish(job))
            if running:
                time.sleep(POLL_SECONDS)
        if self.stop_signal is not None:
            self._say_stopping()
            outcomes += self._stop(running)
            outcomes += [Outcome(c, "stopped", "not started") for c in todo]
        return outcomes

    def _next(self, todo: list[Cell], running: list[_Job]) -> Cell | None:
        """The first cell to start: one that evaluates another cell's run waits while
        that cell is still to train or training here."""
        pending = {c.id for c in todo} | {j.cell.id for j in running}
        for cell in todo:
            source = self.grid.source(cell)
            if source is None or source.id not in pending:
                return cell
        return None

    def _not_started(self, cell: Cell, state: str, detail: str,
                     record: Path | None = None) -> Outcome:
        folder = run_dir(self.root, cell)
        if state == RUNNING:
            self.say(f"[busy] {cell.id}: another process is running it ({detail}); "
                     f"not started", error=True)
            return Outcome(cell, "busy", detail)
        if record is not None:  # The record is wrong, not the folder.
            self.say(f"[FAILED] {cell.id}: {detail}.", error=True)
            return Outcome(cell, "failed", detail)
        self.say(f"[FAILED] {cell.id}: {folder} {detail}. Delete that folder to train "
                 f"this cell afresh, or use another --workdir for the grid.", error=True)
        return Outcome(cell, "failed", detail)

    def _start(self, cell: Cell, number: int, total: int) -> _Job | Outcome:
        folder = run_dir(self.root, cell)
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = try_lock(folder)
        if lock_fd is None:
            return self._not_started(cell, RUNNING, "its lock is held")
        evaluates = source_finished(self.grid, self.root, cell)
        argv = self.grid.command(cell, self.root, evaluate=evaluates)
        line = command_line(argv)
        with atomic_file(folder / COMMAND_FILE) as tmp:
            tmp.write_text(line + "\n")
        log_path = folder / LOG_FILE
        log_start = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")
        attempt = record_attempt(folder, None, started=_now(), seconds=None,
                                 returncode=None, stopped=False)
        log.write(f"==== {_now()} attempt {attempt + 1}: {line}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_env(self.parallel), start_new_session=True, pass_fds=(lock_fd,))
        except OSError as e:
            log.close()
            os.close(lock_fd)
            record_attempt(folder, attempt, returncode=-1, seconds=0.0)
            self.say(f"[FAILED] {cell.id}: could not start {argv[0]}: {e}", error=True)
            return Outcome(cell, "failed", str(e))
        how = (f"evaluates {self.grid.source(cell).id}'s trained run; " if evaluates else
               "trains: the run it could evaluate is not finished here; "
               if self.grid.source(cell) is not None else "")
        self.say(f"[start {number}/{total}] {cell.id} ({how}log: {log_path})")
        return _Job(cell, folder, process, lock_fd, log, attempt, log_start, time.time())

    def _finish(self, job: _Job, stopped: bool = False) -> Outcome:
        """Records a run's exit; reports a failure with the end of its log."""
        seconds = round(time.time() - job.started, 3)
        code = job.process.returncode
        record_attempt(job.folder, job.attempt, returncode=code, seconds=seconds,
                       stopped=stopped)
        job.log.close()
        os.close(job.lock_fd)
        state = cell_state(self.grid, self.root, job.cell)
        if state.state == FINISHED:  # Its report is written (atomically), even if a
            # stop signal reached it after that.
            self.record(job.cell, state)
            self.say(f"[done] {job.cell.id} in {seconds:.1f} s")
            return Outcome(job.cell, "finished")
        if stopped:
            self.say(f"[stopped] {job.cell.id} after {seconds:.0f} s")
            return Outcome(job.cell, "stopped", f"exit code {code}")
        why = f"exit code {code}" if code else f"exit code 0, but {state.detail}"
        tail = log_tail(job.folder, job.log_start)
        self.say(f"[FAILED] {job.cell.id}: {why}; command in {job.folder / COMMAND_FILE}; "
                 f"end of {job.folder / LOG_FILE}:\n" + _indent(tail), error=True)
        return Outcome(job.cell, "failed", why)

    def _stop(self, running: list[_Job]) -> list[Outcome]:
        """SIGINT to every run that has not written its report yet (one that has is
        left to finish its summary and plots), SIGKILL after the grace period (or a
        second signal)."""
        for job in running:
            if cell_state(self.grid, self.root, job.cell).state != FINISHED:
                _signal_group(job.process, signal.SIGINT)
        deadline = time.time() + self.stop_grace_s
        while any(j.process.poll() is None for j in running):
            if time.time() > deadline or self._signals > 1:
                self.say("Killing the runs still going.")
                for job in running:
                    _signal_group(job.process, signal.SIGKILL)
                for job in running:
                    job.process.wait()
                break
            time.sleep(POLL_SECONDS)
        return [self._finish(job, stopped=True) for job in running]

    def record(self, cell: Cell, state=None) -> None:
        """Copies a run finished in its folder to the grid's records (runs.py), if the
        grid keeps records (`state`: the cell's, if just read)."""
        record = cell_record(self.grid, cell)
        if record is None:
            return
        state = state or cell_state(self.grid, self.root, cell)
        if state.state == FINISHED and state.record is None:  # Finished in its folder.
            if write_record(run_dir(self.root, cell), record):
                self.say(f"[record] {cell.id}: {record}")

    # --- the sklearn rows ------------------------------------------------------------

    def baselines(self, cells: list[Cell]) -> list[Outcome]:
        """Fits the missing sklearn rows in this process; a signal interrupts at once."""
        outcomes = []
        self._raise_on_signal = True
        try:
            for cell in cells:
                if self.stop_signal is not None:
                    raise Stopped(self.stop_signal)
                outcomes.append(self._baseline(cell))
        except Stopped:
            self._say_stopping()
            outcomes += [Outcome(c, "stopped") for c in cells[len(outcomes):]]
        finally:
            self._raise_on_signal = False
        return outcomes

    def _baseline(self, cell: Cell) -> Outcome:
        """One sklearn row, unless finished; its attempt and errors recorded like a
        run's (attempts.json, log.txt)."""
        folder = run_dir(self.root, cell)
        state = cell_state(self.grid, self.root, cell)
        if state.state == FINISHED:
            self.say(f"[skip] {cell.id}: finished earlier")
            return Outcome(cell, "skipped", "finished earlier")
        if state.state == CONFLICT:
            return self._not_started(cell, CONFLICT, state.detail, state.record)
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = try_lock(folder)
        if lock_fd is None:
            return self._not_started(cell, RUNNING, "its lock is held")
        t0 = time.time()
        attempt = record_attempt(folder, None, started=_now(), seconds=None,
                                 returncode=None, stopped=False)
        self.say(f"[start] {cell.id}: {baseline.ESTIMATOR['estimator']} on the same split")
        code, stopped = 1, False
        try:
            with open(folder / LOG_FILE, "a") as log:
                log.write(f"==== {_now()} attempt {attempt + 1}: in-process sklearn row\n")
                try:
                    report = baseline.fit_and_report(self.grid, cell, folder)
                    code = 0
                except Exception:
                    log.write(traceback.format_exc())
        except Stopped:
            stopped = True
            raise
        finally:
            record_attempt(folder, attempt, returncode=code, stopped=stopped,
                           seconds=round(time.time() - t0, 3))
            os.close(lock_fd)
        if code:
            self.say(f"[FAILED] {cell.id}: end of {folder / LOG_FILE}:\n"
                     + _indent(log_tail(folder)), error=True)
            return Outcome(cell, "failed", f"see {folder / LOG_FILE}")
        self.record(cell)
        self.say(f"[done] {cell.id}: balanced accuracy "
                 f"{report['test']['balanced_accuracy']:.4f}")
        return Outcome(cell, "finished")


def source_finished(grid: Grid, root: Path, cell: Cell) -> bool:
    """Whether `cell` can evaluate its source cell's run (`Grid.source`): finished in
    its folder, with its checkpoints (a run known only from its record has no weights)."""
    source = grid.source(cell)
    if source is None:
        return False
    folder = run_dir(root, source)
    return ((folder / "report.json").is_file() and has_checkpoint(folder) and
            cell_state(grid, root, source).state == FINISHED)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signals the run's whole process group (it leads its own session)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
