"""Command line: `python -m tlc_jax.experiments --grid=configs/grids/X.py --workdir=DIR`.

Runs every unfinished run of the grid (`--parallel` at a time, each its own
`python -m tlc_jax.main` process), fits the missing scikit-learn rows, then writes
DIR/results.md, DIR/results.csv, DIR/results_per_class.csv and DIR/plots/. Rerunning
the same command skips what is finished and resumes the rest. A grid with a "records"
folder (commit it) gets each finished run's record there, so the grid continues, and
its results are written, on another machine or from an empty work directory. A method
that differs from another only in post-hoc corrections (posthoc-la, tau-norm from
instance) evaluates that method's trained run instead of training again.

    --only=REGEX    run only the runs whose id ("variant/method/seedS") matches
                    (re.search); the results still cover the whole grid
    --dry_run       print each selected run's state and command; start nothing,
                    write nothing
    --report_only   start nothing; record the finished runs (if the grid keeps
                    records) and write the results from the runs there are

Exit status: 0 when every selected run is finished; 1 when one failed (its log's end
is printed) or is running in another process; 2 for a bad grid file or flag; 128 +
the signal number when stopped by SIGINT / SIGTERM (the runs are stopped too).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from absl import app, flags

from tlc_jax.experiments import baseline
from tlc_jax.experiments.aggregate import cell_state
from tlc_jax.experiments.grid import GridError, command_line, load_grid
from tlc_jax.experiments.results import RESULTS_MD, write_results
from tlc_jax.experiments.runner import Outcome, Runner, source_finished

_GRID = flags.DEFINE_string("grid", None, "Grid file (configs/grids/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The grid's work directory: one folder "
                               "per run, results.md / results.csv / plots.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (separate processes).",
                                 lower_bound=1)
_ONLY = flags.DEFINE_string("only", "", "Only the runs whose id variant/method/seedS "
                            "matches this regular expression (re.search).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print states and commands; run nothing.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the results from the "
                                 "finished runs; start nothing.")
_STOP_GRACE = flags.DEFINE_float("stop_grace_s", 30.0, "On SIGINT / SIGTERM, seconds "
                                 "the runs get to stop before they are killed.")
flags.mark_flags_as_required(["grid", "workdir"])


def selected(cells, only: str):
    """The cells whose id matches `only` (all when empty)."""
    pattern = re.compile(only)
    return [c for c in cells if pattern.search(c.id)]


def dry_run(grid, root: Path, cells, rows) -> None:
    """Each selected run's state and command; nothing is started or written."""
    ids = {c.id for c in cells}
    for cell in cells:
        state = cell_state(grid, root, cell)
        source = grid.source(cell)
        evaluate = source is not None and (source.id in ids or
                                           source_finished(grid, root, cell))
        note = (f" (evaluates {source.id}'s trained run" +
                ("" if source_finished(grid, root, cell) else ", once it has finished")
                + ")" if evaluate else "")
        print(f"{cell.id}: {state.state}{note}\n"
              f"    {command_line(grid.command(cell, root, evaluate=evaluate))}")
    for cell in rows:
        state = cell_state(grid, root, cell)
        print(f"{cell.id}: {state.state}\n    (in this process: "
              f"{baseline.ESTIMATOR['estimator']} on the split of {cell.variant} "
              f"seed {cell.seed})")


def summary(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
    return ", ".join(f"{n} {result}" for result, n in counts.items()) or "nothing to do"


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    root = Path(_WORKDIR.value).absolute()
    try:
        grid = load_grid(_GRID.value)
        cells = selected(grid.cells(), _ONLY.value)
        rows = selected(baseline.baseline_cells(grid), _ONLY.value)
    except (GridError, re.error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if _ONLY.value and not cells and not rows:
        print(f"error: --only={_ONLY.value!r} matches none of the runs, e.g. "
              f"{grid.cells()[0].id}", file=sys.stderr)
        return 2
    if _DRY_RUN.value:
        dry_run(grid, root, cells, rows)
        return 0
    outcomes: list[Outcome] = []
    runner = Runner(grid, root, _PARALLEL.value, _STOP_GRACE.value)
    if not _REPORT_ONLY.value:
        restore = runner.install_signal_handlers()
        try:
            outcomes = runner.train(cells)
            if runner.stop_signal is None:
                outcomes += runner.baselines(rows)
        finally:
            restore()
        print(f"Runs: {summary(outcomes)}.", flush=True)
        if runner.stop_signal is not None:
            print("Stopped; rerun the same command to resume.", file=sys.stderr)
            return 128 + runner.stop_signal
    for cell in grid.cells() + baseline.baseline_cells(grid):
        runner.record(cell)  # Runs finished before the grid kept records, or elsewhere.
    write_results(grid, root)
    print(f"Results: {root / RESULTS_MD}")
    return 1 if any(o.result in ("failed", "busy") for o in outcomes) else 0


if __name__ == "__main__":
    app.run(main)
