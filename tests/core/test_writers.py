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


def test_progress_prints_every_interval_with_the_recent_rate(monkeypatch, caplog):
    """Compilation is announced and timed; lines come at most every `interval`
    seconds and at the last step; the rate ignores the slow (compiling) first step."""
    import logging

    now = [0.0]
    monkeypatch.setattr(writers.time, "perf_counter", lambda: now[0])
    progress = writers.Progress("finetune", total_steps=400, batch_size=10,
                                interval=30.0, window=60.0)
    caplog.set_level(logging.INFO)
    progress.begin()
    assert "finetune: compiling the train step" in caplog.text
    now[0] = 50.0  # The first step waited 50 s for compilation.
    progress.step(1, lambda: {"loss": 1.0})
    assert "compiled; the first step took 50.0s" in caplog.text
    lines = []
    for step in range(2, 401):  # Then 2 steps per second.
        now[0] += 0.5
        before = len(caplog.records)
        progress.step(step, lambda: {"loss": 0.5})
        lines += [r.getMessage() for r in caplog.records[before:]]
    # The first step after compilation, then every 30 s (60 steps), and the last.
    assert [int(l.split()[2].split("/")[0]) for l in lines] == [
        2, 62, 122, 182, 242, 302, 362, 400]
    # 2 steps/s x 10 images, not diluted by the 50 s of compilation: 38 steps -> 19 s.
    assert lines[-2].endswith("loss 0.5000 | 20 img/s | ETA 0m19s")
