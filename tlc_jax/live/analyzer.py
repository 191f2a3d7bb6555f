"""The analyzer: classifies live frames with a model trained by `tlc_jax.main`.

`classify` takes frames from any number of devices at once, in chunks of the largest
batch size, each padded to one of a few fixed batch sizes: each size is compiled once
at start-up (`warm_up`), so nothing recompiles while running, on CPU or GPU alike. The
analyzer does not wait for frames itself: the live service (`tlc_jax.live.service`)
gathers them, up to the largest batch size at a time (from its queue, waiting at most
`ServiceConfig.max_wait_s` to fill a batch, or claimed from the database).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from tlc_jax.inference import load_run, make_predict
from tlc_jax.live.devices import Frame


@dataclasses.dataclass(frozen=True)
class Prediction:
    device: str
    sha256: str  # Of the frame classified.
    captured_at: float
    classes: tuple[str, ...]  # Top-k class names, most probable first.
    probabilities: tuple[float, ...]


class Analyzer:
    """Loads a run's model and latest checkpoint (`run_dir` = its work directory)."""

    def __init__(self, run_dir: str | Path, *, batch_sizes: Sequence[int] = (1, 8, 32),
                 top_k: int = 3):
        self.run_dir = Path(run_dir).absolute()
        run = load_run(self.run_dir)
        self.model, self.variables, self.step = run.model, run.variables, run.step
        self.class_names = run.spec.class_names
        self.image_shape = run.spec.image_shape  # (H, W, C)
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        self.top_k = min(top_k, len(self.class_names))
        self._predict = make_predict(self.model, self.top_k)

    def warm_up(self) -> None:
        """Compiles every batch size now, so none compiles while frames arrive."""
        for size in self.batch_sizes:
            jax.block_until_ready(self._predict(
                self.variables, np.zeros((size, *self.image_shape), np.uint8)))

    def preprocess(self, frame: Frame) -> np.ndarray:
        """The frame decoded, converted and resized to the model's input (uint8 HWC)."""
        from PIL import Image

        h, w, c = self.image_shape
        with Image.open(io.BytesIO(frame.data)) as im:
            # JPEG: decode at the smallest of 1/1..1/8 scale that still covers the
            # model's input (a 1080p camera frame for a 32 px model decodes 8x smaller).
            im.draft("L" if c == 1 else "RGB", (w, h))
            im = im.convert("L" if c == 1 else "RGB").resize((w, h),
                                                             Image.Resampling.BILINEAR)
            return np.asarray(im, np.uint8).reshape(h, w, c)

    def classify(self, frames: Sequence[Frame]) -> list[Prediction]:
        out: list[Prediction] = []
        largest = self.batch_sizes[-1]
        for start in range(0, len(frames), largest):
            chunk = frames[start:start + largest]
            size = next(s for s in self.batch_sizes if s >= len(chunk))
            batch = np.zeros((size, *self.image_shape), np.uint8)
            batch[:len(chunk)] = np.stack([self.preprocess(f) for f in chunk])
            probs, idx = jax.device_get(self._predict(self.variables, batch))
            for f, p, i in zip(chunk, probs, idx):
                out.append(Prediction(f.device, f.sha256, f.captured_at,
                                      tuple(self.class_names[k] for k in i),
                                      tuple(float(x) for x in p)))
        return out
