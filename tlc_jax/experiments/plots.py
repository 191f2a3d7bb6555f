"""A grid's figures, per variant: the methods' headline metrics and per-class accuracy.

    plots/<variant>_metrics.png     grouped bars, mean over seeds, std as error bars
    plots/<variant>_per_class.png   test accuracy per class (most to least trained),
                                    one line per method

Drawn with `matplotlib.figure.Figure` on the Agg canvas (no pyplot, nothing global),
and written atomically, like tlc_jax.report's figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tlc_jax.experiments.aggregate import Group, class_columns, per_class_stats
from tlc_jax.fileio import atomic_file

BAR_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."),
               ("macro_f1", "macro-F1"), ("worst_class_accuracy", "worst class"),
               ("tail_accuracy", "tail-3 acc."), ("few_shot_accuracy", "few-shot"))
MAX_NAMED_CLASSES = 30


def _figure(width: float, height: float):
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _save(figure: Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:  # No .png suffix on the temporary name.
        figure.savefig(tmp, format="png", dpi=110)
    return path


def metrics_figure(variant: str, groups: list[Group]) -> Figure:
    """Bars per metric, one per method with finished runs; std over seeds as error bars."""
    shown = [g for g in groups if g.finished]
    figure, ax = _figure(max(9.0, 0.4 * len(BAR_METRICS) * len(shown)), 4.5)
    width = 0.8 / max(len(shown), 1)
    x = np.arange(len(BAR_METRICS))
    for i, g in enumerate(shown):
        stats = [g.stat(key) for key, _ in BAR_METRICS]
        means = [np.nan if s.mean is None else s.mean for s in stats]
        stds = [0.0 if s.std is None else s.std for s in stats]
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, means, width, yerr=stds,
               capsize=2, label=f"{g.method} (n={len(g.finished)})")
    ax.set_xticks(x, [label for _, label in BAR_METRICS])
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("test, mean over seeds")
    ax.set_title(f"{variant}: methods (error bars: std over seeds)")
    if shown:
        figure.legend(fontsize=8, loc="outside right upper")
    ax.grid(axis="y", alpha=0.3)
    return figure


def per_class_figure(variant: str, groups: list[Group]) -> Figure | None:
    """Mean per-class test accuracy, classes from the most to the least trained."""
    columns = class_columns(groups)
    if columns is None:
        return None
    names, counts = columns
    order = sorted(range(len(names)), key=lambda i: (-counts[i], i))
    figure, ax = _figure(max(9.0, 0.45 * len(names)), 4.5)
    for g in groups:
        stats = per_class_stats(g)
        if stats:
            ax.plot(range(len(order)), [stats[i].mean for i in order], marker="o",
                    markersize=3, label=f"{g.method} (n={len(g.finished)})")
    if len(names) <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(len(order)), [f"{names[i]}\n{counts[i]}" for i in order],
                      rotation=90 if len(names) > 10 else 0, fontsize=7)
    ax.set_xlabel("class (training images), most to least trained")
    ax.set_ylabel("test accuracy, mean over seeds")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(f"{variant}: per-class accuracy")
    figure.legend(fontsize=8, loc="outside right upper")
    ax.grid(alpha=0.3)
    return figure


def write_plots(groups: list[Group], folder: Path) -> list[Path]:
    """Both figures for every variant with a finished run; returns the files written."""
    written = []
    for variant in dict.fromkeys(g.variant for g in groups):
        variant_groups = [g for g in groups if g.variant == variant]
        if not any(g.finished for g in variant_groups):
            continue
        written.append(_save(metrics_figure(variant, variant_groups),
                             folder / f"{variant}_metrics.png"))
        figure = per_class_figure(variant, variant_groups)
        if figure is not None:
            written.append(_save(figure, folder / f"{variant}_per_class.png"))
    return written
