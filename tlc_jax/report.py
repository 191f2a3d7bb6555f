"""A readable summary and plots of the trainer's `report.json`.

`report.json` is complete but hard to read: a Markdown summary puts the numbers a
long-tail paper reports (macro-F1, balanced / worst-class / shot-group accuracy) first,
and four PNG figures show what tables cannot: which classes are confused, how accuracy
follows the training count, how active sampling moved the quotas, and how training went.

Everything here is a pure function of the report dict, so it can be re-run on any old
`report.json`. Figures are drawn with `matplotlib.figure.Figure` on the Agg canvas,
never through pyplot: that works headless, leaves no figure open, and does not change
the backend of a caller's notebook. Every file is written atomically (`atomic_file`), so
a reader never sees half a PNG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import cm, colormaps, colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tlc_jax.fileio import atomic_file
from tlc_jax.metrics import FEW_SHOT, MANY_SHOT

# Above this many classes, axes and points carry no class names (they would overlap).
MAX_NAMED_CLASSES = 30
# Per-point labels and legends crowd sooner than axis ticks do.
MAX_LABELLED_POINTS = 20
MAX_LEGEND_ENTRIES = 20

_HEADLINE = (("Accuracy", "accuracy"), ("Macro-F1", "macro_f1"),
             ("Balanced accuracy", "balanced_accuracy"),
             ("Worst-class accuracy", "worst_class_accuracy"),
             ("Many-shot accuracy", "many_shot_accuracy"),
             ("Medium-shot accuracy", "medium_shot_accuracy"),
             ("Few-shot accuracy", "few_shot_accuracy"))


def _fmt(value: float | None, decimals: int = 4) -> str:
    """Fixed decimals, so summaries diff cleanly; "n/a" for an empty shot group."""
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _per_class(report: dict) -> dict[str, list]:
    """Per-class columns; `train_count` falls back to the data split when absent."""
    columns = dict(report["test"]["per_class"])
    if "train_count" not in columns:
        columns["train_count"] = list(report.get("data", {}).get(
            "train", [0] * len(columns["name"])))
    return columns


def _history(report: dict) -> dict[str, list]:
    history = report.get("history") or {}
    return {key: list(history.get(key) or []) for key in ("quotas", "contrast_f1", "epochs")}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; the first column left-aligned, numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _vector(values: Sequence[Any]) -> str:
    return "`[" + ", ".join(str(v) for v in values) + "]`"


def markdown_summary(report: dict) -> str:
    """The report as Markdown: headline metrics, per-class table, data, sampling history.

    Per-class rows run from the most to the least trained class (ties by class index),
    which is the order in which long-tail failures show up.
    """
    test, config = report["test"], report.get("config") or {}
    columns, history = _per_class(report), _history(report)
    num_classes = len(columns["name"])
    data_name = (config.get("data") or {}).get("name", "?")
    model_name = (config.get("model") or {}).get("name", "?")

    lines = [f"# Test report: {data_name}, {model_name}", "",
             f"{test.get('num_examples', '?')} test images, {num_classes} classes.", "",
             "## Headline metrics", ""]
    lines += _table(["Metric", "Value"],
                    [[label, _fmt(test.get(key))] for label, key in _HEADLINE])
    lines += ["", f"Shot groups by training images per class: many-shot > {MANY_SHOT}, "
                  f"medium-shot {FEW_SHOT}-{MANY_SHOT}, few-shot < {FEW_SHOT} (n/a: no "
                  f"class in the group). Balanced accuracy is the mean per-class "
                  f"accuracy (recall); worst-class accuracy its minimum."]

    final_quota = history["quotas"][-1] if history["quotas"] else None
    header = ["Class", "Train", "Test", "Accuracy", "Precision", "Recall", "F1"]
    header += ["Final quota"] if final_quota is not None else []
    order = sorted(range(num_classes), key=lambda i: (-columns["train_count"][i], i))
    rows = []
    for i in order:
        row = [str(columns["name"][i]), str(columns["train_count"][i]),
               str(columns["support"][i])]
        row += [_fmt(columns[key][i]) for key in ("accuracy", "precision", "recall", "f1")]
        row += [str(final_quota[i])] if final_quota is not None else []
        rows.append(row)
    lines += ["", "## Per class (most to least training images)", ""]
    lines += _table(header, rows)

    lines += ["", "## Data", ""]
    split_rows = []
    for split in ("train", "contrast", "test"):
        counts = (report.get("data") or {}).get(split)
        if not counts:
            continue
        top, bottom = max(counts), min(counts)
        ratio = f"{top / bottom:.2f}" if bottom > 0 else "inf"
        split_rows.append([split, str(sum(counts)), str(top), str(bottom), ratio])
    lines += _table(["Split", "Images", "Max / class", "Min / class", "Imbalance"],
                    split_rows)

    lines += ["", "## Active sampling", ""]
    if history["quotas"]:
        quotas = history["quotas"]
        lines += [f"- Quota updates: {len(quotas)} (images per class per batch, "
                  f"batch of {sum(quotas[-1])})",
                  f"- First quotas: {_vector(quotas[0])}",
                  f"- Last quotas: {_vector(quotas[-1])}"]
        if history["contrast_f1"]:
            f1 = history["contrast_f1"]
            lines += [f"- Contrast macro-F1: {_fmt(float(np.mean(f1[0])))} at the first "
                      f"update, {_fmt(float(np.mean(f1[-1])))} at the last"]
    else:
        lines += ["No quota updates (active sampling off or not yet run)."]

    if history["epochs"]:
        lines += ["", "## Training", ""]
        rows = []
        for phase in dict.fromkeys(e["phase"] for e in history["epochs"]):
            epochs = [e for e in history["epochs"] if e["phase"] == phase]
            rows.append([phase, str(len(epochs)), _fmt(epochs[-1]["loss"]),
                         _fmt(epochs[-1]["train_accuracy"]),
                         f"{sum(e.get('seconds', 0.0) for e in epochs):.1f}"])
        lines += _table(["Phase", "Epochs", "Final loss", "Final train accuracy",
                         "Seconds"], rows)
    return "\n".join(lines) + "\n"


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A pyplot-free figure on an Agg canvas: nothing global to close or to leak."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def _save(figure: Figure, path: Path) -> Path:
    # The temporary name has no .png suffix, so the format is given explicitly.
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return path


def _confusion_figure(report: dict) -> Figure:
    """Row-normalised, so the diagonal reads as per-class accuracy whatever the support."""
    confusion = np.asarray(report["test"]["confusion_matrix"], dtype=np.float64)
    names = [str(n) for n in _per_class(report)["name"]]
    support = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, support, out=np.zeros_like(confusion),
                           where=support > 0)
    n = len(confusion)
    longest = max((len(name) for name in names), default=1)
    side = float(np.clip(2.5 + 0.3 * n, 5.0, 12.0))
    margin = 0.08 * min(longest, 30) if n <= MAX_NAMED_CLASSES else 0.0  # For the names.
    figure, (ax,) = _new_figure(side + 1.0 + margin, side + margin)
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Test confusion matrix (row-normalised)")
    if n <= MAX_NAMED_CLASSES:
        # Names upright only while short enough to sit side by side; long names are
        # cut to 30 characters.
        shown = [name if len(name) <= 30 else name[:29] + "…" for name in names]
        upright = n * longest <= 40
        ax.set_xticks(range(n), shown, rotation=0 if upright else 90)
        ax.set_yticks(range(n), shown)
        if n <= 12:  # Cell values only while they fit in the cells.
            for (i, j), value in np.ndenumerate(normalised):
                if value >= 0.005:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if value > 0.5 else "black")
    return figure


def _accuracy_figure(report: dict) -> Figure:
    """Accuracy against training count: the long-tail trend at a glance."""
    columns = _per_class(report)
    counts = np.asarray(columns["train_count"], dtype=np.float64)
    accuracy = np.asarray(columns["accuracy"], dtype=np.float64)
    figure, (ax,) = _new_figure(7.0, 4.5)
    ax.scatter(counts, accuracy, s=25 if len(counts) > MAX_LABELLED_POINTS else 40,
               color="tab:blue", zorder=3)
    ax.set_xscale("log", nonpositive="mask")
    # Plain 5, 10, 20, 50, 100 ... ticks read better than powers of ten.
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    # Shot-group bounds of the headline table: few < FEW_SHOT <= medium <= MANY_SHOT < many.
    for boundary in (FEW_SHOT, MANY_SHOT):
        ax.axvline(boundary, color="tab:red", linestyle=":", linewidth=1)
        ax.text(boundary, 0.35, f" {boundary} images ", transform=ax.get_xaxis_transform(),
                rotation=90, ha="right", va="center", fontsize=7, color="tab:red")
    if len(counts) <= MAX_LABELLED_POINTS:
        for name, x, y in zip(columns["name"], counts, accuracy):
            ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    balanced = report["test"].get("balanced_accuracy")
    if balanced is not None:
        ax.axhline(balanced, color="gray", linestyle="--", linewidth=1,
                   label=f"balanced accuracy {balanced:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("training images in the class (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Per-class test accuracy vs training count")
    ax.grid(True, which="both", alpha=0.3)
    return figure


def _class_colours(num_classes: int) -> list:
    cmap = colormaps["tab10" if num_classes <= 10 else
                                "tab20" if num_classes <= 20 else "viridis"]
    if num_classes <= 20:
        return [cmap(i) for i in range(num_classes)]
    return [cmap(i / max(num_classes - 1, 1)) for i in range(num_classes)]


MAX_LINE_CLASSES = 10  # More classes: the quota / F1 history as heat maps.


def _quota_heatmaps(report: dict) -> Figure:
    """Quotas and contrast F1 as class x update heat maps, classes from the most to the
    least trained: readable for any number of classes."""
    history, columns = _history(report), _per_class(report)
    quotas = np.asarray(history["quotas"], dtype=np.float64)
    f1 = np.asarray(history["contrast_f1"], dtype=np.float64)
    order = sorted(range(quotas.shape[1]), key=lambda i: (-columns["train_count"][i], i))
    height = float(np.clip(2.0 + 0.18 * len(order), 4.0, 14.0))
    figure, (ax_q, ax_f) = _new_figure(12.0, height, ncols=2)
    panels = ((ax_q, quotas, "Per-class quota (images per batch)", "viridis", None),
              (ax_f, f1, "Per-class F1 on the contrast set", "magma", (0.0, 1.0)))
    for ax, values, title, cmap, limits in panels:
        if not len(values):
            ax.set_axis_off()
            continue
        vmin, vmax = limits or (values.min(), values.max())
        image = ax.imshow(values[:, order].T, aspect="auto", cmap=cmap, vmin=vmin,
                          vmax=vmax, interpolation="nearest",
                          extent=(0.5, len(values) + 0.5, len(order) - 0.5, -0.5))
        figure.colorbar(image, ax=ax, shrink=0.9)
        ax.set_title(title)
        ax.set_xlabel("quota update")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if len(order) <= MAX_NAMED_CLASSES:
            ax.set_yticks(range(len(order)), [f"{columns['name'][i]} "
                                              f"({columns['train_count'][i]})"
                                              for i in order], fontsize=7)
        else:
            ax.set_ylabel("class, most to least trained")
    return figure


def _quota_figure(report: dict) -> Figure:
    """Quotas next to the contrast F1 that drove them (Eq. 4: low F1, more images):
    one line per class up to MAX_LINE_CLASSES classes, heat maps beyond."""
    history, columns = _history(report), _per_class(report)
    quotas = np.asarray(history["quotas"], dtype=np.float64)
    f1 = np.asarray(history["contrast_f1"], dtype=np.float64)
    num_classes = quotas.shape[1]
    if num_classes > MAX_LINE_CLASSES:
        return _quota_heatmaps(report)
    colours = _class_colours(num_classes)
    figure, (ax_q, ax_f) = _new_figure(12.0, 4.5, ncols=2)
    few = len(quotas) <= 25  # Markers only while they stay apart.
    for c in range(num_classes):
        style = dict(color=colours[c], linewidth=1.2 if num_classes <= 20 else 0.7,
                     marker="o" if few else None, markersize=3,
                     label=f"{columns['name'][c]} ({columns['train_count'][c]})")
        ax_q.plot(np.arange(1, len(quotas) + 1), quotas[:, c], **style)
        if len(f1):
            ax_f.plot(np.arange(1, len(f1) + 1), f1[:, c], **style)
    ax_q.set_title("Per-class quota (images per batch)")
    ax_q.set_ylabel("quota")
    ax_f.set_title("Per-class F1 on the contrast set")
    ax_f.set_ylabel("F1")
    ax_f.set_ylim(-0.03, 1.03)
    for ax in (ax_q, ax_f):
        ax.set_xlabel("quota update")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_q.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if num_classes > MAX_LEGEND_ENTRIES:  # Too many for a legend: a colour key instead.
        key = cm.ScalarMappable(colors.Normalize(0, num_classes - 1), cmap="viridis")
        figure.colorbar(key, ax=ax_f, label="class index")
    else:
        ax_f.legend(title="class (train n)", fontsize=7, title_fontsize=8, loc="center left",
                    bbox_to_anchor=(1.01, 0.5), ncols=1 if num_classes <= 10 else 2)
    return figure


def _training_figure(report: dict) -> Figure:
    """Per epoch (all phases in order, one colour per phase): the mean training loss
    and accuracy over the epoch's steps, and the contrast set's macro-F1 after it
    (dashed) - the figure the best checkpoint is chosen by."""
    epochs = _history(report)["epochs"]
    figure, (ax_loss, ax_acc) = _new_figure(11.0, 4.0, ncols=2)
    step = np.arange(1, len(epochs) + 1)
    phases = list(dict.fromkeys(e["phase"] for e in epochs))
    colours = {"warmup": "tab:orange", "finetune": "tab:blue", "crt": "tab:green"}
    for phase in phases:
        index = np.array([i for i, e in enumerate(epochs) if e["phase"] == phase])
        style = dict(color=colours.get(phase), marker="o", markersize=3, label=phase)
        ax_loss.plot(step[index], [epochs[i]["loss"] for i in index], **style)
        ax_acc.plot(step[index], [epochs[i]["train_accuracy"] for i in index], **style)
        f1 = [epochs[i].get("contrast_macro_f1") for i in index]
        if all(v is not None for v in f1):
            ax_acc.plot(step[index], f1, **{**style, "linestyle": "--", "marker": "s",
                                            "label": f"{phase}: contrast macro-F1"})
    boundaries = [i + 0.5 for i in range(1, len(epochs))
                  if epochs[i]["phase"] != epochs[i - 1]["phase"]]
    for ax in (ax_loss, ax_acc):
        for x in boundaries:
            ax.axvline(x, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch (all phases, in order)")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    ax_loss.set_ylabel("training loss (epoch mean)")
    ax_loss.set_title("Training loss")
    ax_acc.set_ylabel("accuracy / macro-F1")
    ax_acc.set_ylim(-0.03, 1.03)
    ax_acc.set_title("Training accuracy (epoch mean) and contrast macro-F1")
    return figure


def write_plots(report: dict, directory: str | os.PathLike) -> list[Path]:
    """Writes the figures as PNGs in `directory`; returns the paths written.

    `quotas.png` needs a quota history and `training_curves.png` an epoch history; when
    one is missing its file is not written, and a stale one from an earlier run in the
    same folder is removed so it cannot be mistaken for this run's.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    history = _history(report)
    figures = {"confusion_matrix.png": _confusion_figure,
               "per_class_accuracy.png": _accuracy_figure,
               "quotas.png": _quota_figure if history["quotas"] else None,
               "training_curves.png": _training_figure if history["epochs"] else None}
    written = []
    for name, draw in figures.items():
        if draw is None:
            (directory / name).unlink(missing_ok=True)
            continue
        written.append(_save(draw(report), directory / name))
    return written


def write_report_files(report: dict, workdir: str | os.PathLike) -> None:
    """Writes `summary.md` in `workdir` and the figures in `workdir/plots/`."""
    workdir = Path(workdir)
    with atomic_file(workdir / "summary.md") as tmp:
        tmp.write_text(markdown_summary(report), encoding="utf-8")
    write_plots(report, workdir / "plots")
