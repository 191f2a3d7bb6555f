"""Progress lines and metric files."""

import json

import numpy as np

from tlc_jax import writers


def test_progress_line_reports_rate_and_eta(monkeypatch):
    clock = iter([100.0, 110.0])  # Start, then 10 s later.
    monkeypatch.setattr(writers.time, "perf_counter", lambda: next(clock))
    progress = writers.Progress("finetune", total_steps=300, batch_size=64, done=100)
    line = progress.line(150, {"loss": np.float32(0.5), "vector": np.zeros(3)})
    # 50 steps in 10 s: 5 steps/s, 320 images/s, 150 steps left -> 30 s.
    assert line == ("finetune step 150/300 (50%) loss 0.5000 | 320 img/s | ETA 0m30s")


def test_clock_format():
    assert writers._clock(3725) == "1h02m05s"
    assert writers._clock(float("nan")) == "?"


def test_metric_writer_files(tmp_path):
    w = writers.MetricWriter(tmp_path)
    w.write(3, "train", {"loss": 1.5, "counts": np.array([1, 2])})
    w.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 3, "prefix": "train", "loss": 1.5, "counts": [1, 2]}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
