"""Rows of the memory / speed benchmark's `results.csv`, one per measurement: the
configuration a row measures, the row itself, and the progress line printed for it.

The schema (what each field holds) is in `tlc_jax.benchmarks.memory_speed`'s docstring.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

FIELDS = ("section", "framework", "model", "depth", "batch_size", "image_size", "mode",
          "policy", "dtype", "metric", "value", "unit", "status", "note")
GIB = 2 ** 30


def num_classes(model: str) -> int:
    """Classifier width of a benchmarked model: CIFAR-10's for DenseNet-BC, ImageNet's
    for the ImageNet DenseNets (JAX and PyTorch sides alike)."""
    return 10 if model == "densenet_bc" else 1000


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmarked configuration: DenseNet-BC (k=12) at a depth, or an ImageNet
    DenseNet (depth None), at a batch size and square image size."""

    model: str
    depth: int | None
    batch: int
    size: int

    @property
    def classes(self) -> int:
        """The classifier's width (`num_classes`)."""
        return num_classes(self.model)

    @property
    def common(self) -> dict[str, Any]:
        """The row fields every measurement of this configuration shares."""
        return dict(depth=self.depth if self.depth else "", batch_size=self.batch,
                    image_size=self.size)

    @property
    def label(self) -> str:
        """How progress lines name it: model[-depth] batch B Spx."""
        return (f"{self.model}{'-' + str(self.depth) if self.depth else ''} "
                f"batch {self.batch} {self.size}px")


def row(section: str, framework: str, model: str, *, depth: Any = "",
        batch_size: Any = "", image_size: Any = "", mode: str = "-", policy: str = "-",
        dtype: str = "float32", metric: str, value: Any = "", unit: str = "",
        status: str = "measured", note: str = "") -> dict[str, Any]:
    """One results.csv row (a dict keyed by `FIELDS`); blanks where a field does not
    apply."""
    return dict(section=section, framework=framework, model=model, depth=depth,
                batch_size=batch_size, image_size=image_size, mode=mode, policy=policy,
                dtype=dtype, metric=metric, value=value, unit=unit, status=status,
                note=note)


_START = time.monotonic()


def log(msg: str) -> None:
    """A progress line on stdout, flushed at once, with the seconds since the
    benchmark started (long, time-boxed runs are watched live)."""
    print(f"[{time.monotonic() - _START:6.0f} s] {msg}", flush=True)
