"""Section 4 of the memory / speed benchmark: training-step time, naive against
recompute, JAX against PyTorch.

- JAX: the trainer's jitted step (`jax_measure.jax_train_step`) for DenseNet-BC and,
  if asked, an ImageNet DenseNet; float32, plus bfloat16 on a GPU with model FLOP
  utilisation against the device's dense bf16 peak.
- PyTorch: forward / backward / SGD-with-momentum steps of torchvision's DenseNet
  (`torch_reference.step_time`); on a GPU also AMP bfloat16, channels_last.
- XLA variants (`variants_section`, opt-in): the JAX DenseNet-BC step under other
  XLA_FLAGS or bfloat16, one fresh process each (XLA_FLAGS are read at start-up).
"""

from __future__ import annotations

import os

from tlc_jax.benchmarks.isolated import run_row
from tlc_jax.benchmarks.jax_measure import jax_model, jax_train_step
from tlc_jax.benchmarks.result_rows import Config, log, row

# Dense bf16 tensor-core peak FLOP/s by device kind, for model FLOP utilisation.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
                   "A10": 125e12, "V100": 125e12}

# XLA_FLAGS / dtype of each CPU gap variant (run in a subprocess each).
XLA_VARIANTS = {
    "default": ("", "float32"),
    "bf16": ("", "bfloat16"),
    "no_multi_thread_eigen": ("--xla_cpu_multi_thread_eigen=false", "float32"),
    "fast_math": ("--xla_cpu_enable_fast_math=true", "float32"),
    "onednn": ("--xla_cpu_use_onednn=true", "float32"),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "float32"),
}


def speed_section(args, rows, gpu: bool, torch_ok: bool, torch_reason: str,
                  checkpoint=None) -> None:
    """Section 4: per speed configuration, the JAX rows, then the PyTorch rows (or one
    row saying why PyTorch was skipped); `checkpoint()`, if given, after each
    configuration."""
    configs = [Config("densenet_bc", args.speed_bc_depth, args.speed_bc_batch,
                      16 if args.quick else 32)]
    if args.speed_imagenet_model:
        configs.append(Config(args.speed_imagenet_model, None,
                              args.speed_imagenet_batch or (64 if gpu else 8), 224))
    for cfg in configs:
        for dtype in ["float32"] + (["bfloat16"] if gpu else []):
            _jax_speed_rows(args, rows, gpu, cfg, dtype)
        if not torch_ok:
            rows.append(row("speed", "pytorch", cfg.model, **cfg.common, metric="step_s",
                            status="skipped", note=torch_reason))
        else:
            _torch_speed_rows(args, rows, gpu, cfg)
        if checkpoint is not None:
            checkpoint()


def _device_peak_flops(gpu: bool) -> float | None:
    """The GPU's dense bf16 peak FLOP/s, if it is a known kind."""
    if not gpu:
        return None
    import jax
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)


def _jax_speed_rows(args, rows, gpu: bool, cfg: Config, dtype: str) -> None:
    """Naive then recompute (first policy) at one dtype: step time, images/s, compile
    time, FLOPs, GFLOP/s, MFU (GPU bf16) and recompute's overhead over naive."""
    policy = args.policies[0] if args.policies else "dots_saveable"
    peak = _device_peak_flops(gpu)
    naive_s = None
    for mode in ("naive", "recompute"):
        pol = "-" if mode == "naive" else policy
        r = jax_train_step(jax_model(cfg.model, cfg.depth, mode, pol, dtype), cfg.batch,
                           cfg.size, cfg.classes, steps=args.steps)
        base = dict(cfg.common, mode=mode, policy=pol, dtype=dtype)
        ips = cfg.batch / r["step_s"]
        log(f"[speed] jax {cfg.label} {mode}/{pol} {dtype}: {r['step_s']:.3f} s/step, "
            f"{ips:.1f} images/s (compile {r['compile_s']:.0f} s)")
        rows.append(row("speed", "jax", cfg.model, **base, metric="step_s",
                        value=round(r["step_s"], 5), unit="s",
                        note=f"median of {args.steps}"))
        rows.append(row("speed", "jax", cfg.model, **base, metric="images_per_s",
                        value=round(ips, 2), unit="images/s"))
        rows.append(row("speed", "jax", cfg.model, **base, metric="compile_s",
                        value=round(r["compile_s"], 2), unit="s"))
        if "flops_per_step" in r:
            rows.append(row("speed", "jax", cfg.model, **base, metric="flops_per_step",
                            value=r["flops_per_step"], unit="flop",
                            note="XLA cost_analysis"))
            rows.append(row("speed", "jax", cfg.model, **base, metric="achieved_gflops",
                            value=round(r["flops_per_step"] / r["step_s"] / 1e9, 2),
                            unit="GFLOP/s"))
        if gpu and dtype == "bfloat16" and peak and "flops_per_step" in r:
            rows.append(row("speed", "jax", cfg.model, **base, metric="mfu_pct",
                            value=round(100 * r["flops_per_step"] / r["step_s"] / peak,
                                        2), unit="%",
                            note=f"dense bf16 peak {peak / 1e12:g} TFLOP/s"))
        else:
            rows.append(row("speed", "jax", cfg.model, **base, metric="mfu_pct",
                            status="not measured", note="GPU bf16 only" if not gpu
                            else "float32 / unknown peak"))
        if mode == "naive":
            naive_s = r["step_s"]
        else:
            ov = 100 * (r["step_s"] / naive_s - 1)
            rows.append(row("speed", "jax", cfg.model, **base, metric="overhead_pct",
                            value=round(ov, 1), unit="%",
                            note="recompute step time vs naive"))
            log(f"[speed] jax {cfg.label} {dtype}: recompute overhead {ov:+.1f}%")


def _torch_speed_rows(args, rows, gpu: bool, cfg: Config) -> None:
    """PyTorch memory_efficient False then True: step time, images/s and the efficient
    mode's overhead; float32 (channels_last on a GPU), plus AMP bf16 on a GPU."""
    from tlc_jax.benchmarks import torch_reference as T
    device = "cuda" if gpu else "cpu"
    for dtype, amp in [("float32", False)] + ([("bfloat16", True)] if gpu else []):
        naive_s = None
        for mode in ("naive", "efficient"):
            net = T.build(cfg.model, cfg.depth, mode == "efficient", cfg.classes)
            s = T.step_time(net, cfg.batch, cfg.size, cfg.classes, steps=args.steps,
                            device=device, amp_bf16=amp, channels_last=gpu)
            base = dict(cfg.common, mode=mode, dtype=dtype)
            note = ("AMP bf16, channels_last" if amp else
                    ("channels_last" if gpu else "")) + f" median of {args.steps}"
            ips = cfg.batch / s
            log(f"[speed] pytorch {cfg.label} {mode} {dtype}: {s:.3f} s/step, "
                f"{ips:.1f} images/s")
            rows.append(row("speed", "pytorch", cfg.model, **base, metric="step_s",
                            value=round(s, 5), unit="s", note=note.strip()))
            rows.append(row("speed", "pytorch", cfg.model, **base, metric="images_per_s",
                            value=round(ips, 2), unit="images/s"))
            if mode == "naive":
                naive_s = s
            else:
                ov = 100 * (s / naive_s - 1)
                rows.append(row("speed", "pytorch", cfg.model, **base,
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
                rows.append(row("speed_variant", "jax", "densenet_bc", **base,
                                metric="images_per_s", status="skipped",
                                note=f"{note}; {res['error']}"))
                continue
            ips = batch / res["step_s"]
            log(f"[variant] {name} {mode}: {res['step_s']:.3f} s/step, {ips:.1f} "
                f"images/s (compile {res['compile_s']:.0f} s)")
            rows.append(row("speed_variant", "jax", "densenet_bc", **base,
                            metric="images_per_s", value=round(ips, 2),
                            unit="images/s", note=note))
