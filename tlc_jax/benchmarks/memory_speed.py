"""Memory and speed of DenseNets: JAX (naive / recompute) against PyTorch (torchvision,
memory_efficient False / True), in one run.

    python -m tlc_jax.benchmarks.memory_speed --out=bench_out
    python -m tlc_jax.benchmarks.memory_speed --quick --depths=10,16 --out=/tmp/q

Sections (see docs/BENCHMARKS.md, "Memory and speed: JAX against PyTorch"):

1. memory: per configuration (DenseNet-BC k=12 32 px at each --depths; the ImageNet
   DenseNets at 224 px) and mode: bytes kept for the backward pass (JAX: traced,
   `tlc_jax.memory.saved_residuals`; PyTorch: `saved_tensors_hooks` over a real CPU
   forward pass), XLA's compiled temp bytes (GPU; on CPU only --cpu_compile_depths, to
   show it equals naive), and the GPU allocator peak after one training step (one
   subprocess per row; XLA's remat pass disabled for the JAX naive rows).
2. quoted: published figures (Pleiss et al. 2017, the TLC paper), quoted, not measured.
3. deepest: deepest DenseNet-BC (k=12, batch 64, 32 px) whose training state fits
   --budget_gib, per mode. On CPU an estimate: saved-for-backward bytes + 3 x parameter
   bytes (parameters, gradients, SGD momentum) + batch statistics + the input batch,
   from a quadratic fit over the traced depths (--deepest_check: trace the answer).
4. speed: median training-step time and images/s (JAX: the trainer's own jitted step,
   `tlc_jax.step`, cross-entropy and SGD with momentum on uint8 batches; PyTorch:
   forward / backward / SGD step), naive vs recompute, JAX vs PyTorch; with
   --xla_variants, the same JAX step under other XLA flags and bfloat16 (each in a
   subprocess, since XLA_FLAGS are read at start-up).

CSV schema (one row per measurement, `results.csv`): section, framework, model,
depth, batch_size, image_size, mode, policy, dtype, metric, value, unit, status, note.
- section: memory | quoted | deepest | speed | speed_variant
- framework: jax | pytorch | quoted
- model: densenet_bc | densenet121 | densenet169 | densenet201
- depth: DenseNet-BC depth (blank for the ImageNet models)
- mode: naive | recompute (JAX) | naive | efficient (PyTorch memory_efficient)
- policy: jax.checkpoint policy for JAX recompute rows, else "-"
- dtype: float32 | bfloat16
- metric: saved_bytes, saved_arrays, param_bytes, compiled_temp_bytes,
  gpu_peak_bytes, total_estimate_bytes, deepest_depth, step_s, images_per_s,
  overhead_pct, compile_s, flops_per_step, achieved_gflops, mfu_pct, ratio_to_naive
- value: a number, or blank when status is not "measured" / "estimated" / "quoted"
- unit: bytes | count | depth | s | images/s | % | flop | GFLOP/s | ratio
- status: measured | estimated | quoted | not measured | skipped
- note: why a row is skipped / not measured, or what was quoted.

This module is the command line and runs the sections in order; each section is its
own module (`memory_section`, `quoted_section`, `speed_section`, `deepest_section`),
measuring through `jax_measure`, `torch_reference` and `isolated` (one fresh process
per row where a row needs one), and `memory_speed_report` writes the outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tlc_jax.benchmarks.deepest_section import deepest_section
from tlc_jax.benchmarks.jax_measure import on_gpu
from tlc_jax.benchmarks.memory_section import memory_section
from tlc_jax.benchmarks.memory_speed_report import machine_lines, markdown, write_outputs
from tlc_jax.benchmarks.quoted_section import quoted_section
from tlc_jax.benchmarks.result_rows import log
from tlc_jax.benchmarks.speed_section import XLA_VARIANTS, speed_section, variants_section

IMAGENET_MODELS = ("densenet121", "densenet169", "densenet201")


def parse_depths(text: str) -> list[int]:
    """A comma list of DenseNet-BC depths; exits with the rule when one breaks it."""
    depths = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            d = int(part)
        except ValueError:
            raise SystemExit(f"--depths: {part!r} is not an integer.") from None
        if d < 10 or d % 6 != 4:
            raise SystemExit(
                f"--depths: DenseNet-BC depth must be >= 10 with depth % 6 == 4 "
                f"(3 blocks of (depth - 4) / 6 bottleneck layers; e.g. 40, 100, 160, 250,"
                f" 400, 1000); got {d}.")
        depths.append(d)
    return depths


def _parser() -> argparse.ArgumentParser:
    """The benchmark's options, unchecked (`parse_args` checks them)."""
    p = argparse.ArgumentParser(prog="python -m tlc_jax.benchmarks.memory_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="Folder for results.csv, "
                   "memory_vs_depth.png and results.md (written atomically).")
    p.add_argument("--depths", default="40,100,160,250,400,1000",
                   help="DenseNet-BC depths (k=12, 32 px), each 4 mod 6.")
    p.add_argument("--batch_size", type=int, default=64, help="Memory rows' batch.")
    p.add_argument("--imagenet_models", default=",".join(IMAGENET_MODELS),
                   help="ImageNet DenseNets at 224 px ('' for none).")
    p.add_argument("--imagenet_batch", type=int, default=64,
                   help="Batch of the ImageNet memory rows.")
    p.add_argument("--policies", default="dots_saveable,nothing_saveable",
                   help="Remat policies of the JAX recompute rows.")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="PyTorch rows (skipped with a reason if torch is missing).")
    p.add_argument("--torch_max_ram_gib", type=float, default=14.0,
                   help="Skip a PyTorch CPU forward pass estimated to keep more.")
    p.add_argument("--torch_max_depth", type=int, default=400,
                   help="Skip PyTorch CPU rows deeper than this (time).")
    p.add_argument("--cpu_compile_depths", default="",
                   help="On CPU, also compile these depths (slow) to show XLA:CPU's "
                   "temp bytes; on GPU every row is compiled.")
    p.add_argument("--deepest", action=argparse.BooleanOptionalAction, default=True,
                   help="Search the deepest DenseNet-BC within --budget_gib per mode.")
    p.add_argument("--budget_gib", type=float, default=12.0)
    p.add_argument("--deepest_gpu_check", action=argparse.BooleanOptionalAction,
                   default=True, help="On a GPU, measure the peak at each estimated "
                   "deepest depth (compiles networks of 1,500+ layers: minutes).")
    p.add_argument("--deepest_check", action=argparse.BooleanOptionalAction,
                   default=False, help="Trace the fitted answer to check it (slow: "
                   "101 s at depth 2,026 and 174 s at 3,034 on 2 cores; the fit matched "
                   "to 0.01 GiB in every mode, so it is off by default).")
    p.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                   help="Training step time, naive vs recompute, JAX vs PyTorch.")
    p.add_argument("--steps", type=int, default=3, help="Timed steps per speed row.")
    p.add_argument("--speed_bc_depth", type=int, default=100)
    p.add_argument("--speed_bc_batch", type=int, default=64)
    p.add_argument("--speed_imagenet_model", default="densenet121",
                   help="ImageNet model of the speed rows ('' for none).")
    p.add_argument("--speed_imagenet_batch", type=int, default=None,
                   help="Default 8 on CPU, 64 on GPU.")
    p.add_argument("--xla_variants", default="",
                   help="Comma list of JAX speed variants for the CPU gap, each a "
                   "subprocess on DenseNet-BC: default, bf16, no_multi_thread_eigen, "
                   "fast_math, onednn, xnnpack.")
    p.add_argument("--variant_modes", default="naive",
                   help="Memory modes of the --xla_variants rows (naive,recompute).")
    p.add_argument("--gpu_peak", action=argparse.BooleanOptionalAction, default=None,
                   help="Measure GPU peaks (default: when a GPU is present).")
    p.add_argument("--speed_first", action="store_true",
                   help="Run the speed section before the memory section (the GPU "
                   "suite: step times first, deep networks' memory rows last).")
    p.add_argument("--gpu_peak_max_gib", type=float, default=None,
                   help="GPU peak rows whose training state is estimated above this "
                   "are not attempted (default: the device's memory).")
    p.add_argument("--row_timeout", type=int, default=600,
                   help="Seconds allowed to each subprocess row (GPU peaks, PyTorch "
                   "saved bytes, XLA variants).")
    p.add_argument("--quick", action="store_true",
                   help="Tiny sizes for tests: batch 4, 1 timed step, no ImageNet "
                   "models, speed on the smallest depth at 16 px.")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options, checked (bad input exits before anything runs);
    --quick shrinks every size for the smoke tests."""
    args = _parser().parse_args(argv)
    args.depths = parse_depths(args.depths)
    args.cpu_compile_depths = parse_depths(args.cpu_compile_depths)
    args.imagenet_models = [m for m in args.imagenet_models.split(",") if m]
    for m in args.imagenet_models + ([args.speed_imagenet_model]
                                     if args.speed_imagenet_model else []):
        if m not in IMAGENET_MODELS:
            raise SystemExit(f"Unknown ImageNet model {m!r}; valid: "
                             f"{', '.join(IMAGENET_MODELS)}.")
    from tlc_jax.models import REMAT_POLICIES
    args.policies = [q for q in args.policies.split(",") if q]
    for q in args.policies:
        if q not in REMAT_POLICIES:
            raise SystemExit(f"Unknown remat policy {q!r}; valid policies: "
                             f"{', '.join(REMAT_POLICIES)}.")
    args.variant_modes = [m for m in args.variant_modes.split(",") if m]
    for m in args.variant_modes:
        if m not in ("naive", "recompute"):
            raise SystemExit(f"Unknown --variant_modes entry {m!r}; use naive, recompute.")
    args.xla_variants = [v for v in args.xla_variants.split(",") if v]
    for v in args.xla_variants:
        if v not in XLA_VARIANTS:
            raise SystemExit(f"Unknown --xla_variants entry {v!r}; valid: "
                             f"{', '.join(XLA_VARIANTS)}.")
    if args.quick:
        args.batch_size = min(args.batch_size, 4)
        args.imagenet_models = []
        args.speed_imagenet_model = ""
        args.steps = 1
        args.speed_bc_depth = args.depths[0] if args.depths else 10
        args.speed_bc_batch = 4
        args.deepest_check = False
    parse_depths(str(args.speed_bc_depth))
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the sections, rewriting the outputs after each; prints results.md."""
    args = parse_args(argv)
    from tlc_jax.benchmarks.torch_reference import torch_status
    torch_ok, torch_reason = (torch_status() if args.torch else
                              (False, "PyTorch rows skipped: --no-torch"))
    if not torch_ok:
        log(torch_reason)
    gpu = on_gpu()
    header = machine_lines(torch_ok)
    header.append("Command: python -m tlc_jax.benchmarks.memory_speed "
                  + " ".join(sys.argv[1:] if argv is None else argv))
    for line in header:
        log(line)
    if not gpu:
        log("No GPU: GPU peak columns say 'not measured'.")
    start = time.perf_counter()
    rows: list[dict] = []
    out = Path(args.out)

    def checkpoint(done: str) -> str:
        """Writes everything so far (a run cut short still leaves its results)."""
        md = markdown(rows, header + [f"Sections done: {done}; "
                                      f"{time.perf_counter() - start:.0f} s"], gpu)
        write_outputs(out, rows, md, args.budget_gib)
        return md

    done: list[str] = []

    def run_speed() -> None:
        speed_section(args, rows, gpu, torch_ok, torch_reason,
                      checkpoint=lambda: checkpoint(", ".join(done + ["speed (part)"])))
        done.append("speed")
        checkpoint(", ".join(done))

    # --speed_first: a time-boxed GPU suite measures the step times (the recompute
    # overhead, bf16 against PyTorch AMP) before the deep networks' memory rows, whose
    # compilation is the slowest part.
    if args.speed and args.speed_first:
        run_speed()
    measured = memory_section(
        args, rows, gpu, torch_ok, torch_reason,
        checkpoint=lambda: checkpoint(", ".join(done + ["memory (part)"])))
    quoted_section(rows)
    done += ["memory", "quoted"]
    checkpoint(", ".join(done))
    # Speed before the deepest search: on a GPU the search's measured check compiles
    # very deep networks, the slowest part of a time-boxed suite.
    if args.speed and not args.speed_first:
        run_speed()
    if args.deepest:
        deepest_section(args, rows, measured, gpu)
        done.append("deepest")
        checkpoint(", ".join(done))
    if args.xla_variants:
        variants_section(args, rows)
    md = checkpoint("all")
    print(md, flush=True)
    log(f"Wrote {out / 'results.csv'}, {out / 'results.md'}, "
        f"{out / 'memory_vs_depth.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
