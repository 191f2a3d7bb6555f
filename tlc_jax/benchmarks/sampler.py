"""Input-pipeline and sampler benchmark: prints a markdown table of measured figures.

    python -m tlc_jax.benchmarks.sampler            # full sizes (about a minute on 2 cores)
    python -m tlc_jax.benchmarks.sampler --quick    # every size shrunk; a few seconds

Rows (figures are medians of `--repeats` runs, timed with time.perf_counter):
  1. quota-batch throughput on an in-memory CIFAR-sized uint8 set (50,000 x 32x32x3,
     100 long-tailed classes, batch 128): `QuotaSampler.next_batch()` + a numpy gather in
     a plain loop; one `plan()` per epoch + gathers; `QuotaBatchIterator` with
     `ArrayBatchLoader` in-process.
  2. an ImageFolder of generated JPEGs: `load_image_folder` (decode + resize) with 1 and
     2 threads; `QuotaBatchIterator` whose load decodes each batch's files with Pillow,
     in-process vs two grain worker processes (a whole chunk, start-up included, and the
     time to its first batch).
  3. an epoch plan for 1,000,000 long-tailed labels (1,000 classes, batch 1024).
  4. `update_quotas` for 1,000 classes (median of single calls).
Nothing here uses JAX or an accelerator.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tlc_jax.data.decode import decode_image
from tlc_jax.data.image_folder import list_image_folder, load_image_folder
from tlc_jax.input_pipeline import ArrayBatchLoader, QuotaBatchIterator
from tlc_jax.quotas import largest_remainder, update_quotas
from tlc_jax.sampling import QuotaSampler


@dataclasses.dataclass(frozen=True)
class Sizes:
    images: int = 50_000  # In-memory set (1).
    classes: int = 100
    batch: int = 128
    sampler_steps: int = 200  # Batches timed for next_batch (the slow path).
    jpegs: int = 2_000  # ImageFolder (2).
    jpeg_classes: int = 10
    jpeg_batch: int = 128
    jpeg_epochs: int = 3  # Batches through the grain iterator: this many epochs.
    jpeg_side: int = 128  # Files are jpeg_side^2; decoded to decode_side^2 (a real
    decode_side: int = 96  # resize: too close for JPEG draft to shrink the decode).
    plan_labels: int = 1_000_000  # Epoch plan (3).
    plan_classes: int = 1_000
    plan_batch: int = 1_024
    quota_classes: int = 1_000  # update_quotas (4).
    quota_calls: int = 1_000


FULL = Sizes()
QUICK = Sizes(images=5_000, sampler_steps=20, jpegs=160, jpeg_batch=32, jpeg_epochs=2,
              jpeg_side=64, decode_side=48, plan_labels=50_000, plan_classes=100,
              plan_batch=256, quota_calls=100)


@dataclasses.dataclass
class Row:
    what: str
    figure: float
    unit: str
    target: str = "-"
    met: bool | None = None  # None: no target.


# --- helpers ----------------------------------------------------------------------------


def longtail_labels(n: int, num_classes: int, ratio: float, seed: int = 0) -> np.ndarray:
    """n labels, class i holding a share proportional to ratio^(-i/(C-1)); shuffled."""
    shares = float(ratio) ** (-np.arange(num_classes) / max(1, num_classes - 1))
    counts = largest_remainder(n * shares / shares.sum(), n)
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), counts)
    return np.random.default_rng(seed).permutation(labels)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| What | Figure | Unit | Target | Met |", "|---|---:|---|---|---|"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "no")
        lines.append(f"| {r.what} | {fmt(r.figure)} | {r.unit} | {r.target} | {met} |")
    return "\n".join(lines)


def machine_lines() -> list[str]:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # The first CPU's entries.
    except OSError:
        pass
    model = info.get("model name", platform.processor() or "unknown CPU")
    if "cpu family" in info:
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    if "cpu MHz" in info:
        model += f" at {float(info['cpu MHz']) / 1e3:.1f} GHz"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    versions = ", ".join(f"{name} {metadata.version(name)}"
                         for name in ("numpy", "grain", "pillow"))
    return [f"Machine: {model}, {os.cpu_count()} logical cores ({usable} usable); "
            "no accelerator used (numpy / Pillow / grain only)",
            f"Python {platform.python_version()}, {versions}"]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unavailable"


# --- 1. in-memory CIFAR-sized set -------------------------------------------------------


def bench_in_memory(s: Sizes, repeats: int) -> list[Row]:
    labels = longtail_labels(s.images, s.classes, ratio=100)
    images = np.random.default_rng(0).integers(0, 256, (s.images, 32, 32, 3), np.uint8)
    where = f"{s.images:,} x 32x32x3 uint8, {s.classes} classes, batch {s.batch}"

    def next_batch_loop():
        sampler = QuotaSampler(labels, s.classes, s.batch, seed=0)
        for _ in range(s.sampler_steps):
            idx = sampler.next_batch()
            images[idx], labels[idx]

    def plan_epoch_loop():
        sampler = QuotaSampler(labels, s.classes, s.batch, seed=0)
        for idx in sampler.plan(sampler.steps_per_epoch):
            images[idx], labels[idx]
        sampler.advance(sampler.steps_per_epoch)

    def iterator_epoch():
        sampler = QuotaSampler(labels, s.classes, s.batch, seed=0)
        it = QuotaBatchIterator(sampler, ArrayBatchLoader(image=images, label=labels))
        for _ in range(sampler.steps_per_epoch):
            next(it)
        it.close()

    epoch_images = (s.images // s.batch) * s.batch
    target = ">= 100,000"
    rows = []
    for what, fn, count in [
        ("1a. QuotaSampler.next_batch() + numpy gather, plain loop", next_batch_loop,
         s.sampler_steps * s.batch),
        ("1a'. QuotaSampler.plan(steps_per_epoch) once + numpy gather per batch",
         plan_epoch_loop, epoch_images),
        ("1b. QuotaBatchIterator + ArrayBatchLoader, worker_count=0, one epoch",
         iterator_epoch, epoch_images),
    ]:
        rate = count / median_time(fn, repeats)
        rows.append(Row(f"{what} ({where})", rate, "images/s", target, rate >= 100_000))
    return rows


# --- 2. ImageFolder of JPEGs ------------------------------------------------------------


class JpegBatchLoader:
    """`loader(indices)` -> {"image": decoded batch, "label", "index"}; picklable."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, side: int):
        self.paths, self.labels, self.side = list(paths), np.asarray(labels), side

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        size = (self.side, self.side)
        images = np.stack([decode_image(self.paths[i], size) for i in indices])
        return {"image": images, "label": self.labels[indices], "index": indices}


def write_jpegs(root: Path, s: Sizes) -> None:
    """Colour gradients plus noise, one per file: compresses like a photo, not like noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = longtail_labels(s.jpegs, s.jpeg_classes, ratio=10)
    ramp = np.linspace(0, 1, s.jpeg_side, dtype=np.float32)
    for i, label in enumerate(labels):
        folder = root / f"class_{label:02d}"
        folder.mkdir(exist_ok=True)
        colour = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        grad = ramp[:, None, None] * colour[0] + ramp[None, :, None] * (255 - colour[1])
        noisy = grad / 2 + rng.normal(0, 12, grad.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90)


def bench_jpeg_folder(s: Sizes, repeats: int) -> list[Row]:
    # Imported under the module's own name so grain's spawned workers can unpickle the
    # loader whether this file runs as __main__ or is imported.
    from tlc_jax.benchmarks.sampler import JpegBatchLoader as Loader

    rows = []
    where = (f"{s.jpegs:,} JPEGs {s.jpeg_side}x{s.jpeg_side}, {s.jpeg_classes} classes, "
             f"decoded to {s.decode_side}x{s.decode_side}")
    with tempfile.TemporaryDirectory(prefix="tlc_bench_jpeg_") as tmp:
        root = Path(tmp)
        write_jpegs(root, s)
        for threads in (1, 2):
            t = median_time(lambda: load_image_folder(root, image_size=s.decode_side,
                                                      num_workers=threads), repeats)
            rows.append(Row(f"2a. load_image_folder, {threads} thread{'s' * (threads > 1)}"
                            f" ({where})", s.jpegs / t, "images/s"))

        # One chunk of `jpeg_epochs` epochs, timed from the iterator's creation, so the
        # figure includes grain's start-up (worker processes are started once per chunk).
        paths, labels, _ = list_image_folder(root)
        loader = Loader(paths, labels, s.decode_side)
        steps = s.jpeg_epochs * max(1, s.jpegs // s.jpeg_batch)
        total, first = {}, {}
        for workers in (0, 2):
            totals, firsts = [], []
            for _ in range(repeats):
                sampler = QuotaSampler(labels, s.jpeg_classes, s.jpeg_batch, seed=0)
                start = time.perf_counter()
                it = QuotaBatchIterator(sampler, loader, chunk_steps=steps,
                                        worker_count=workers)
                next(it)
                firsts.append(time.perf_counter() - start)
                for _ in range(steps - 1):
                    next(it)
                totals.append(time.perf_counter() - start)
                it.close()
                del it
                gc.collect()  # Frees grain's shared-memory batches before the next run.
            total[workers] = statistics.median(totals)
            first[workers] = statistics.median(firsts)
        run = (f"batch {s.jpeg_batch}, {steps} batches = {s.jpeg_epochs} epochs, "
               f"start-up included; {where}")
        for workers in (0, 2):
            rows.append(Row(f"2b. QuotaBatchIterator + Pillow batch loader, "
                            f"worker_count={workers} ({run})",
                            steps * s.jpeg_batch / total[workers], "images/s"))
        for workers in (0, 2):
            rows.append(Row(f"2c. Same, worker_count={workers}: time to the first batch "
                            "(paid once per chunk)", first[workers], "s"))
    return rows


# --- 3. epoch plan; 4. update_quotas ----------------------------------------------------


def bench_plan(s: Sizes, repeats: int) -> Row:
    labels = longtail_labels(s.plan_labels, s.plan_classes, ratio=100)

    def build():
        sampler = QuotaSampler(labels, s.plan_classes, s.plan_batch, seed=0)
        return sampler.plan(sampler.steps_per_epoch)

    t = median_time(build, repeats)
    steps = max(1, s.plan_labels // s.plan_batch)
    return Row(f"3. Epoch plan: QuotaSampler(...) + plan({steps}) for {s.plan_labels:,} "
               f"labels, {s.plan_classes:,} long-tailed classes, batch {s.plan_batch:,}",
               t, "s", "< 1", t < 1)


def bench_update_quotas(s: Sizes) -> Row:
    f1 = np.random.default_rng(0).uniform(0, 1, s.quota_classes)
    batch = 1024 if s.quota_classes <= 1024 else s.quota_classes
    times = []
    for _ in range(s.quota_calls):
        start = time.perf_counter()
        update_quotas(f1, batch)
        times.append(time.perf_counter() - start)
    ms = 1e3 * statistics.median(times)
    return Row(f"4. update_quotas(f1, {batch}) for {s.quota_classes:,} classes "
               f"(median of {s.quota_calls:,} calls)", ms, "ms", "< 1", ms < 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shrink every size so the script runs in a few seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per figure, median reported (5; 1 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 5)

    print(f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(*machine_lines(), sep="\n")
    print(f"Load average (1/5/15 min) before: {loadavg()}")
    print(f"Sizes: {'quick' if args.quick else 'full'}; median of {repeats} repeats\n")
    rows = bench_in_memory(sizes, repeats)
    rows += bench_jpeg_folder(sizes, repeats)
    rows.append(bench_plan(sizes, repeats))
    rows.append(bench_update_quotas(sizes))
    print(markdown_table(rows))
    print(f"\nLoad average (1/5/15 min) after: {loadavg()}")


if __name__ == "__main__":
    main()
