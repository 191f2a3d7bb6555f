"""A grid's run folders read back: per run its state and metrics, per (variant,
method) the statistics over seeds. Tables (results.py) and figures (plots.py) are
drawn from these.

Metrics per run: the trainer's test metrics (accuracy, balanced accuracy, macro-F1,
worst-class accuracy, many / medium / few-shot accuracy), tail accuracy - the mean
per-class accuracy of the TAIL_CLASSES classes with the fewest training images (ties
by class index) -, and the contrast-set figures model selection may use (SELECTION). Statistics over seeds: mean and sample standard deviation (ddof 1)
of the values there are, and their number n; a shot group without classes (None in a
report) is left out of its metric's values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from tlc_jax.experiments import baseline
from tlc_jax.experiments.grid import BASELINE_METHOD, Cell, Grid, config_dict, run_dir
from tlc_jax.experiments.runs import (FINISHED, RunState, record_path, run_state,
                                      wall_seconds)

TAIL_CLASSES = 3
# (report key, table heading); "tail_accuracy" is computed here, the rest are the
# trainer's test metrics.
METRICS = (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced acc."),
           ("macro_f1", "Macro-F1"), ("worst_class_accuracy", "Worst class"),
           ("tail_accuracy", f"Tail-{TAIL_CLASSES} acc."),
           ("many_shot_accuracy", "Many-shot"), ("medium_shot_accuracy", "Medium-shot"),
           ("few_shot_accuracy", "Few-shot"))
# Model selection reads the contrast set only (never the test set): the final model's
# macro-F1 and balanced accuracy there (report["contrast"]; runs recorded before it
# existed give the last epoch's contrast macro-F1 from their history, the same number
# unless post-hoc corrections are on, and no balanced accuracy).
SELECTION = (("contrast_macro_f1", "Contrast macro-F1"),
             ("contrast_balanced_accuracy", "Contrast bal. acc."))


@dataclasses.dataclass(frozen=True)
class Run:
    """One cell's folder as found: state, metrics (empty unless finished), times."""

    cell: Cell
    folder: Path
    state: RunState
    metrics: dict[str, float | None]
    train_seconds: float | None
    wall_seconds: float | None

    @property
    def finished(self) -> bool:
        return self.state.state == FINISHED


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof 1; None under 2 values) of the values there are."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat":
        present = [float(v) for v in values if v is not None]
        return cls(float(np.mean(present)) if present else None,
                   float(np.std(present, ddof=1)) if len(present) > 1 else None,
                   len(present))


@dataclasses.dataclass(frozen=True)
class Group:
    """The runs of one (variant, method), one per seed of the grid."""

    variant: str
    method: str
    runs: tuple[Run, ...]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def stat(self, key: str) -> Stat:
        return Stat.of([r.metrics.get(key) for r in self.finished])

    def seconds(self, kind: str) -> Stat:
        return Stat.of([getattr(r, f"{kind}_seconds") for r in self.finished])


# --- reading the runs ------------------------------------------------------------------

def tail_accuracy(report: dict, k: int = TAIL_CLASSES) -> float:
    """Mean test accuracy of the `k` classes with the fewest training images."""
    per_class = report["test"]["per_class"]
    counts = per_class.get("train_count") or report["data"]["train"]
    order = np.argsort(np.asarray(counts), kind="stable")[:k]
    return float(np.mean(np.asarray(per_class["accuracy"], dtype=np.float64)[order]))


def selection_metrics(report: dict) -> dict[str, float | None]:
    """The contrast-set figures that choices may use (see SELECTION)."""
    if "contrast" in report:
        return {"contrast_macro_f1": report["contrast"].get("macro_f1"),
                "contrast_balanced_accuracy": report["contrast"].get("balanced_accuracy")}
    epochs = (report.get("history") or {}).get("epochs") or []
    return {"contrast_macro_f1": epochs[-1].get("contrast_macro_f1") if epochs else None,
            "contrast_balanced_accuracy": None}


def run_metrics(report: dict) -> dict[str, float | None]:
    test = report["test"]
    out = {key: test.get(key) for key, _ in METRICS if key != "tail_accuracy"}
    out["tail_accuracy"] = tail_accuracy(report)
    return {**out, **selection_metrics(report)}


def train_seconds(report: dict) -> float | None:
    """The report's training time: its epochs' seconds (the sklearn row: fit and
    prediction); None when it records none."""
    if "baseline" in report:
        return float(report["baseline"]["seconds"])
    epochs = (report.get("history") or {}).get("epochs") or []
    return float(sum(e.get("seconds", 0.0) for e in epochs)) if epochs else None


def cell_record(grid: Grid, cell: Cell) -> Path | None:
    """`cell`'s record file, when the grid keeps records (runs.py)."""
    if grid.records is None:
        return None
    return record_path(grid.records, cell.variant, cell.method, cell.seed)


def cell_state(grid: Grid, root: Path, cell: Cell) -> RunState:
    """The state of `cell`'s folder under `root` (a training run or a sklearn row),
    or of its record when the folder holds no report."""
    folder, record = run_dir(root, cell), cell_record(grid, cell)
    if cell.method == BASELINE_METHOD:
        return run_state(folder, baseline.expected_config(grid, cell),
                         compare=baseline.compare, record=record)
    return run_state(folder, config_dict(grid.config(cell)), record=record)


def collect(grid: Grid, root: Path) -> list[Run]:
    """Every cell of the grid and every sklearn row, in table order: variant, then
    method (the grid's, then the sklearn row), then seed."""
    cells = grid.cells() + baseline.baseline_cells(grid)
    methods = list(grid.methods) + [BASELINE_METHOD]
    cells.sort(key=lambda c: (list(grid.variants).index(c.variant),
                              methods.index(c.method), grid.seeds.index(c.seed)))
    return [_read_run(grid, root, cell) for cell in cells]


def _read_run(grid: Grid, root: Path, cell: Cell) -> Run:
    folder = run_dir(root, cell)
    state = cell_state(grid, root, cell)
    report = state.report
    metrics = run_metrics(report) if report is not None else {}
    seconds = train_seconds(report) if report is not None else None
    wall = (state.stored.get("wall_seconds") if state.stored is not None
            else wall_seconds(folder))
    return Run(cell, folder, state, metrics, seconds, wall)


def groups(grid: Grid, runs: list[Run]) -> list[Group]:
    """Runs grouped by (variant, method), in table order."""
    out: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        out.setdefault((run.cell.variant, run.cell.method), []).append(run)
    return [Group(v, m, tuple(rs)) for (v, m), rs in out.items()]


def class_columns(variant_groups: list[Group]) -> tuple[list[str], list[int]] | None:
    """(class names, training counts) from the variant's first finished run."""
    for g in variant_groups:
        for run in g.finished:
            report = run.state.report
            per_class = report["test"]["per_class"]
            counts = per_class.get("train_count") or report["data"]["train"]
            return [str(n) for n in per_class["name"]], [int(c) for c in counts]
    return None


def per_class_stats(group: Group) -> list[Stat]:
    """Per class: mean ± std of the test accuracy over the finished seeds."""
    values = [r.state.report["test"]["per_class"]["accuracy"] for r in group.finished]
    if not values:
        return []
    return [Stat.of(column) for column in zip(*values)]
