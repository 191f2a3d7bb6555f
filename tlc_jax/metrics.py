"""Evaluation metrics: the confusion matrix (numpy, and accumulated on device inside
jit), per-class precision / recall / F1 from it (Eq. 3 of TLC), and the test report.

`classification_report` gives the long-tail literature's metrics: overall accuracy, per-class
accuracy / precision / recall / F1, macro-F1, balanced accuracy, worst-class accuracy
and many / medium / few-shot accuracy (classes with > 100, 20-100, < 20 training images;
Kang et al. 2020).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # Only numpy at run time: samplers ported elsewhere import this.
    import jax

MANY_SHOT, FEW_SHOT = 100, 20  # > 100 training images: many; < 20: few.


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """C[i, j] = number of examples of class i predicted as j (int64, C x C)."""
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape[0]} "
                         f"vs {predictions.shape[0]}.")
    for name, values in (("labels", labels), ("predictions", predictions)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(f"{name} outside [0, {num_classes}): {np.unique(bad)[:10]}.")
    flat = labels.astype(np.int64) * num_classes + predictions
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """Per-class precision, recall and F1 (Eq. 3) from a confusion matrix.

    Undefined values (a class never predicted, or absent) are 0, as scikit-learn's
    `zero_division=0`. F1 = 2 TP / (2 TP + FP + FN), which equals the harmonic mean of
    precision and recall wherever that is defined.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    return ratio(tp, predicted), ratio(tp, actual), ratio(2 * tp, predicted + actual)


def balanced_confusion(confusion: np.ndarray) -> np.ndarray:
    """The confusion matrix re-weighted to a class-balanced prior: each true class's row
    scaled to the mean row total (float). Recall is unchanged; precision and F1 become
    what a test set with equally many images per class would give, if each class's
    error rates held. Empty rows stay empty."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    present = totals[:, 0] > 0
    target = totals[present].mean() if present.any() else 0.0
    return np.divide(confusion * target, totals, out=np.zeros_like(confusion),
                     where=totals > 0)


def accumulate_confusion(confusion: jax.Array, labels: jax.Array,
                         predictions: jax.Array, valid: jax.Array) -> jax.Array:
    """Adds a batch to a (C, C) confusion matrix; `valid` masks padding examples."""
    return confusion.at[labels, predictions].add(valid.astype(confusion.dtype))


def classification_report(confusion: np.ndarray, train_counts: Sequence[int] | None = None,
                          class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every metric of the test report, as plain Python numbers and lists."""
    confusion = np.asarray(confusion, dtype=np.int64)
    precision, recall, f1 = precision_recall_f1(confusion)
    support = confusion.sum(axis=1)
    present = support > 0
    report: dict[str, Any] = {
        "num_examples": int(confusion.sum()),
        "accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "macro_f1": float(f1.mean()),
        # Balanced accuracy and the worst class ignore classes absent from the set.
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "worst_class_accuracy": float(recall[present].min()) if present.any() else 0.0,
        "per_class": {
            "name": list(class_names) if class_names is not None else
                    [str(i) for i in range(len(confusion))],
            "support": support.tolist(),
            "accuracy": recall.tolist(),  # Per-class accuracy is the class's recall.
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
        },
        "confusion_matrix": confusion.tolist(),
    }
    if train_counts is not None:
        counts = np.asarray(train_counts)
        groups = {"many_shot": counts > MANY_SHOT,
                  "medium_shot": (counts >= FEW_SHOT) & (counts <= MANY_SHOT),
                  "few_shot": counts < FEW_SHOT}
        for name, members in groups.items():
            members = members & present
            # Mean per-class accuracy of the group; None when the group is empty.
            report[f"{name}_accuracy"] = (float(recall[members].mean())
                                          if members.any() else None)
        report["per_class"]["train_count"] = counts.tolist()
    return report
