"""The Markdown summary and the PNG figures drawn from a trainer report."""

import copy

import matplotlib.image
import numpy as np
import pytest

from tlc_jax import metrics, report

NAMES = ["cat", "ant", "dog", "bee", "eel"]
TRAIN = [30, 90, 5, 60, 12]  # No class above 100 images: the many-shot group is empty.
# 16 test images per class; 65 of 80 right, so accuracy is 0.8125 exactly.
CONFUSION = [[16, 0, 0, 0, 0],
             [2, 12, 1, 1, 0],
             [0, 1, 14, 0, 1],
             [3, 2, 0, 10, 1],
             [0, 0, 2, 1, 13]]
QUOTAS = [[4, 4, 4, 4, 4], [2, 6, 3, 5, 4], [1, 7, 2, 6, 4]]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {"confusion_matrix.png", "per_class_accuracy.png", "quotas.png",
             "training_curves.png"}


def make_report(confusion=CONFUSION, train=TRAIN, names=NAMES, quotas=QUOTAS, epochs=None):
    """A report as the trainer writes it, from `classification_report` itself."""
    confusion = np.asarray(confusion)
    num_classes = len(confusion)
    rng = np.random.default_rng(0)
    if epochs is None:
        epochs = [{"phase": phase, "epoch": e, "loss": loss, "train_accuracy": acc,
                   "seconds": 1.5}
                  for phase, e, loss, acc in [("warmup", 1, 2.0, 0.3), ("warmup", 2, 1.5, 0.5),
                                              ("finetune", 1, 1.0, 0.7),
                                              ("finetune", 2, 0.5, 0.9)]]
    return {
        "test": metrics.classification_report(confusion, train, names),
        "data": {"train": list(train), "contrast": [max(t // 5, 2) for t in train],
                 "test": confusion.sum(axis=1).tolist()},
        "history": {"quotas": [list(q) for q in quotas],
                    "contrast_f1": [np.round(rng.uniform(size=num_classes), 4).tolist()
                                    for _ in quotas],
                    "epochs": epochs},
        "config": {"data": {"name": "synthetic"}, "model": {"name": "densenet_bc"}},
    }


def table_rows(markdown, heading):
    """The cells of the table under a `## heading`, header and rule excluded."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_headline_metrics_fixed_decimals_and_na_for_empty_groups():
    r = make_report()
    md = report.markdown_summary(r)
    headline = dict(map(tuple, table_rows(md, "Headline metrics")))
    assert headline["Accuracy"] == "0.8125"
    assert headline["Worst-class accuracy"] == "0.6250"  # 10 of 16 for "bee".
    assert headline["Balanced accuracy"] == "0.8125"  # Equal supports.
    assert headline["Macro-F1"] == f"{r['test']['macro_f1']:.4f}"
    assert headline["Many-shot accuracy"] == "n/a"
    assert headline["Medium-shot accuracy"] == f"{(12 / 16 + 16 / 16 + 10 / 16) / 3:.4f}"
    assert headline["Few-shot accuracy"] == f"{(14 / 16 + 13 / 16) / 2:.4f}"
    assert "80 test images, 5 classes" in md
    assert md == report.markdown_summary(copy.deepcopy(r))  # Deterministic.


def test_per_class_rows_sorted_by_training_count_with_final_quota():
    md = report.markdown_summary(make_report())
    rows = table_rows(md, "Per class")
    assert [row[0] for row in rows] == ["ant", "bee", "cat", "eel", "dog"]
    assert [int(row[1]) for row in rows] == sorted(TRAIN, reverse=True)
    # ant: 12 of 16 right; predicted "ant" 15 times, 12 of them right; final quota 7.
    precision, recall = 12 / 15, 12 / 16
    f1 = 2 * precision * recall / (precision + recall)
    assert rows[0] == ["ant", "90", "16", "0.7500", f"{precision:.4f}", "0.7500",
                       f"{f1:.4f}", "7"]


def test_data_and_history_sections():
    md = report.markdown_summary(make_report())
    assert table_rows(md, "Data")[0] == ["train", "197", "90", "5", "18.00"]
    assert "Quota updates: 3" in md
    assert "First quotas: `[4, 4, 4, 4, 4]`" in md
    assert "Last quotas: `[1, 7, 2, 6, 4]`" in md
    training = table_rows(md, "Training")
    assert [row[:4] for row in training] == [["warmup", "2", "1.5000", "0.5000"],
                                             ["finetune", "2", "0.5000", "0.9000"]]


def test_summary_without_history_or_train_counts():
    r = make_report(quotas=[], epochs=[])
    del r["history"]
    # An older report: no train counts in the per-class table, no shot groups.
    del r["test"]["per_class"]["train_count"]
    for group in ("many", "medium", "few"):
        del r["test"][f"{group}_shot_accuracy"]
    md = report.markdown_summary(r)
    assert "Final quota" not in md
    assert "No quota updates" in md
    assert dict(map(tuple, table_rows(md, "Headline metrics")))["Few-shot accuracy"] == "n/a"
    assert [row[0] for row in table_rows(md, "Per class")][0] == "ant"  # From data.train.


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), path
    assert image.shape[0] > 200 and image.shape[1] > 200, path
    assert image.std() > 0.01, path  # Not a blank canvas.


def no_temporary_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or "tmp" in p.name]


def test_write_report_files(tmp_path):
    import matplotlib.pyplot as plt

    r = make_report()
    figures_before = plt.get_fignums()
    report.write_report_files(r, tmp_path)
    assert (tmp_path / "summary.md").read_text() == report.markdown_summary(r)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == ALL_PLOTS
    for name in ALL_PLOTS:
        check_png(tmp_path / "plots" / name)
    assert no_temporary_files(tmp_path) == []
    assert plt.get_fignums() == figures_before  # No pyplot figure left open.


def test_without_history_no_quota_plot_and_stale_one_removed(tmp_path):
    written = report.write_plots(make_report(), tmp_path)
    assert [p.name for p in written] == ["confusion_matrix.png", "per_class_accuracy.png",
                                         "quotas.png", "training_curves.png"]
    r = make_report(quotas=[])
    del r["history"]["contrast_f1"]
    written = report.write_plots(r, tmp_path)
    assert {p.name for p in written} == ALL_PLOTS - {"quotas.png"}
    assert {p.name for p in tmp_path.iterdir()} == ALL_PLOTS - {"quotas.png"}
    for path in written:
        check_png(path)
    assert no_temporary_files(tmp_path) == []


def test_report_without_any_history(tmp_path):
    r = make_report()
    del r["history"]
    written = report.write_plots(r, tmp_path)
    assert {p.name for p in written} == {"confusion_matrix.png", "per_class_accuracy.png"}


@pytest.mark.parametrize("num_classes", [100])
def test_many_classes_without_labels(tmp_path, num_classes):
    rng = np.random.default_rng(1)
    confusion = rng.integers(0, 3, size=(num_classes, num_classes))
    confusion[np.diag_indices(num_classes)] += 20
    train = np.round(500 * 0.01 ** (np.arange(num_classes) / (num_classes - 1))).astype(int)
    quotas = rng.integers(1, 4, size=(4, num_classes)).tolist()
    r = make_report(confusion, train.tolist(), [f"c{i}" for i in range(num_classes)], quotas)
    written = report.write_plots(r, tmp_path)
    assert {p.name for p in written} == ALL_PLOTS
    for path in written:
        check_png(path)
    ax = report._confusion_figure(r).axes[0]
    assert not any(label.get_text().startswith("c") for label in ax.get_xticklabels())
    assert len(table_rows(report.markdown_summary(r), "Per class")) == num_classes


def test_summary_defines_the_shot_groups():
    text = report.markdown_summary(make_report())
    assert (f"many-shot > {metrics.MANY_SHOT}, medium-shot {metrics.FEW_SHOT}-"
            f"{metrics.MANY_SHOT}, few-shot < {metrics.FEW_SHOT}") in text


def test_quota_history_of_many_classes_is_a_heat_map_in_training_order():
    """Beyond 10 classes, lines would be a tangle: class x update images, the most
    trained class on top, named while the names fit."""
    num_classes = 25
    rng = np.random.default_rng(2)
    confusion = np.diag(np.full(num_classes, 10)) + rng.integers(0, 2, (num_classes,) * 2)
    train = rng.permutation(np.arange(10, 10 + 10 * num_classes, 10)).tolist()
    quotas = rng.integers(1, 5, size=(6, num_classes)).tolist()
    r = make_report(confusion, train, [f"class{i}" for i in range(num_classes)], quotas)
    figure = report._quota_figure(r)
    quota_ax = figure.axes[0]
    image = quota_ax.get_images()[0].get_array()
    order = np.argsort(-np.asarray(train), kind="stable")
    np.testing.assert_array_equal(image, np.asarray(quotas)[:, order].T)
    labels = [t.get_text() for t in quota_ax.get_yticklabels()]
    assert labels[0] == f"class{order[0]} ({max(train)})"
    assert len(report._quota_figure(make_report()).axes[0].get_lines()) == 5  # Lines.


def test_training_curves_show_epoch_means_and_contrast_macro_f1():
    epochs = [{"phase": "finetune", "epoch": e, "loss": 1.0 / e, "train_accuracy": 0.5,
               "contrast_macro_f1": 0.1 * e, "seconds": 1.0} for e in (1, 2, 3)]
    figure = report._training_figure(make_report(epochs=epochs))
    acc_ax = figure.axes[1]
    curves = {line.get_label(): line.get_ydata().tolist() for line in acc_ax.get_lines()}
    assert curves["finetune: contrast macro-F1"] == pytest.approx([0.1, 0.2, 0.3])
    assert "epoch mean" in acc_ax.get_title()


def test_long_class_names_are_turned_and_cut_on_the_confusion_matrix():
    names = ["a very long class name indeed, longer than thirty characters", "b",
             "c", "d", "e"]
    ax = report._confusion_figure(make_report(names=names)).axes[0]
    labels = ax.get_xticklabels()
    assert all(label.get_rotation() == 90 for label in labels)
    assert labels[0].get_text() == names[0][:29] + "…"
    short = report._confusion_figure(make_report()).axes[0]
    assert all(label.get_rotation() == 0 for label in short.get_xticklabels())
