"""Where training metrics go: TensorBoard event files, a JSON-lines file, the console.

Only process 0 writes files (all processes compute the same replicated metrics). The
console line carries progress: images/s and the time left in the phase, at most every
half-minute.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports
    torch when it is installed (3 s of every run's start-up, for torch tensors this
    package never passes it); torch is hidden for that one import only."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # An ImportError for tensorboardX's optional import.
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            self._tb = summary_writer_class()(str(self.workdir / "tensorboard"))

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
    """Console progress of a phase: step, loss, images/s and an ETA.

    The rate (and so the ETA) is over the last `window` seconds of steps, not since the
    phase began: the first steps wait for compilation and would make the ETA wrong for
    minutes. A line goes to the console at most every `interval` seconds (and at the
    phase's last step), so a run prints about one line per epoch or per half-minute;
    `begin` says that compilation is under way, the first `step` how long it took.
    """

    def __init__(self, phase: str, total_steps: int, batch_size: int, done: int = 0,
                 interval: float = 30.0, window: float = 60.0):
        self.phase, self.total, self.batch_size = phase, total_steps, batch_size
        self.interval, self.window = interval, window
        self.start_step, self.start_time = done, time.perf_counter()
        self._recent: collections.deque = collections.deque()  # (step, time)
        self._last_print: float | None = None

    def begin(self) -> None:
        self.start_time = time.perf_counter()
        logging.info("%s: compiling the train step (the first step waits for it)...",
                     self.phase)

    def rate(self, step: int, now: float) -> float:
        """Steps per second over the recent window (since the start until it fills)."""
        points = [p for p in self._recent if p[0] < step] or [(self.start_step,
                                                               self.start_time)]
        first_step, first_time = points[0]
        return (step - first_step) / (now - first_time) if now > first_time else 0.0

    def line(self, step: int, metrics: Mapping[str, Any], now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        rate = self.rate(step, now)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        extras = " ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()
                          if np.asarray(v).size == 1)
        return (f"{self.phase} step {step}/{self.total} ({100 * step / self.total:.0f}%) "
                f"{extras} | {rate * self.batch_size:.0f} img/s | ETA {_clock(eta)}")

    def step(self, step: int, metrics: Callable[[], Mapping[str, Any]]) -> None:
        """Call after every step; `metrics()` (which may wait for the device) is only
        evaluated when a line is printed."""
        now = time.perf_counter()
        if not self._recent:
            logging.info("%s: compiled; the first step took %.1fs", self.phase,
                         now - self.start_time)
        self._recent.append((step, now))
        while len(self._recent) > 2 and now - self._recent[0][1] > self.window:
            self._recent.popleft()
        due = self._last_print is None or now - self._last_print >= self.interval
        if (due and step > self._recent[0][0]) or step == self.total:
            self._last_print = now
            logging.info("%s", self.line(step, metrics(), now))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        logging.info("%s", self.line(step, metrics))


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
