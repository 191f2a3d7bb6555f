"""A grid's results: every run's report gathered into tables, a CSV and plots.

    write_results(grid, root)  ->  root/results.md, root/results.csv,
                                   root/results_per_class.csv, root/plots/*.png

Everything is recomputed from the run folders (report.json, attempts.json) each time,
so it can be regenerated at any point, also while runs are missing. Per (variant,
method) each metric is the mean and the sample standard deviation (ddof 1) over the
finished seeds, with n, the number of seeds it is over; a run that is not finished is
never dropped silently - the tables say "2 of 3" and list it with its state. Shot-group
accuracies may be undefined for a run (no class in the group: None in the report); they
are averaged over the runs that have them, and a cell says "(n=k)" when that is fewer
than the finished seeds.

Time per run: "train s", the sum of the report's per-epoch seconds (training only), and
"wall s", what the runner measured for all its attempts at the run (start-up, data,
compilation and evaluation included; unknown for runs it did not start). The sklearn
row's wall time is its fit and prediction.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlc_jax.data.prepare import SPLIT_FILE
from tlc_jax.experiments.aggregate import (METRICS, SELECTION, TAIL_CLASSES, Group, Run,
                                           Stat, class_columns, collect, groups,
                                           per_class_stats)
from tlc_jax.experiments.grid import BASELINE_METHOD, Grid, flag_value
from tlc_jax.experiments.plots import write_plots
from tlc_jax.experiments.runs import split_digest
from tlc_jax.fileio import atomic_file

LOSS_HEADINGS = {"ce": "CE", "focal": "Focal", "cot": "COT"}
MAX_TABLE_CLASSES = 30  # Wider per-class tables go to results_per_class.csv only.
RESULTS_MD, RESULTS_CSV = "results.md", "results.csv"
PER_CLASS_CSV = "results_per_class.csv"


# --- numbers as text -------------------------------------------------------------------

def fmt_stat(stat: Stat, finished: int, decimals: int = 3) -> str:
    """Mean ± std as "0.912 ± 0.011"; "n/a" without values; "(n=k)" when fewer values
    than finished seeds."""
    if stat.mean is None:
        return "n/a"
    text = f"{stat.mean:.{decimals}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{decimals}f}"
    if stat.n < finished:
        text += f" (n={stat.n})"
    return text


def fmt_seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           text_columns: int = 1) -> list[str]:
    """A Markdown table: the first `text_columns` columns left-aligned, the rest
    (numbers) right-aligned."""
    align = [":---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _overrides_text(fields: dict[str, Any]) -> str:
    """`field=value`, ... as the runs' command lines set them."""
    return ", ".join(f"`{k}={flag_value(v)}`" for k, v in fields.items())


def _cell_text(value: Any) -> str:
    """Markdown-safe text for a table cell."""
    return str(value).replace("|", "\\|")


# --- tables ----------------------------------------------------------------------------

def summary_table(variant_groups: list[Group]) -> list[str]:
    """Per method: n of the seeds, every metric's mean ± std, seconds per run."""
    header = (["Method", "n"] + [heading for _, heading in METRICS]
              + ["Train s / run", "Wall s / run"])
    rows = []
    for g in variant_groups:
        done = len(g.finished)
        rows.append([g.method, f"{done} of {len(g.runs)}"]
                    + [fmt_stat(g.stat(key), done) for key, _ in METRICS]
                    + [fmt_seconds(g.seconds("train").mean),
                       fmt_seconds(g.seconds("wall").mean)])
    return _table(header, rows)


def active_methods(grid: Grid, variant: str) -> list[str]:
    """The methods whose resolved config samples actively (TLC and its variants)."""
    first = {c.method: c for c in reversed(grid.cells()) if c.variant == variant}
    return [m for m in grid.methods
            if grid.config(first[m]).sampling.composition == "active"]


def contrast_choice_detail(variant_groups: list[Group], candidates: Sequence[str]
                           ) -> tuple[str, str, list[int]] | None:
    """Among `candidates`, the method with the highest mean contrast balanced accuracy
    over the seeds every candidate has finished with that figure (contrast macro-F1
    where they share no such seed: runs recorded before it existed): returns (method,
    the figure's key, the seeds compared), None without a common seed. Means over
    different seeds are not compared (a seed's split and initialisation move every
    figure); no test figure is read."""
    pool = [g for g in variant_groups if g.method in candidates and g.finished]
    if not pool:
        return None
    for key, _ in reversed(SELECTION):  # Balanced accuracy first, then macro-F1.
        per = [{r.cell.seed: r.metrics[key] for r in g.finished
                if r.metrics.get(key) is not None} for g in pool]
        common = sorted(set.intersection(*(set(p) for p in per)))
        if common:
            scored = [(float(np.mean([p[s] for s in common])), g.method)
                      for p, g in zip(per, pool)]
            return max(scored)[1], key, common
    return None


def contrast_choice(variant_groups: list[Group], candidates: Sequence[str]) -> str | None:
    """The method `contrast_choice_detail` chooses (None without a common seed)."""
    detail = contrast_choice_detail(variant_groups, candidates)
    return detail[0] if detail else None


def selection_table(grid: Grid, variant: str, variant_groups: list[Group]) -> list[str]:
    """Per method its contrast-set figures, and which active-sampling method they
    choose: the evidence a choice between TLC variants may use."""
    header = ["Method", "n"] + [heading for _, heading in SELECTION]
    rows = [[g.method, f"{len(g.finished)} of {len(g.runs)}"]
            + [fmt_stat(g.stat(key), len(g.finished)) for key, _ in SELECTION]
            for g in variant_groups if g.method != BASELINE_METHOD]
    lines = _table(header, rows)
    active = active_methods(grid, variant)
    detail = contrast_choice_detail(variant_groups, active)
    if detail is not None:
        chosen, key, seeds = detail
        figure = dict(SELECTION)[key].lower().replace("contrast ", "contrast-set ")
        lines += ["", f"Chosen on the contrast set among the active-sampling methods "
                      f"({', '.join(active)}): **{chosen}** (highest mean {figure} "
                      f"over the seeds all of them have: "
                      f"{', '.join(str(s) for s in seeds)})."]
    return lines


def method_losses(grid: Grid, variant: str) -> dict[str, str]:
    """Method -> the loss its resolved config trains with (its `train.loss` override,
    else the config's)."""
    first = {c.method: c for c in reversed(grid.cells()) if c.variant == variant}
    return {m: str(grid.config(first[m]).train.loss) for m in grid.methods}


def loss_rows(grid: Grid, losses: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """(row label, loss -> method): methods whose fields differ only in `train.loss`
    share a row, named after the one that does not set it (else the first)."""
    rows: list[tuple[tuple, str, dict[str, str]]] = []  # (other fields, label, cells)
    for method, fields in grid.methods.items():
        key = tuple(sorted((k, repr(v)) for k, v in fields.items() if k != "train.loss"))
        loss = losses[method]
        index = next((i for i, (k, _, cells) in enumerate(rows)
                      if k == key and loss not in cells), None)
        if index is None:
            rows.append((key, method, {}))
            index = len(rows) - 1
        key, label, cells = rows[index]
        cells[loss] = method
        rows[index] = (key, method if "train.loss" not in fields else label, cells)
    return [(label, cells) for _, label, cells in rows]


def loss_table(grid: Grid, variant: str, variant_groups: list[Group]) -> list[str]:
    """Paper style: methods as rows, losses (CE, focal, COT, then any other) as
    columns, balanced accuracy mean ± std in the cells; a cell names its method when
    that is not the row's, and says "k of n" while seeds are missing."""
    by_method = {g.method: g for g in variant_groups}
    losses = method_losses(grid, variant)
    columns = [l for l in LOSS_HEADINGS if l in losses.values()]
    columns += sorted(set(losses.values()) - set(columns))
    table = []
    for label, cells in loss_rows(grid, losses):
        line = [label]
        for loss in columns:
            group = by_method.get(cells.get(loss, ""))
            if group is None:
                line.append("-")
                continue
            done = len(group.finished)
            text = fmt_stat(group.stat("balanced_accuracy"), done)
            text += f" [{group.method}]" if group.method != label else ""
            text += f" ({done} of {len(group.runs)})" if done < len(group.runs) else ""
            line.append(text)
        table.append(line)
    return _table(["Method"] + [LOSS_HEADINGS.get(l, l) for l in columns], table)


def per_class_table(variant_groups: list[Group]) -> list[str]:
    """Methods as rows, classes as columns from the most to the least trained (TLC's
    Table 4): mean test accuracy over the finished seeds."""
    columns = class_columns(variant_groups)
    if columns is None:
        return ["No finished run yet."]
    names, counts = columns
    if len(names) > MAX_TABLE_CLASSES:
        return [f"{len(names)} classes: too many for a table; see {PER_CLASS_CSV}."]
    order = sorted(range(len(names)), key=lambda i: (-counts[i], i))
    rows = []
    for g in variant_groups:
        stats = per_class_stats(g)
        rows.append([g.method, f"{len(g.finished)} of {len(g.runs)}"]
                    + ([f"{stats[i].mean:.3f}" for i in order] if stats
                       else ["-"] * len(order)))
    header = ["Method", "n"] + [f"{_cell_text(names[i])} ({counts[i]})" for i in order]
    return _table(header, rows)


def runs_table(runs: list[Run]) -> list[str]:
    """One row per run: state, headline metrics and times."""
    rows = []
    for run in runs:
        m = run.metrics
        value = lambda key: "-" if m.get(key) is None else f"{m[key]:.4f}"
        rows.append([run.cell.id, run.state.state, value("accuracy"),
                     value("balanced_accuracy"), value("macro_f1"), value("tail_accuracy"),
                     fmt_seconds(run.train_seconds), fmt_seconds(run.wall_seconds)])
    return _table(["Run", "State", "Accuracy", "Balanced acc.", "Macro-F1",
                   f"Tail-{TAIL_CLASSES} acc.", "Train s", "Wall s"], rows,
                  text_columns=2)


def unfinished_table(runs: list[Run]) -> list[str]:
    rows = [[run.cell.id, run.state.state, _cell_text(run.state.detail)]
            for run in runs if not run.finished]
    if not rows:
        return ["None: every run finished."]
    return _table(["Run", "State", "Detail"], rows, text_columns=3)


def split_notes(runs: list[Run]) -> list[str]:
    """Runs whose data split differs from their (variant, seed)'s sklearn row."""
    def digest(run: Run) -> str | None:  # Its folder's split, else its record's.
        if run.state.stored is not None:
            return run.state.stored.get("split_sha256")
        return split_digest(run.folder)

    splits: dict[tuple[str, int], Any] = {}
    for run in runs:
        if run.cell.method == BASELINE_METHOD and run.finished:
            splits[(run.cell.variant, run.cell.seed)] = digest(run)
    notes = []
    for run in runs:
        key = (run.cell.variant, run.cell.seed)
        if run.cell.method == BASELINE_METHOD or not run.finished or key not in splits:
            continue
        if digest(run) != splits[key]:
            notes.append(f"- {run.cell.id} was trained on another data split than the "
                         f"sklearn row of its variant and seed (its method overrides "
                         f"data fields?): compare the two {SPLIT_FILE} files.")
    return notes


def markdown(grid: Grid, root: Path, runs: list[Run]) -> str:
    """results.md: per variant the summary, paper-style and per-class tables; then
    every run, and the runs not finished."""
    all_groups = groups(grid, runs)
    network = [r for r in runs if r.cell.method != BASELINE_METHOD]
    from_records = sum(r.finished and r.state.record is not None for r in runs)
    lines = [f"# Results: {grid.path.stem}", ""]
    if grid.description:
        lines += [grid.description.strip(), ""]
    lines += [
        f"Grid file `{grid.path}`, config `{_shown(grid.config_path)}`"
        + (f" with `{grid.config_args}`" if grid.config_args else "")
        + f", work directory `{root}`. {sum(r.finished for r in network)} of "
          f"{len(network)} training runs finished, seeds {list(grid.seeds)}. "
        + (f"Finished runs are recorded in `{_shown(grid.records)}` ({from_records} "
           f"of the runs here were read from there, not from the work directory). "
           if grid.records else "")
        + f"Regenerate with `python -m tlc_jax.experiments --grid={grid.path} "
          f"--workdir={root} --report_only`.", "",
        "Cells: mean ± sample standard deviation (ddof 1) over the finished seeds; "
        "n: finished seeds of the grid's. "
        f"Tail-{TAIL_CLASSES}: mean per-class accuracy of the {TAIL_CLASSES} classes "
        "with the fewest training images. Many / medium / few-shot: classes with > 100, "
        "20-100, < 20 training images (n/a: no such class; (n=k): defined in k runs). "
        "Train s: the epochs' training time; wall s: the runner's measure of the whole "
        f"run. {BASELINE_METHOD}: scikit-learn logistic regression, class-balanced, on "
        "raw pixels of the same training images, same test set.", ""]
    if grid.evaluated_from:
        pairs = "; ".join(f"{m} from {src}" for m, src in grid.evaluated_from.items())
        lines += ["Post-hoc methods evaluate the trained weights of the method they "
                  f"correct (same variant and seed: the same training) when that run "
                  f"has finished, instead of training again ({pairs}): their train s "
                  f"is that run's, their wall s the evaluation's.", ""]
    if grid.overrides:
        lines += [f"Every run: {_overrides_text(grid.overrides)}.", ""]
    for variant, args in grid.variants.items():
        vg = [g for g in all_groups if g.variant == variant]
        lines += [f"## Variant `{variant}`", ""]
        if args:
            lines += [f"Config arguments `{args}`.", ""]
        lines += ["Methods: " + "; ".join(f"{m} ({_overrides_text(f) or 'config as is'})"
                                          for m, f in grid.methods.items()) + ".", ""]
        lines += summary_table(vg) + [""]
        lines += ["### Balanced accuracy by loss (paper style)", ""]
        lines += loss_table(grid, variant, vg) + [""]
        lines += ["### Model selection: the contrast set (never the test set)", ""]
        lines += selection_table(grid, variant, vg) + [""]
        lines += ["### Per-class test accuracy (mean over seeds; header: class "
                  "(training images))", ""]
        lines += per_class_table(vg) + [""]
    lines += ["## Every run", ""] + runs_table(runs) + [""]
    lines += ["## Not finished", ""] + unfinished_table(runs) + [""]
    notes = split_notes(runs)
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- CSV -------------------------------------------------------------------------------

CSV_COLUMNS = (["row", "variant", "method", "seed", "state", "n", "n_expected"]
               + [key for key, _ in METRICS + SELECTION]
               + ["train_seconds", "wall_seconds", "folder"])


def csv_rows(grid: Grid, runs: list[Run]) -> list[dict[str, Any]]:
    """One "run" row per run (metrics blank unless finished), then per (variant,
    method) a "mean" and a "std" row over the finished seeds (n: their number)."""
    rows = []
    for run in runs:
        rows.append({"row": "run", "variant": run.cell.variant, "method": run.cell.method,
                     "seed": run.cell.seed, "state": run.state.state,
                     "n": int(run.finished), "n_expected": 1, **run.metrics,
                     "train_seconds": run.train_seconds, "wall_seconds": run.wall_seconds,
                     "folder": str(run.state.record or run.folder)})
    for g in groups(grid, runs):
        for kind in ("mean", "std"):
            row = {"row": kind, "variant": g.variant, "method": g.method, "seed": "",
                   "state": "", "n": len(g.finished), "n_expected": len(g.runs),
                   "folder": ""}
            for key, _ in METRICS + SELECTION:
                row[key] = getattr(g.stat(key), kind)
            for timing in ("train", "wall"):
                row[f"{timing}_seconds"] = getattr(g.seconds(timing), kind)
            rows.append(row)
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Atomically; None as an empty field, floats in full precision."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k))
                                 for k in columns})


def per_class_rows(runs: list[Run], grid: Grid) -> list[dict[str, Any]]:
    rows = []
    for g in groups(grid, runs):
        columns = class_columns([g])
        if columns is None:
            continue
        for i, (name, stat) in enumerate(zip(columns[0], per_class_stats(g))):
            rows.append({"variant": g.variant, "method": g.method, "class_index": i,
                         "class": name, "train_count": columns[1][i], "n": stat.n,
                         "mean_accuracy": stat.mean, "std_accuracy": stat.std})
    return rows


def write_results(grid: Grid, root: Path) -> list[Run]:
    """results.md, results.csv, results_per_class.csv and plots/ in `root`; returns
    the runs they were made from."""
    root = Path(root).absolute()
    runs = collect(grid, root)
    with atomic_file(root / RESULTS_MD) as tmp:
        tmp.write_text(markdown(grid, root, runs))
    write_csv(root / RESULTS_CSV, CSV_COLUMNS, csv_rows(grid, runs))
    write_csv(root / PER_CLASS_CSV, ["variant", "method", "class_index", "class",
                                     "train_count", "n", "mean_accuracy", "std_accuracy"],
              per_class_rows(runs, grid))
    write_plots(groups(grid, runs), root / "plots")
    return runs
