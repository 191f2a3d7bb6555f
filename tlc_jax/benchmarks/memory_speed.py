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
4. speed: median training-step time and images/s (JAX: jitted value_and_grad + optax
   SGD with momentum; PyTorch: forward / backward / SGD step), naive vs recompute,
   JAX vs PyTorch; with --xla_variants, the same JAX step under other XLA flags and
   bfloat16 (each in a subprocess, since XLA_FLAGS are read at start-up).

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
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIELDS = ("section", "framework", "model", "depth", "batch_size", "image_size", "mode",
          "policy", "dtype", "metric", "value", "unit", "status", "note")
IMAGENET_MODELS = ("densenet121", "densenet169", "densenet201")
GIB = 2 ** 30

# Quoted, not measured (../shared/SPEC.md section 4; Pleiss et al., "Memory-Efficient
# Implementation of DenseNets", 2017 tech report, Titan-X 12 GB, k=12, batch 64; the
# TLC paper's own efficient-DenseNet claim).
QUOTED = (
    dict(framework="quoted", model="densenet_bc", depth=160, mode="naive",
         metric="deepest_depth", value=160, unit="depth",
         note="Pleiss et al.: naive LuaTorch needs > 12 GB past ~160 layers"),
    dict(framework="quoted", model="densenet_bc", depth=340, mode="efficient",
         metric="deepest_depth", value=340, unit="depth",
         note="Pleiss et al.: efficient LuaTorch fits 340 layers in 12 GB"),
    dict(framework="quoted", model="densenet_bc", depth=478, mode="efficient",
         metric="deepest_depth", value=478, unit="depth",
         note="Pleiss et al.: efficient PyTorch trains ~478 layers (13M params) in 12 GB"),
    dict(framework="quoted", model="densenet_bc", depth="", mode="efficient",
         metric="overhead_pct", value=22.5, unit="%",
         note="Pleiss et al.: efficient PyTorch +20-25% time (LuaTorch +15%)"),
    dict(framework="quoted", model="densenet_bc", depth=500, mode="efficient",
         metric="deepest_depth", value=500, unit="depth",
         note="TLC paper: 500 layers"),
    dict(framework="quoted", model="densenet_bc", depth="", mode="efficient",
         metric="overhead_pct", value=27.9, unit="%",
         note="TLC paper: +27.9% time (PyTorch; +20.0% LuaTorch, +29.6% Keras)"),
)

# Dense bf16 tensor-core peak FLOP/s by device kind, for model FLOP utilisation.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
                   "A10": 125e12, "V100": 125e12}


def parse_depths(text: str) -> list[int]:
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument("--row_timeout", type=int, default=600,
                   help="Seconds allowed to each subprocess row (GPU peaks, PyTorch "
                   "saved bytes, XLA variants).")
    p.add_argument("--quick", action="store_true",
                   help="Tiny sizes for tests: batch 4, 1 timed step, no ImageNet "
                   "models, speed on the smallest depth at 16 px.")
    p.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
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


# XLA_FLAGS / dtype of each CPU gap variant (run in a subprocess each).
XLA_VARIANTS = {
    "default": ("", "float32"),
    "bf16": ("", "bfloat16"),
    "no_multi_thread_eigen": ("--xla_cpu_multi_thread_eigen=false", "float32"),
    "fast_math": ("--xla_cpu_enable_fast_math=true", "float32"),
    "onednn": ("--xla_cpu_use_onednn=true", "float32"),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "float32"),
}


def _row(section, framework, model, *, depth="", batch_size="", image_size="",
         mode="-", policy="-", dtype="float32", metric, value="", unit="",
         status="measured", note="") -> dict[str, Any]:
    return dict(section=section, framework=framework, model=model, depth=depth,
                batch_size=batch_size, image_size=image_size, mode=mode, policy=policy,
                dtype=dtype, metric=metric, value=value, unit=unit, status=status,
                note=note)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- JAX helpers


def jax_model(model: str, depth: int | None, mode: str, policy: str,
              dtype: str = "float32"):
    import jax.numpy as jnp

    from tlc_jax.models import create_model
    kwargs: dict[str, Any] = dict(memory=mode, dtype=getattr(jnp, dtype),
                                  remat_policy=policy if policy != "-" else "dots_saveable")
    if model == "densenet_bc":
        return create_model("densenet_bc", depth=depth, growth_rate=12, num_classes=10,
                            **kwargs)
    return create_model(model, num_classes=1000, **kwargs)


def tree_bytes(tree) -> int:
    import jax
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def jax_traced(model: str, depth: int | None, mode: str, policy: str, batch: int,
               size: int) -> dict[str, int]:
    """Saved-for-backward bytes (traced) plus parameter / state / batch bytes."""
    from tlc_jax.memory import abstract_inputs, saved_residuals, training_loss
    net = jax_model(model, depth, mode, policy)
    args = abstract_inputs(net, batch, size)
    r = saved_residuals(training_loss(net), *args)
    return {"saved_bytes": r.saved_bytes, "saved_arrays": r.saved_arrays,
            "param_bytes": tree_bytes(args[0]), "batch_stats_bytes": tree_bytes(args[1]),
            "input_bytes": tree_bytes(args[2:])}


def total_estimate(t: dict[str, int]) -> int:
    """Training state estimate: saved + params, grads, momentum + BN stats + batch."""
    return (t["saved_bytes"] + 3 * t["param_bytes"] + t["batch_stats_bytes"]
            + t["input_bytes"])


def jax_train_step(net, batch: int, size: int, num_classes: int, *, steps: int,
                   flops: bool = True) -> dict[str, float]:
    """Median step seconds of a jitted value_and_grad + optax SGD (momentum) update."""
    import jax
    import jax.numpy as jnp
    import optax
    key_x, key_init = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (batch, size, size, 3), jnp.float32)
    y = jnp.arange(batch, dtype=jnp.int32) % num_classes
    variables = jax.jit(lambda k: net.init(k, x[:1], train=False))(key_init)
    tx = optax.sgd(0.01, momentum=0.9)
    state = (variables["params"], variables["batch_stats"],
             tx.init(variables["params"]))

    def step(state, x, y):
        params, batch_stats, opt_state = state

        def loss_fn(p):
            logits, new = net.apply({"params": p, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y).mean()
            return loss, new["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
    compile_s = time.perf_counter() - start
    out: dict[str, float] = {"compile_s": compile_s}
    if flops:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else {}
        if cost and cost.get("flops"):
            out["flops_per_step"] = float(cost["flops"])
    state, loss = compiled(state, x, y)  # Warm-up.
    jax.block_until_ready(loss)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, loss = compiled(state, x, y)
        jax.block_until_ready((state, loss))
        times.append(time.perf_counter() - start)
    times.sort()
    out["step_s"] = times[len(times) // 2]
    return out


def device_bytes() -> float:
    """The accelerator's memory limit in bytes (inf where not reported)."""
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return float(stats.get("bytes_limit", float("inf")))


def on_gpu() -> bool:
    import jax
    return jax.devices()[0].platform == "gpu"


# ---------------------------------------------------------------- subprocess rows


def run_row(spec: dict[str, Any], timeout: int, env_extra: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """Runs one `--_row` spec in a fresh process; returns its JSON or an error."""
    env = dict(os.environ, **(env_extra or {}))
    # The parent process holds the GPU too: no process may grab most of its memory.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    cmd = [sys.executable, "-m", "tlc_jax.benchmarks.memory_speed", "--out", os.devnull,
           "--_row", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' / '.join(tail)[-300:]}"}


def row_main(spec: dict[str, Any]) -> None:
    """One measurement in this (fresh) process; prints `ROW {json}`."""
    kind = spec["kind"]
    out: dict[str, Any] = {}
    if kind == "jax_peak":
        from tlc_jax.memory import compiled_memory, disable_xla_remat, peak_bytes_in_use
        net = jax_model(spec["model"], spec["depth"], spec["mode"], spec["policy"])
        ctx = disable_xla_remat() if spec["mode"] == "naive" else contextlib.nullcontext()
        with ctx:
            out["compiled"] = compiled_memory(net, spec["batch"], spec["size"])
            out["peak"] = peak_bytes_in_use(net, spec["batch"], spec["size"])
    elif kind == "torch_saved":
        from tlc_jax.benchmarks import torch_reference as T
        nc = 10 if spec["model"] == "densenet_bc" else 1000
        net = T.build(spec["model"], spec["depth"], spec["mode"] == "efficient", nc)
        device = spec["device"]
        if device == "cuda":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        out = T.saved_for_backward(net, spec["batch"], spec["size"], num_classes=nc,
                                   device=device)
        out["device"] = device
    elif kind == "torch_peak":
        from tlc_jax.benchmarks import torch_reference as T
        net = T.build(spec["model"], spec["depth"], spec["mode"] == "efficient",
                      10 if spec["model"] == "densenet_bc" else 1000)
        out["peak"] = T.cuda_peak_bytes(net, spec["batch"], spec["size"],
                                        10 if spec["model"] == "densenet_bc" else 1000)
    elif kind == "jax_speed":
        net = jax_model(spec["model"], spec["depth"], spec["mode"], spec["policy"],
                        spec.get("dtype", "float32"))
        out = jax_train_step(net, spec["batch"], spec["size"], spec["num_classes"],
                             steps=spec["steps"])
    else:
        raise SystemExit(f"unknown row kind {kind!r}")
    print("ROW " + json.dumps(out), flush=True)


# ---------------------------------------------------------------- sections


def memory_section(args, rows: list[dict], gpu: bool, torch_ok: bool,
                   torch_reason: str) -> dict:
    """Section 1; returns the traced JAX figures keyed by (depth, mode, policy)."""
    traced: dict[tuple, dict[str, int]] = {}
    modes = [("naive", "-")] + [("recompute", q) for q in args.policies]
    configs = [("densenet_bc", d, args.batch_size, 32) for d in args.depths]
    configs += [(m, None, args.imagenet_batch, 224) for m in args.imagenet_models]
    gpu_peak = gpu if args.gpu_peak is None else args.gpu_peak
    if gpu_peak and not gpu:
        log("--gpu_peak asked for, but no GPU: GPU peaks are not measured.")
        gpu_peak = False
    torch_measured: dict[tuple, dict] = {}
    for model, depth, batch, size in configs:
        common = dict(depth=depth if depth else "", batch_size=batch, image_size=size)
        label = f"{model}{'-' + str(depth) if depth else ''} batch {batch} {size}px"
        naive_saved = None
        for mode, policy in modes:
            start = time.perf_counter()
            t = jax_traced(model, depth, mode, policy, batch, size)
            traced[(model, depth, mode, policy)] = t
            secs = time.perf_counter() - start
            if mode == "naive":
                naive_saved = t["saved_bytes"]
            log(f"[memory] jax {label} {mode}/{policy}: saved "
                f"{t['saved_bytes'] / GIB:.3f} GiB ({t['saved_arrays']} arrays), "
                f"traced in {secs:.1f} s")
            base = dict(common, mode=mode, policy=policy)
            rows.append(_row("memory", "jax", model, **base, metric="saved_bytes",
                             value=t["saved_bytes"], unit="bytes",
                             note=f"traced (saved_residuals), {secs:.1f} s"))
            rows.append(_row("memory", "jax", model, **base, metric="saved_arrays",
                             value=t["saved_arrays"], unit="count"))
            rows.append(_row("memory", "jax", model, **base, metric="param_bytes",
                             value=t["param_bytes"], unit="bytes"))
            if naive_saved:
                rows.append(_row("memory", "jax", model, **base, metric="ratio_to_naive",
                                 value=round(t["saved_bytes"] / naive_saved, 4),
                                 unit="ratio"))
            # Compiled temp bytes and GPU peak.
            if gpu_peak and total_estimate(t) > 1.5 * device_bytes():
                res = {"error": f"skipped: estimated {total_estimate(t) / GIB:.0f} GiB "
                                f"exceeds the device's memory"}
            elif gpu_peak:
                res = run_row(dict(kind="jax_peak", model=model, depth=depth, mode=mode,
                                   policy=policy, batch=batch, size=size),
                              args.row_timeout)
                if "error" in res:
                    for metric in ("compiled_temp_bytes", "gpu_peak_bytes"):
                        rows.append(_row("memory", "jax", model, **base, metric=metric,
                                         status="not measured", note=res["error"]))
                    log(f"[memory] jax {label} {mode}/{policy}: GPU row failed: "
                        f"{res['error']}")
                else:
                    note = ("XLA remat pass disabled" if mode == "naive" else "")
                    rows.append(_row("memory", "jax", model, **base,
                                     metric="compiled_temp_bytes",
                                     value=res["compiled"].get("temp", ""), unit="bytes",
                                     note=note))
                    rows.append(_row("memory", "jax", model, **base,
                                     metric="gpu_peak_bytes", value=res["peak"] or "",
                                     unit="bytes", note=note,
                                     status="measured" if res["peak"] else "not measured"))
                    log(f"[memory] jax {label} {mode}/{policy}: GPU peak "
                        f"{(res['peak'] or 0) / GIB:.3f} GiB")
            else:
                if not gpu and depth in args.cpu_compile_depths:
                    from tlc_jax.memory import compiled_memory
                    c = compiled_memory(jax_model(model, depth, mode, policy), batch, size)
                    rows.append(_row("memory", "jax", model, **base,
                                     metric="compiled_temp_bytes", value=c.get("temp", ""),
                                     unit="bytes", note="XLA:CPU (undoes recompute)"))
                    log(f"[memory] jax {label} {mode}/{policy}: XLA:CPU compiled temp "
                        f"{c.get('temp', 0) / GIB:.3f} GiB")
                else:
                    rows.append(_row(
                        "memory", "jax", model, **base, metric="compiled_temp_bytes",
                        status="not measured",
                        note=("CPU: XLA:CPU undoes the recomputation (CSE), so its temp "
                              "bytes equal naive's; see --cpu_compile_depths"
                              if not gpu else "skipped (--no-gpu_peak)")))
                rows.append(_row("memory", "jax", model, **base, metric="gpu_peak_bytes",
                                 status="not measured",
                                 note="no GPU" if not gpu else "skipped (--no-gpu_peak)"))
        # PyTorch at the same configuration.
        for mode in ("naive", "efficient"):
            base = dict(common, mode=mode)
            if not torch_ok:
                rows.append(_row("memory", "pytorch", model, **base, metric="saved_bytes",
                                 status="skipped", note=torch_reason))
                continue
            jax_same = traced[(model, depth, "naive" if mode == "naive" else "recompute",
                               "-" if mode == "naive" else
                               (args.policies[0] if args.policies else "-"))]
            # RAM estimate: the JAX figure of the matching mode, scaled by the
            # PyTorch/JAX ratio seen at the previous measured depth (1.2 if none).
            ratio = 1.2
            prev = [v for k, v in torch_measured.items() if k[0] == model and k[2] == mode]
            if prev:
                ratio = max(p["ratio"] for p in prev) * 1.1
            est = jax_same["saved_bytes"] * ratio + 2 * jax_same["param_bytes"]
            reason = ""
            if depth and depth > args.torch_max_depth:
                reason = (f"skipped: depth > --torch_max_depth={args.torch_max_depth} "
                          f"(forward time)")
            elif est > args.torch_max_ram_gib * GIB:
                reason = (f"skipped: the forward pass would keep an estimated "
                          f"{est / GIB:.1f} GiB > --torch_max_ram_gib="
                          f"{args.torch_max_ram_gib:g}")
            if reason:
                log(f"[memory] pytorch {label} {mode}: {reason}")
                rows.append(_row("memory", "pytorch", model, **base, metric="saved_bytes",
                                 status="skipped", note=reason))
            else:
                # In a fresh process: the CPU allocator keeps freed pages, so a few
                # big forward passes in one process would add up (OOM on 24 GiB).
                dev = "cuda" if gpu else "cpu"
                r = run_row(dict(kind="torch_saved", model=model, depth=depth,
                                 mode=mode, batch=batch, size=size, device=dev),
                            args.row_timeout)
                if "error" in r:
                    log(f"[memory] pytorch {label} {mode}: failed: {r['error']}")
                    rows.append(_row("memory", "pytorch", model, **base,
                                     metric="saved_bytes", status="skipped",
                                     note=r["error"]))
                    continue
                torch_measured[(model, depth, mode)] = dict(
                    r, ratio=r["saved_bytes"] / max(jax_same["saved_bytes"], 1))
                log(f"[memory] pytorch {label} {mode}: saved "
                    f"{r['saved_bytes'] / GIB:.3f} GiB ({r['saved_storages']} storages), "
                    f"forward {r['forward_s']:.1f} s")
                rows.append(_row("memory", "pytorch", model, **base, metric="saved_bytes",
                                 value=r["saved_bytes"], unit="bytes",
                                 note=f"saved_tensors_hooks, {r['device']} forward "
                                 f"{r['forward_s']:.1f} s"))
                rows.append(_row("memory", "pytorch", model, **base,
                                 metric="saved_arrays", value=r["saved_storages"],
                                 unit="count", note="distinct storages"))
                rows.append(_row("memory", "pytorch", model, **base, metric="param_bytes",
                                 value=r["param_bytes"], unit="bytes"))
                pn = torch_measured.get((model, depth, "naive"))
                if mode == "efficient" and pn:
                    rows.append(_row("memory", "pytorch", model, **base,
                                     metric="ratio_to_naive",
                                     value=round(r["saved_bytes"] / pn["saved_bytes"], 4),
                                     unit="ratio"))
            if gpu_peak and torch_ok:
                res = run_row(dict(kind="torch_peak", model=model, depth=depth,
                                   mode=mode, batch=batch, size=size), args.row_timeout)
                if "error" in res:
                    rows.append(_row("memory", "pytorch", model, **base,
                                     metric="gpu_peak_bytes", status="not measured",
                                     note=res["error"]))
                else:
                    rows.append(_row("memory", "pytorch", model, **base,
                                     metric="gpu_peak_bytes", value=res["peak"],
                                     unit="bytes", note="torch.cuda.max_memory_allocated"))
                    log(f"[memory] pytorch {label} {mode}: GPU peak "
                        f"{res['peak'] / GIB:.3f} GiB")
            elif torch_ok:
                rows.append(_row("memory", "pytorch", model, **base,
                                 metric="gpu_peak_bytes", status="not measured",
                                 note="no GPU" if not gpu else "skipped (--no-gpu_peak)"))
    return {"jax": traced, "torch": torch_measured}


def quadratic_fit(points: list[tuple[int, float]]):
    """Least-squares quadratic in the layers per block n = (depth - 4) / 6."""
    import numpy as np
    n = np.array([(d - 4) / 6 for d, _ in points], float)
    v = np.array([b for _, b in points], float)
    deg = min(2, len(points) - 1)
    coef = np.polyfit(n, v, deg)
    return lambda depth: float(np.polyval(coef, (depth - 4) / 6))


def deepest_by_fit(fit, budget: float, start: int = 10, limit: int = 100_000) -> int:
    """Largest depth (4 mod 6) whose fitted figure is within budget (bisection)."""
    lo, hi = 0, (limit - 4) // 6  # Layers per block.
    if fit(start) > budget:
        return 0
    lo = (start - 4) // 6
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fit(6 * mid + 4) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return 6 * lo + 4


def deepest_section(args, rows, measured, gpu: bool) -> None:
    """Section 3: the deepest BC network within the budget, per mode (estimate)."""
    traced_check = args.deepest_check
    budget = args.budget_gib * GIB
    traced = measured["jax"]
    modes = [("naive", "-")] + [("recompute", q) for q in args.policies]
    batch = args.batch_size
    for mode, policy in modes:
        pts = [(d, total_estimate(t)) for (m, d, mo, q), t in traced.items()
               if m == "densenet_bc" and mo == mode and q == policy]
        # A quadratic needs three depths; trace small extra ones if needed.
        extra = [d for d in (40, 100, 160) if d not in dict(pts)]
        while len(pts) < 3 and extra:
            d = extra.pop(0)
            pts.append((d, total_estimate(jax_traced("densenet_bc", d, mode, policy,
                                                     batch, 32))))
        pts.sort()
        fit = quadratic_fit(pts[-3:])  # The deepest three points.
        d_star = deepest_by_fit(fit, budget)
        note = (f"estimate: saved-for-backward (traced) + 3 x params + BN stats + batch, "
                f"quadratic fit over depths {[d for d, _ in pts[-3:]]}")
        if traced_check and d_star:
            start = time.perf_counter()
            checked = total_estimate(jax_traced("densenet_bc", d_star, mode, policy,
                                                batch, 32))
            while checked > budget and d_star > 10:  # The fit was optimistic.
                d_star -= 6
                checked = total_estimate(jax_traced("densenet_bc", d_star, mode, policy,
                                                    batch, 32))
            note += (f"; traced at {d_star}: {checked / GIB:.2f} GiB (fit "
                     f"{fit(d_star) / GIB:.2f}), {time.perf_counter() - start:.0f} s")
        log(f"[deepest] jax {mode}/{policy}: {d_star} layers within "
            f"{args.budget_gib:g} GiB ({note})")
        rows.append(_row("deepest", "jax", "densenet_bc", depth=d_star, batch_size=batch,
                         image_size=32, mode=mode, policy=policy, metric="deepest_depth",
                         value=d_star, unit="depth", status="estimated", note=note))
        rows.append(_row("deepest", "jax", "densenet_bc", depth=d_star, batch_size=batch,
                         image_size=32, mode=mode, policy=policy,
                         metric="total_estimate_bytes",
                         value=int(checked if traced_check and d_star else fit(d_star)),
                         unit="bytes", status="estimated"))
        if gpu and args.gpu_peak is not False and args.deepest_gpu_check and d_star:
            # One measured check at the estimated answer (a full measured bisection
            # would compile a deep network per step: too slow for the GPU suite).
            res = run_row(dict(kind="jax_peak", model="densenet_bc", depth=d_star,
                               mode=mode, policy=policy, batch=batch, size=32),
                          args.row_timeout)
            if "error" in res or not res.get("peak"):
                rows.append(_row("deepest", "jax", "densenet_bc", depth=d_star,
                                 batch_size=batch, image_size=32, mode=mode,
                                 policy=policy, metric="gpu_peak_bytes",
                                 status="not measured",
                                 note=res.get("error", "no allocator stats")))
            else:
                fits = res["peak"] <= budget
                rows.append(_row("deepest", "jax", "densenet_bc", depth=d_star,
                                 batch_size=batch, image_size=32, mode=mode,
                                 policy=policy, metric="gpu_peak_bytes",
                                 value=res["peak"], unit="bytes",
                                 note=f"measured at the estimated depth: "
                                 f"{'within' if fits else 'OVER'} the budget"))
                log(f"[deepest] jax {mode}/{policy}: GPU peak at {d_star}: "
                    f"{res['peak'] / GIB:.2f} GiB ({'fits' if fits else 'over budget'})")
        else:
            rows.append(_row("deepest", "jax", "densenet_bc", batch_size=batch,
                             image_size=32, mode=mode, policy=policy,
                             metric="gpu_peak_bytes", status="not measured",
                             note="no GPU: the measured check runs only on a GPU"
                             if not gpu else "skipped (--no-deepest_gpu_check)"))
    tm = measured["torch"]
    for mode in ("naive", "efficient"):
        pts = sorted((d, r["saved_bytes"] + 3 * r["param_bytes"])
                     for (m, d, mo), r in tm.items() if m == "densenet_bc" and mo == mode)
        if len(pts) < 3:
            rows.append(_row("deepest", "pytorch", "densenet_bc", batch_size=batch,
                             image_size=32, mode=mode, metric="deepest_depth",
                             status="skipped",
                             note="needs three measured PyTorch depths"))
            continue
        fit = quadratic_fit(pts[-3:])
        d_star = deepest_by_fit(fit, budget)
        note = (f"estimate: saved (hooks, CPU) + 3 x params, quadratic fit over depths "
                f"{[d for d, _ in pts[-3:]]}; not traced at the answer")
        log(f"[deepest] pytorch {mode}: {d_star} layers within {args.budget_gib:g} GiB "
            f"({note})")
        rows.append(_row("deepest", "pytorch", "densenet_bc", depth=d_star,
                         batch_size=batch, image_size=32, mode=mode,
                         metric="deepest_depth", value=d_star, unit="depth",
                         status="estimated", note=note))


def speed_section(args, rows, gpu: bool, torch_ok: bool, torch_reason: str) -> None:
    configs = [("densenet_bc", args.speed_bc_depth, args.speed_bc_batch,
                16 if args.quick else 32, 10)]
    if args.speed_imagenet_model:
        configs.append((args.speed_imagenet_model, None,
                        args.speed_imagenet_batch or (64 if gpu else 8), 224, 1000))
    dtypes = ["float32"] + (["bfloat16"] if gpu else [])
    policy = args.policies[0] if args.policies else "dots_saveable"
    peak = None
    if gpu:
        import jax
        kind = jax.devices()[0].device_kind
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
    for model, depth, batch, size, nc in configs:
        common = dict(depth=depth or "", batch_size=batch, image_size=size)
        label = f"{model}{'-' + str(depth) if depth else ''} batch {batch} {size}px"
        for dtype in dtypes:
            naive_s = None
            for mode in ("naive", "recompute"):
                pol = "-" if mode == "naive" else policy
                net = jax_model(model, depth, mode, pol, dtype)
                r = jax_train_step(net, batch, size, nc, steps=args.steps)
                base = dict(common, mode=mode, policy=pol, dtype=dtype)
                ips = batch / r["step_s"]
                log(f"[speed] jax {label} {mode}/{pol} {dtype}: {r['step_s']:.3f} s/step, "
                    f"{ips:.1f} images/s (compile {r['compile_s']:.0f} s)")
                rows.append(_row("speed", "jax", model, **base, metric="step_s",
                                 value=round(r["step_s"], 5), unit="s",
                                 note=f"median of {args.steps}"))
                rows.append(_row("speed", "jax", model, **base, metric="images_per_s",
                                 value=round(ips, 2), unit="images/s"))
                rows.append(_row("speed", "jax", model, **base, metric="compile_s",
                                 value=round(r["compile_s"], 2), unit="s"))
                if "flops_per_step" in r:
                    rows.append(_row("speed", "jax", model, **base,
                                     metric="flops_per_step", value=r["flops_per_step"],
                                     unit="flop", note="XLA cost_analysis"))
                    rows.append(_row("speed", "jax", model, **base,
                                     metric="achieved_gflops",
                                     value=round(r["flops_per_step"] / r["step_s"] / 1e9,
                                                 2), unit="GFLOP/s"))
                if gpu and dtype == "bfloat16" and peak and "flops_per_step" in r:
                    rows.append(_row("speed", "jax", model, **base, metric="mfu_pct",
                                     value=round(100 * r["flops_per_step"] / r["step_s"]
                                                 / peak, 2), unit="%",
                                     note=f"dense bf16 peak {peak / 1e12:g} TFLOP/s"))
                else:
                    rows.append(_row("speed", "jax", model, **base, metric="mfu_pct",
                                     status="not measured",
                                     note="GPU bf16 only" if not gpu else
                                     "float32 / unknown peak"))
                if mode == "naive":
                    naive_s = r["step_s"]
                else:
                    ov = 100 * (r["step_s"] / naive_s - 1)
                    rows.append(_row("speed", "jax", model, **base, metric="overhead_pct",
                                     value=round(ov, 1), unit="%",
                                     note="recompute step time vs naive"))
                    log(f"[speed] jax {label} {dtype}: recompute overhead {ov:+.1f}%")
        # PyTorch.
        if not torch_ok:
            rows.append(_row("speed", "pytorch", model, **common, metric="step_s",
                             status="skipped", note=torch_reason))
            continue
        from tlc_jax.benchmarks import torch_reference as T
        device = "cuda" if gpu else "cpu"
        variants = [("float32", False)] + ([("bfloat16", True)] if gpu else [])
        for dtype, amp in variants:
            naive_s = None
            for mode in ("naive", "efficient"):
                net = T.build(model, depth, mode == "efficient", nc)
                s = T.step_time(net, batch, size, nc, steps=args.steps, device=device,
                                amp_bf16=amp, channels_last=gpu)
                base = dict(common, mode=mode, dtype=dtype)
                note = ("AMP bf16, channels_last" if amp else
                        ("channels_last" if gpu else "")) + f" median of {args.steps}"
                ips = batch / s
                log(f"[speed] pytorch {label} {mode} {dtype}: {s:.3f} s/step, "
                    f"{ips:.1f} images/s")
                rows.append(_row("speed", "pytorch", model, **base, metric="step_s",
                                 value=round(s, 5), unit="s", note=note.strip()))
                rows.append(_row("speed", "pytorch", model, **base, metric="images_per_s",
                                 value=round(ips, 2), unit="images/s"))
                if mode == "naive":
                    naive_s = s
                else:
                    ov = 100 * (s / naive_s - 1)
                    rows.append(_row("speed", "pytorch", model, **base,
                                     metric="overhead_pct", value=round(ov, 1), unit="%",
                                     note="memory_efficient step time vs naive"))


def variants_section(args, rows) -> None:
    """CPU gap probes: the JAX BC step under other XLA flags / bf16, one process each."""
    depth, batch = args.speed_bc_depth, args.speed_bc_batch
    size = 16 if args.quick else 32
    for name in args.xla_variants:
        flags, dtype = XLA_VARIANTS[name]
        env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
        for mode in args.variant_modes:
            pol = "-" if mode == "naive" else (args.policies[0] if args.policies
                                               else "dots_saveable")
            res = run_row(dict(kind="jax_speed", model="densenet_bc", depth=depth,
                               mode=mode, policy=pol, batch=batch, size=size,
                               num_classes=10, steps=args.steps, dtype=dtype),
                          args.row_timeout, env)
            base = dict(depth=depth, batch_size=batch, image_size=size, mode=mode,
                        policy=pol, dtype=dtype)
            note = f"variant {name}: XLA_FLAGS={flags or '(none)'}"
            if "error" in res:
                log(f"[variant] {name} {mode}: failed: {res['error']}")
                rows.append(_row("speed_variant", "jax", "densenet_bc", **base,
                                 metric="images_per_s", status="skipped",
                                 note=f"{note}; {res['error']}"))
                continue
            ips = batch / res["step_s"]
            log(f"[variant] {name} {mode}: {res['step_s']:.3f} s/step, {ips:.1f} "
                f"images/s (compile {res['compile_s']:.0f} s)")
            rows.append(_row("speed_variant", "jax", "densenet_bc", **base,
                             metric="images_per_s", value=round(ips, 2),
                             unit="images/s", note=note))


# ---------------------------------------------------------------- output


def machine_lines(gpu: bool, torch_ok: bool) -> list[str]:
    import jax
    import jaxlib
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"Machine: {cpu}, {os.cpu_count()} logical cores; "
             f"JAX device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform})",
             f"Python {platform.python_version()}, jax {jax.__version__}, "
             f"jaxlib {jaxlib.__version__}"]
    if torch_ok:
        from tlc_jax.benchmarks import torch_reference as T
        import torch
        lines[-1] += f", {T.versions()} ({torch.get_num_threads()} threads)"
    if os.environ.get("XLA_FLAGS"):
        lines.append(f"XLA_FLAGS={os.environ['XLA_FLAGS']}")
    return lines


def fmt_value(r: dict) -> str:
    if r["status"] not in ("measured", "estimated", "quoted") or r["value"] == "":
        return r["status"]
    v = float(r["value"])
    if r["unit"] == "bytes":
        return f"{v / GIB:,.3f} GiB"
    if r["unit"] in ("depth", "count"):
        return f"{int(v):,}"
    if r["unit"] == "ratio":
        return f"{100 * v:.1f}%"
    if r["unit"] == "%":
        return f"{v:+.1f}%"
    if r["unit"] == "s":
        return f"{v:.3f} s"
    if r["unit"] == "flop":
        return f"{v / 1e9:,.1f} GFLOP"
    return f"{v:,.1f} {r['unit']}"


def markdown(rows: list[dict], header: list[str], gpu: bool) -> str:
    out = io.StringIO()
    w = out.write
    w("\n".join(header) + "\n\n")

    def get(**kw):
        for r in rows:
            if all(str(r[k]) == str(v) for k, v in kw.items()):
                return r
        return None

    def cell(**kw):
        r = get(**kw)
        return fmt_value(r) if r else "-"

    # Memory table: one line per configuration.
    configs = []
    for r in rows:
        if r["section"] == "memory":
            key = (r["model"], r["depth"], r["batch_size"], r["image_size"])
            if key not in configs:
                configs.append(key)
    policies = []
    for r in rows:
        if r["section"] == "memory" and r["framework"] == "jax" and r["mode"] == "recompute":
            if r["policy"] not in policies:
                policies.append(r["policy"])
    w("### Saved for the backward pass (fp32)\n\n")
    cols = ["JAX naive"] + [f"JAX recompute {q} (vs naive)" for q in policies] + [
        "PyTorch naive", "PyTorch efficient (vs naive)", "JAX best / PyTorch efficient"]
    w("| model | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols) + "\n")
    for model, depth, batch, size in configs:
        k = dict(section="memory", model=model, depth=depth, batch_size=batch,
                 image_size=size)
        name = (f"DenseNet-BC-{depth} k=12, {size} px" if model == "densenet_bc"
                else f"{model}, {size} px") + f", batch {batch}"
        line = [name, cell(**k, framework="jax", mode="naive", metric="saved_bytes")]
        best = None
        for q in policies:
            s = get(**k, framework="jax", mode="recompute", policy=q, metric="saved_bytes")
            line.append(f"{fmt_value(s)} ({cell(**k, framework='jax', mode='recompute', policy=q, metric='ratio_to_naive')})"
                        if s else "-")
            if s and s["value"] != "":
                best = min(best or s["value"], s["value"])
        line.append(cell(**k, framework="pytorch", mode="naive", metric="saved_bytes"))
        pe = get(**k, framework="pytorch", mode="efficient", metric="saved_bytes")
        ratio = get(**k, framework="pytorch", mode="efficient", metric="ratio_to_naive")
        line.append(fmt_value(pe) + (f" ({fmt_value(ratio)})" if ratio else "")
                    if pe else "-")
        line.append(f"{100 * best / pe['value']:.0f}%"
                    if best and pe and pe["value"] != "" else "-")
        w("| " + " | ".join(line) + " |\n")
    # GPU columns.
    w("\n### Compiled temp bytes and GPU peak after one training step\n\n")
    if not gpu:
        w("GPU peak: not measured (no GPU in this run). Compiled temp bytes: not measured "
          "on CPU (XLA:CPU undoes the recomputation, so they equal naive's), except "
          "the rows below.\n\n")
    tab = [r for r in rows if r["section"] == "memory" and r["status"] == "measured"
           and r["metric"] in ("compiled_temp_bytes", "gpu_peak_bytes")]
    if tab:
        w("| framework | model | depth | mode | policy | metric | value | note |\n"
          "|---|---|---:|---|---|---|---:|---|\n")
        for r in tab:
            w(f"| {r['framework']} | {r['model']} | {r['depth']} | {r['mode']} | "
              f"{r['policy']} | {r['metric']} | {fmt_value(r)} | {r['note']} |\n")
    # Deepest.
    dr = next((r for r in rows if r["section"] == "deepest"), None)
    w(f"\n### Deepest DenseNet-BC (k=12, batch {dr['batch_size'] if dr else '-'}, 32 px)"
      f" within the budget\n\n")
    w("| framework | mode | policy | deepest depth | training state | status | note |\n"
      "|---|---|---|---:|---:|---|---|\n")
    for r in rows:
        if r["section"] == "deepest" and r["metric"] == "deepest_depth":
            tot = get(section="deepest", framework=r["framework"], mode=r["mode"],
                      policy=r["policy"], metric="total_estimate_bytes")
            w(f"| {r['framework']} | {r['mode']} | {r['policy']} | {fmt_value(r)} | "
              f"{fmt_value(tot) if tot else '-'} | {r['status']} | {r['note']} |\n")
    # Quoted.
    w("\n### Quoted, not measured\n\n| source | mode | figure |\n|---|---|---:|\n")
    for r in rows:
        if r["section"] == "quoted":
            w(f"| {r['note']} | {r['mode']} | {fmt_value(r)} |\n")
    # Speed.
    sp = [r for r in rows if r["section"] in ("speed", "speed_variant")
          and r["metric"] in ("step_s", "images_per_s", "overhead_pct", "achieved_gflops",
                              "mfu_pct", "compile_s")]
    if sp:
        w("\n### Training step speed\n\n| framework | model | batch | mode | dtype | "
          "step | images/s | recompute overhead | GFLOP/s | MFU | note |\n"
          "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|\n")
        seen = []
        for r in sp:
            key = (r["section"], r["framework"], r["model"], r["depth"], r["batch_size"],
                   r["mode"], r["policy"], r["dtype"], r["note"] if r["section"] ==
                   "speed_variant" else "")
            if key in seen:
                continue
            seen.append(key)
            k = dict(section=r["section"], framework=r["framework"], model=r["model"],
                     depth=r["depth"], mode=r["mode"], dtype=r["dtype"])
            if r["section"] == "speed_variant":
                k["note"] = r["note"]
            name = (f"BC-{r['depth']}" if r["model"] == "densenet_bc" else r["model"]) + \
                f" {r['image_size']}px"
            mode = r["mode"] + (f" ({r['policy']})" if r["policy"] != "-" else "")
            ips_row = get(**k, metric="images_per_s")
            w(f"| {r['framework']} | {name} | {r['batch_size']} | {mode} | {r['dtype']} | "
              f"{cell(**k, metric='step_s')} | "
              f"{fmt_value(ips_row) if ips_row else '-'} | "
              f"{cell(**k, metric='overhead_pct')} | "
              f"{cell(**k, metric='achieved_gflops')} | "
              f"{cell(**k, metric='mfu_pct')} | "
              f"{r['note'] if r['section'] == 'speed_variant' else ''} |\n")
    return out.getvalue()


def plot(rows: list[dict], path: Path, budget_gib: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list] = {}
    for r in rows:
        if (r["section"] == "memory" and r["model"] == "densenet_bc"
                and r["metric"] == "saved_bytes" and r["status"] == "measured"):
            label = (f"JAX {r['mode']}" + (f" ({r['policy']})" if r["policy"] != "-"
                                           else "")
                     if r["framework"] == "jax" else f"PyTorch {r['mode']}")
            series.setdefault(label, []).append((int(r["depth"]), r["value"] / GIB))
    styles = {"JAX naive": "o-", "PyTorch naive": "s--", "PyTorch efficient": "s--"}
    for label, pts in series.items():
        pts.sort()
        ax.plot(*zip(*pts), styles.get(label, "o-"), label=label)
    quoted = [r for r in rows if r["section"] == "quoted" and r["metric"] == "deepest_depth"]
    for i, r in enumerate(quoted):
        ax.plot([r["value"]], [budget_gib], "k*" if r["mode"] == "efficient" else "kx",
                markersize=9)
        ax.annotate(f"{r['note'].split(':')[0]}, {r['mode']}: {r['value']}",
                    (r["value"], budget_gib), fontsize=6.5,
                    xytext=(4, -12 - 9 * i), textcoords="offset points")
    for r in rows:
        if r["section"] == "deepest" and r["metric"] == "deepest_depth" and \
                r["framework"] == "jax" and r["value"]:
            ax.plot([r["value"]], [budget_gib], "v", markersize=8,
                    label=f"JAX {r['mode']}"
                    f"{' ' + r['policy'] if r['policy'] != '-' else ''}: deepest within budget "
                    f"(estimate, total state) {r['value']}")
    ax.axhline(budget_gib, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xscale("log")
    batch = next((r["batch_size"] for r in rows if r["section"] == "memory"), "?")
    ax.set_xlabel(f"DenseNet-BC depth (k=12, batch {batch}, 32 px, fp32)")
    ax.set_ylabel("GiB kept for backward; markers at the budget line: depth limits")
    ax.set_title("Saved for backward vs depth: JAX (traced), PyTorch (saved-tensor hooks);"
                 "\nquoted references (black) are not measured", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], md: str, budget: float) -> None:
    from tlc_jax.fileio import atomic_file
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "results.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    with atomic_file(out / "results.md") as tmp:
        tmp.write_text(md)
    with atomic_file(out / "memory_vs_depth.png") as tmp:
        plot(rows, tmp, budget)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._row:
        row_main(json.loads(args._row))
        return 0
    from tlc_jax.benchmarks.torch_reference import torch_status
    torch_ok, torch_reason = (torch_status() if args.torch else
                              (False, "PyTorch rows skipped: --no-torch"))
    if not torch_ok:
        log(torch_reason)
    gpu = on_gpu()
    header = machine_lines(gpu, torch_ok)
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

    measured = memory_section(args, rows, gpu, torch_ok, torch_reason)
    for q in QUOTED:
        rows.append(_row("quoted", status="quoted", unit=q["unit"], batch_size=64,
                         image_size=32, **{k: v for k, v in q.items() if k != "unit"}))
    checkpoint("memory, quoted")
    # Speed before the deepest search: on a GPU the search's measured check compiles
    # very deep networks, the slowest part of a time-boxed suite.
    if args.speed:
        speed_section(args, rows, gpu, torch_ok, torch_reason)
        checkpoint("memory, quoted, speed")
    if args.deepest:
        deepest_section(args, rows, measured, gpu)
        checkpoint("memory, quoted, speed, deepest")
    if args.xla_variants:
        variants_section(args, rows)
    md = checkpoint("all")
    print(md, flush=True)
    log(f"Wrote {out / 'results.csv'}, {out / 'results.md'}, "
        f"{out / 'memory_vs_depth.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
