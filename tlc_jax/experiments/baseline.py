"""The scikit-learn sanity row: class-balanced logistic regression on raw pixels.

For every (variant, seed) of a grid, `LogisticRegression(class_weight="balanced")` is
trained on the same training images as the grid's networks (pixels scaled to [0, 1],
flattened; the contrast images are not used, as the networks only use them to steer
sampling) and evaluated on the same test set with the trainer's metrics
(`tlc_jax.metrics.classification_report`). The split is rebuilt with
`tlc_jax.data.prepare.prepare` from the data config and seed of the variant's first
method, which is how the trainer builds it, and is recorded in the row's folder
(data_split.json) like a run's. If a network run of the same (variant, seed) used
another split - a method that overrides data fields - results.md says so.

The row is stored like a run, in <root>/<variant>/sklearn-logreg-balanced/seed<S>/
(report.json, data_split.json, log.txt, attempts.json), so it is computed once and
aggregated with the runs.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tlc_jax import metrics
from tlc_jax.experiments.grid import BASELINE_METHOD, Cell, Grid, config_differences
from tlc_jax.experiments.runs import REPORT_FILE
from tlc_jax.fileio import write_json_atomic

# lbfgs on [0, 1] pixels: Fashion-MNIST-LT seed 0 converged in 343 iterations at ratio
# 100 and 480 at ratio 10 (81 s and 206 s on 2 CPU cores, 2026-11-30); 2,000 leaves
# room for larger sets, and the report says whether it converged.
MAX_ITER = 2000
ESTIMATOR = {"estimator": "sklearn.linear_model.LogisticRegression", "solver": "lbfgs",
             "class_weight": "balanced", "max_iter": MAX_ITER,
             "features": "raw pixels / 255, flattened"}


def baseline_cells(grid: Grid) -> list[Cell]:
    """One sklearn row per (variant, seed), carrying the first method's overrides (its
    data fields decide the split)."""
    first = next(iter(grid.methods))
    return [Cell(c.variant, c.variant_args, BASELINE_METHOD, c.seed, c.overrides)
            for c in grid.cells() if c.method == first]


def expected_config(grid: Grid, cell: Cell) -> dict[str, Any]:
    """What a sklearn row depends on, as recorded in its report: the seed and the data
    config of its (variant, seed)."""
    config = grid.config(cell)
    return {"seed": config.seed, "data": config.data.to_dict()}


def compare(recorded: Mapping, expected: Mapping) -> list[str]:
    """Differences in the seed and data fields only (`runs.run_state`'s `compare`)."""
    keep = lambda d: {k: d.get(k) for k in ("seed", "data")}
    return config_differences(keep(recorded), keep(expected))


def fit_and_report(grid: Grid, cell: Cell, folder: Path) -> dict:
    """Builds the split in `folder`, fits, evaluates, writes folder/report.json."""
    from tlc_jax.data.prepare import prepare  # Imported here: the runner starts faster.

    config = grid.config(cell)
    splits = prepare(config.data, config.seed, folder)
    t0 = time.time()
    model, converged = fit(splits.train.images, splits.train.labels)
    predictions = model.predict(features(splits.test.images))
    seconds = time.time() - t0
    confusion = metrics.confusion_matrix(splits.test.labels, predictions,
                                         splits.train.num_classes)
    train_counts = splits.train.class_counts()
    report = {
        "test": metrics.classification_report(confusion, train_counts,
                                              splits.train.class_names),
        "data": {name: getattr(splits, name).class_counts().tolist()
                 for name in ("train", "contrast", "test")},
        "history": {"quotas": [], "contrast_f1": [], "epochs": []},
        "config": expected_config(grid, cell),
        "baseline": {**ESTIMATOR, "n_iter": int(np.max(model.n_iter_)),
                     "converged": converged, "seconds": round(seconds, 3)},
    }
    write_json_atomic(folder / REPORT_FILE, report)
    return report


def features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, H*W*C) in [0, 1]."""
    return np.asarray(images, np.float32).reshape(len(images), -1) / 255.0


def fit(images: np.ndarray, labels: np.ndarray) -> tuple[Any, bool]:
    """The fitted LogisticRegression, and whether lbfgs converged within MAX_ITER."""
    from sklearn.exceptions import ConvergenceWarning  # 1.6 s: only when fitting.
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(class_weight="balanced", max_iter=MAX_ITER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(features(images), labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged
