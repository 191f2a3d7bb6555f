"""Where training metrics go: TensorBoard event files, a JSON-lines file, the console.

Only process 0 writes files (all processes compute the same replicated metrics). The
console line carries progress: images/s and the time left in the phase.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging


class MetricWriter:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def write(self, step: int, prefix: str, metrics: Mapping[str, Any]) -> None:
        """Scalars to TensorBoard as prefix/name, every metric to metrics.jsonl."""
        if not self.enabled:
            return
        record = {"step": int(step), "prefix": prefix}
        for name, value in metrics.items():
            value = np.asarray(value)
            record[name] = value.tolist()
            if value.size == 1 and np.isfinite(value):
                self._tb.add_scalar(f"{prefix}/{name}", float(value), int(step))
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """Console progress of a phase: step, loss, images/s and an ETA."""

    def __init__(self, phase: str, total_steps: int, batch_size: int, done: int = 0):
        self.phase, self.total, self.batch_size = phase, total_steps, batch_size
        self.start_step, self.start_time = done, time.perf_counter()

    def line(self, step: int, metrics: Mapping[str, Any]) -> str:
        elapsed = time.perf_counter() - self.start_time
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        extras = " ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()
                          if np.asarray(v).size == 1)
        return (f"{self.phase} step {step}/{self.total} ({100 * step / self.total:.0f}%) "
                f"{extras} | {rate * self.batch_size:.0f} img/s | ETA {_clock(eta)}")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        logging.info("%s", self.line(step, metrics))


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
