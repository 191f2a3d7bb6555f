"""Section 1 of the memory / speed benchmark: memory per configuration and mode.

Configurations: DenseNet-BC (k=12, 32 px) at each --depths and the ImageNet DenseNets
at 224 px. Per configuration:

- JAX, naive and recompute under each policy: bytes kept for the backward pass
  (traced: `jax_measure.jax_traced`), their ratio to naive; XLA's compiled temp bytes
  and the GPU allocator's peak after one step (on a GPU, one fresh process per row,
  XLA's remat pass disabled for naive; on CPU compiled only at --cpu_compile_depths).
- PyTorch, memory_efficient False / True: bytes autograd saves over one real forward
  pass (a fresh process per row; skipped when estimated too big for RAM, or deeper
  than --torch_max_depth) and, on a GPU, the peak of one SGD step.
"""

from __future__ import annotations

import time

from tlc_jax.benchmarks.isolated import run_row
from tlc_jax.benchmarks.jax_measure import (device_bytes, jax_model, jax_traced,
                                            total_estimate)
from tlc_jax.benchmarks.result_rows import GIB, Config, log, row


def memory_section(args, rows: list[dict], gpu: bool, torch_ok: bool,
                   torch_reason: str, checkpoint=None) -> dict:
    """Section 1; returns the traced JAX figures keyed by (model, depth, mode, policy)
    and the measured PyTorch ones keyed by (model, depth, mode). `checkpoint()`, if
    given, is called after each configuration (a time-boxed run keeps what it
    measured)."""
    traced: dict[tuple, dict[str, int]] = {}
    torch_measured: dict[tuple, dict] = {}
    modes = [("naive", "-")] + [("recompute", q) for q in args.policies]
    configs = [Config("densenet_bc", d, args.batch_size, 32) for d in args.depths]
    configs += [Config(m, None, args.imagenet_batch, 224) for m in args.imagenet_models]
    gpu_peak = gpu if args.gpu_peak is None else args.gpu_peak
    if gpu_peak and not gpu:
        log("--gpu_peak asked for, but no GPU: GPU peaks are not measured.")
        gpu_peak = False
    for cfg in configs:
        naive_saved = None
        for mode, policy in modes:
            t = _jax_saved_rows(rows, cfg, mode, policy, naive_saved)
            traced[(cfg.model, cfg.depth, mode, policy)] = t
            if mode == "naive":
                naive_saved = t["saved_bytes"]
            if gpu_peak:
                _jax_gpu_rows(args, rows, cfg, mode, policy, t)
            else:
                _jax_no_gpu_rows(args, rows, cfg, mode, policy, gpu)
        for mode in ("naive", "efficient"):
            if not torch_ok:
                rows.append(row("memory", "pytorch", cfg.model, **cfg.common, mode=mode,
                                metric="saved_bytes", status="skipped", note=torch_reason))
                continue
            jax_same = traced[(cfg.model, cfg.depth,
                               "naive" if mode == "naive" else "recompute",
                               "-" if mode == "naive" else
                               (args.policies[0] if args.policies else "-"))]
            if not _torch_saved_rows(args, rows, cfg, mode, jax_same, torch_measured, gpu):
                continue
            _torch_peak_rows(args, rows, cfg, mode, gpu, gpu_peak)
        if checkpoint is not None:
            checkpoint()
    return {"jax": traced, "torch": torch_measured}


def _jax_saved_rows(rows, cfg: Config, mode: str, policy: str,
                    naive_saved: int | None) -> dict[str, int]:
    """Traces one JAX mode; rows: saved bytes and arrays, parameter bytes, ratio to
    naive (1 for naive itself). Returns the traced figures."""
    start = time.perf_counter()
    t = jax_traced(cfg.model, cfg.depth, mode, policy, cfg.batch, cfg.size)
    secs = time.perf_counter() - start
    if mode == "naive":
        naive_saved = t["saved_bytes"]
    log(f"[memory] jax {cfg.label} {mode}/{policy}: saved "
        f"{t['saved_bytes'] / GIB:.3f} GiB ({t['saved_arrays']} arrays), "
        f"traced in {secs:.1f} s")
    base = dict(cfg.common, mode=mode, policy=policy)
    rows.append(row("memory", "jax", cfg.model, **base, metric="saved_bytes",
                    value=t["saved_bytes"], unit="bytes",
                    note=f"traced (saved_residuals), {secs:.1f} s"))
    rows.append(row("memory", "jax", cfg.model, **base, metric="saved_arrays",
                    value=t["saved_arrays"], unit="count"))
    rows.append(row("memory", "jax", cfg.model, **base, metric="param_bytes",
                    value=t["param_bytes"], unit="bytes"))
    if naive_saved:
        rows.append(row("memory", "jax", cfg.model, **base, metric="ratio_to_naive",
                        value=round(t["saved_bytes"] / naive_saved, 4), unit="ratio"))
    return t


def _jax_gpu_rows(args, rows, cfg: Config, mode: str, policy: str,
                  t: dict[str, int]) -> None:
    """Compiled temp bytes and the GPU peak of one JAX mode, in a fresh process.
    A configuration whose training state is estimated past the device's memory, or
    past --gpu_peak_max_gib, is not attempted (compiling it can take minutes and it
    cannot run): its rows say "not measured" and why."""
    base = dict(cfg.common, mode=mode, policy=policy)
    limit, what = device_bytes(), "the device's memory"
    if args.gpu_peak_max_gib is not None and args.gpu_peak_max_gib * GIB < limit:
        limit, what = args.gpu_peak_max_gib * GIB, f"--gpu_peak_max_gib={args.gpu_peak_max_gib:g}"
    if total_estimate(t) > limit:
        res = {"error": f"skipped: estimated {total_estimate(t) / GIB:.0f} GiB exceeds "
                        f"{what}"}
    else:
        res = run_row(dict(kind="jax_peak", model=cfg.model, depth=cfg.depth, mode=mode,
                           policy=policy, batch=cfg.batch, size=cfg.size),
                      args.row_timeout)
    if "error" in res:
        for metric in ("compiled_temp_bytes", "gpu_peak_bytes"):
            rows.append(row("memory", "jax", cfg.model, **base, metric=metric,
                            status="not measured", note=res["error"]))
        log(f"[memory] jax {cfg.label} {mode}/{policy}: GPU row failed: {res['error']}")
        return
    note = "XLA remat pass disabled" if mode == "naive" else ""
    rows.append(row("memory", "jax", cfg.model, **base, metric="compiled_temp_bytes",
                    value=res["compiled"].get("temp", ""), unit="bytes", note=note))
    rows.append(row("memory", "jax", cfg.model, **base, metric="gpu_peak_bytes",
                    value=res["peak"] or "", unit="bytes", note=note,
                    status="measured" if res["peak"] else "not measured"))
    log(f"[memory] jax {cfg.label} {mode}/{policy}: GPU peak "
        f"{(res['peak'] or 0) / GIB:.3f} GiB")


def _jax_no_gpu_rows(args, rows, cfg: Config, mode: str, policy: str,
                     gpu: bool) -> None:
    """Without GPU peaks: XLA:CPU's compiled temp bytes at --cpu_compile_depths (to
    show they equal naive's), else rows saying why nothing was measured."""
    base = dict(cfg.common, mode=mode, policy=policy)
    if not gpu and cfg.depth in args.cpu_compile_depths:
        from tlc_jax.memory import compiled_memory
        c = compiled_memory(jax_model(cfg.model, cfg.depth, mode, policy), cfg.batch,
                            cfg.size)
        rows.append(row("memory", "jax", cfg.model, **base, metric="compiled_temp_bytes",
                        value=c.get("temp", ""), unit="bytes",
                        note="XLA:CPU (undoes recompute)"))
        log(f"[memory] jax {cfg.label} {mode}/{policy}: XLA:CPU compiled temp "
            f"{c.get('temp', 0) / GIB:.3f} GiB")
    else:
        rows.append(row(
            "memory", "jax", cfg.model, **base, metric="compiled_temp_bytes",
            status="not measured",
            note=("CPU: XLA:CPU undoes the recomputation (CSE), so its temp bytes equal "
                  "naive's; see --cpu_compile_depths"
                  if not gpu else "skipped (--no-gpu_peak)")))
    rows.append(row("memory", "jax", cfg.model, **base, metric="gpu_peak_bytes",
                    status="not measured",
                    note="no GPU" if not gpu else "skipped (--no-gpu_peak)"))


def _torch_skip_reason(args, cfg: Config, mode: str, jax_same: dict[str, int],
                       torch_measured: dict[tuple, dict]) -> str:
    """Why a PyTorch forward pass is not run ('' when it is): too deep for the CPU
    time, or estimated to keep more RAM than allowed. The estimate is the JAX figure
    of the matching mode, scaled by the PyTorch / JAX ratio seen at the previous
    measured depth plus 10% (1.2 if none)."""
    ratio = 1.2
    prev = [v for k, v in torch_measured.items() if k[0] == cfg.model and k[2] == mode]
    if prev:
        ratio = max(p["ratio"] for p in prev) * 1.1
    est = jax_same["saved_bytes"] * ratio + 2 * jax_same["param_bytes"]
    if cfg.depth and cfg.depth > args.torch_max_depth:
        return f"skipped: depth > --torch_max_depth={args.torch_max_depth} (forward time)"
    if est > args.torch_max_ram_gib * GIB:
        return (f"skipped: the forward pass would keep an estimated {est / GIB:.1f} GiB "
                f"> --torch_max_ram_gib={args.torch_max_ram_gib:g}")
    return ""


def _torch_saved_rows(args, rows, cfg: Config, mode: str, jax_same: dict[str, int],
                      torch_measured: dict[tuple, dict], gpu: bool) -> bool:
    """PyTorch's saved-for-backward rows of one mode, measured in a fresh process (the
    CPU allocator keeps freed pages: a few big forward passes in one process would add
    up). Records the measurement in `torch_measured`. False when the measurement
    failed (the mode's peak is then not attempted either)."""
    base = dict(cfg.common, mode=mode)
    reason = _torch_skip_reason(args, cfg, mode, jax_same, torch_measured)
    if reason:
        log(f"[memory] pytorch {cfg.label} {mode}: {reason}")
        rows.append(row("memory", "pytorch", cfg.model, **base, metric="saved_bytes",
                        status="skipped", note=reason))
        return True
    r = run_row(dict(kind="torch_saved", model=cfg.model, depth=cfg.depth, mode=mode,
                     batch=cfg.batch, size=cfg.size, device="cuda" if gpu else "cpu"),
                args.row_timeout)
    if "error" in r:
        log(f"[memory] pytorch {cfg.label} {mode}: failed: {r['error']}")
        rows.append(row("memory", "pytorch", cfg.model, **base, metric="saved_bytes",
                        status="skipped", note=r["error"]))
        return False
    torch_measured[(cfg.model, cfg.depth, mode)] = dict(
        r, ratio=r["saved_bytes"] / max(jax_same["saved_bytes"], 1))
    log(f"[memory] pytorch {cfg.label} {mode}: saved {r['saved_bytes'] / GIB:.3f} GiB "
        f"({r['saved_storages']} storages), forward {r['forward_s']:.1f} s")
    rows.append(row("memory", "pytorch", cfg.model, **base, metric="saved_bytes",
                    value=r["saved_bytes"], unit="bytes",
                    note=f"saved_tensors_hooks, {r['device']} forward "
                    f"{r['forward_s']:.1f} s"))
    rows.append(row("memory", "pytorch", cfg.model, **base, metric="saved_arrays",
                    value=r["saved_storages"], unit="count", note="distinct storages"))
    rows.append(row("memory", "pytorch", cfg.model, **base, metric="param_bytes",
                    value=r["param_bytes"], unit="bytes"))
    naive = torch_measured.get((cfg.model, cfg.depth, "naive"))
    if mode == "efficient" and naive:
        rows.append(row("memory", "pytorch", cfg.model, **base, metric="ratio_to_naive",
                        value=round(r["saved_bytes"] / naive["saved_bytes"], 4),
                        unit="ratio"))
    return True


def _torch_peak_rows(args, rows, cfg: Config, mode: str, gpu: bool,
                     gpu_peak: bool) -> None:
    """PyTorch's GPU peak over one SGD step (a fresh process), or why not measured."""
    base = dict(cfg.common, mode=mode)
    if not gpu_peak:
        rows.append(row("memory", "pytorch", cfg.model, **base, metric="gpu_peak_bytes",
                        status="not measured",
                        note="no GPU" if not gpu else "skipped (--no-gpu_peak)"))
        return
    res = run_row(dict(kind="torch_peak", model=cfg.model, depth=cfg.depth, mode=mode,
                       batch=cfg.batch, size=cfg.size), args.row_timeout)
    if "error" in res:
        rows.append(row("memory", "pytorch", cfg.model, **base, metric="gpu_peak_bytes",
                        status="not measured", note=res["error"]))
        return
    rows.append(row("memory", "pytorch", cfg.model, **base, metric="gpu_peak_bytes",
                    value=res["peak"], unit="bytes", note="torch.cuda.max_memory_allocated"))
    log(f"[memory] pytorch {cfg.label} {mode}: GPU peak {res['peak'] / GIB:.3f} GiB")
