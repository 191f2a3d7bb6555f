"""What the memory / speed benchmark writes: `results.csv` (its rows), `results.md`
(a header naming the machine and command, then one markdown table per section) and
`memory_vs_depth.png` (saved-for-backward bytes against DenseNet-BC depth, with the
deepest depths and the quoted references at the budget line). Each file is written
atomically, so a run cut short leaves the last complete version.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import os
import platform
from pathlib import Path

from tlc_jax.benchmarks.result_rows import FIELDS, GIB


def machine_lines(torch_ok: bool) -> list[str]:
    """The report's header: date, CPU and JAX device, versions, XLA_FLAGS if set."""
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
    """A row's value for a table cell, in its unit (GiB for bytes), or its status."""
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


class _Lookup:
    """Finds rows by field values (compared as strings, as they read in the CSV)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def get(self, **kw) -> dict | None:
        """The first row whose fields equal `kw`, or None."""
        for r in self.rows:
            if all(str(r[k]) == str(v) for k, v in kw.items()):
                return r
        return None

    def cell(self, **kw) -> str:
        """That row's formatted value, or "-" when there is none."""
        r = self.get(**kw)
        return fmt_value(r) if r else "-"


def markdown(rows: list[dict], header: list[str], gpu: bool) -> str:
    """results.md: the header lines, then the saved-for-backward, compiled / GPU peak,
    deepest, quoted and (when measured) speed tables."""
    find = _Lookup(rows)
    out = io.StringIO()
    out.write("\n".join(header) + "\n\n")
    _saved_table(out, rows, find)
    _device_table(out, rows, gpu)
    _deepest_table(out, rows, find)
    _quoted_table(out, rows)
    _speed_table(out, rows, find)
    return out.getvalue()


def _saved_table(out, rows: list[dict], find: _Lookup) -> None:
    """One line per memory configuration: JAX naive, each recompute policy (and its
    ratio to naive), PyTorch naive / efficient, and JAX's best against PyTorch
    efficient."""
    configs, policies = [], []
    for r in rows:
        if r["section"] != "memory":
            continue
        key = (r["model"], r["depth"], r["batch_size"], r["image_size"])
        if key not in configs:
            configs.append(key)
        if r["framework"] == "jax" and r["mode"] == "recompute" and \
                r["policy"] not in policies:
            policies.append(r["policy"])
    out.write("### Saved for the backward pass (fp32)\n\n")
    cols = ["JAX naive"] + [f"JAX recompute {q} (vs naive)" for q in policies] + [
        "PyTorch naive", "PyTorch efficient (vs naive)", "JAX best / PyTorch efficient"]
    out.write("| model | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols) + "\n")
    for model, depth, batch, size in configs:
        k = dict(section="memory", model=model, depth=depth, batch_size=batch,
                 image_size=size)
        name = (f"DenseNet-BC-{depth} k=12, {size} px" if model == "densenet_bc"
                else f"{model}, {size} px") + f", batch {batch}"
        line = [name, find.cell(**k, framework="jax", mode="naive", metric="saved_bytes")]
        best = None
        for q in policies:
            s = find.get(**k, framework="jax", mode="recompute", policy=q,
                         metric="saved_bytes")
            ratio = find.cell(**k, framework="jax", mode="recompute", policy=q,
                              metric="ratio_to_naive")
            line.append(f"{fmt_value(s)} ({ratio})" if s else "-")
            if s and s["value"] != "":
                best = min(best or s["value"], s["value"])
        line.append(find.cell(**k, framework="pytorch", mode="naive", metric="saved_bytes"))
        pe = find.get(**k, framework="pytorch", mode="efficient", metric="saved_bytes")
        ratio = find.get(**k, framework="pytorch", mode="efficient", metric="ratio_to_naive")
        line.append(fmt_value(pe) + (f" ({fmt_value(ratio)})" if ratio else "")
                    if pe else "-")
        line.append(f"{100 * best / pe['value']:.0f}%"
                    if best and pe and pe["value"] != "" else "-")
        out.write("| " + " | ".join(line) + " |\n")


def _device_table(out, rows: list[dict], gpu: bool) -> None:
    """The measured compiled temp bytes and GPU peaks, or why there are none."""
    out.write("\n### Compiled temp bytes and GPU peak after one training step\n\n")
    if not gpu:
        out.write("GPU peak: not measured (no GPU in this run). Compiled temp bytes: not "
                  "measured on CPU (XLA:CPU undoes the recomputation, so they equal "
                  "naive's), except the rows below.\n\n")
    tab = [r for r in rows if r["section"] == "memory" and r["status"] == "measured"
           and r["metric"] in ("compiled_temp_bytes", "gpu_peak_bytes")]
    if tab:
        out.write("| framework | model | depth | mode | policy | metric | value | note |\n"
                  "|---|---|---:|---|---|---|---:|---|\n")
        for r in tab:
            out.write(f"| {r['framework']} | {r['model']} | {r['depth']} | {r['mode']} | "
                      f"{r['policy']} | {r['metric']} | {fmt_value(r)} | {r['note']} |\n")


def _deepest_table(out, rows: list[dict], find: _Lookup) -> None:
    """Deepest DenseNet-BC within the budget per framework and mode, with the
    training-state estimate at that depth."""
    dr = next((r for r in rows if r["section"] == "deepest"), None)
    out.write(f"\n### Deepest DenseNet-BC (k=12, batch {dr['batch_size'] if dr else '-'}, "
              f"32 px) within the budget\n\n")
    out.write("| framework | mode | policy | deepest depth | training state | status | "
              "note |\n|---|---|---|---:|---:|---|---|\n")
    for r in rows:
        if r["section"] == "deepest" and r["metric"] == "deepest_depth":
            tot = find.get(section="deepest", framework=r["framework"], mode=r["mode"],
                           policy=r["policy"], metric="total_estimate_bytes")
            out.write(f"| {r['framework']} | {r['mode']} | {r['policy']} | "
                      f"{fmt_value(r)} | {fmt_value(tot) if tot else '-'} | "
                      f"{r['status']} | {r['note']} |\n")


def _quoted_table(out, rows: list[dict]) -> None:
    """The published figures, marked as quoted."""
    out.write("\n### Quoted, not measured\n\n| source | mode | figure |\n|---|---|---:|\n")
    for r in rows:
        if r["section"] == "quoted":
            out.write(f"| {r['note']} | {r['mode']} | {fmt_value(r)} |\n")


def _speed_table(out, rows: list[dict], find: _Lookup) -> None:
    """One line per timed step (framework, model, mode, dtype; each XLA variant on
    its own line): step time, images/s, overhead, GFLOP/s, MFU."""
    sp = [r for r in rows if r["section"] in ("speed", "speed_variant")
          and r["metric"] in ("step_s", "images_per_s", "overhead_pct", "achieved_gflops",
                              "mfu_pct", "compile_s")]
    if not sp:
        return
    out.write("\n### Training step speed\n\n| framework | model | batch | mode | dtype | "
              "step | images/s | recompute overhead | GFLOP/s | MFU | note |\n"
              "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|\n")
    seen = []
    for r in sp:
        variant = r["section"] == "speed_variant"
        key = (r["section"], r["framework"], r["model"], r["depth"], r["batch_size"],
               r["mode"], r["policy"], r["dtype"], r["note"] if variant else "")
        if key in seen:
            continue
        seen.append(key)
        k = dict(section=r["section"], framework=r["framework"], model=r["model"],
                 depth=r["depth"], mode=r["mode"], dtype=r["dtype"])
        if variant:
            k["note"] = r["note"]
        name = (f"BC-{r['depth']}" if r["model"] == "densenet_bc" else r["model"]) + \
            f" {r['image_size']}px"
        mode = r["mode"] + (f" ({r['policy']})" if r["policy"] != "-" else "")
        ips_row = find.get(**k, metric="images_per_s")
        out.write(f"| {r['framework']} | {name} | {r['batch_size']} | {mode} | "
                  f"{r['dtype']} | {find.cell(**k, metric='step_s')} | "
                  f"{fmt_value(ips_row) if ips_row else '-'} | "
                  f"{find.cell(**k, metric='overhead_pct')} | "
                  f"{find.cell(**k, metric='achieved_gflops')} | "
                  f"{find.cell(**k, metric='mfu_pct')} | "
                  f"{r['note'] if variant else ''} |\n")


def plot(rows: list[dict], path: Path, budget_gib: float) -> None:
    """memory_vs_depth.png: saved bytes against DenseNet-BC depth per framework and
    mode (log-log), the budget line, JAX's deepest estimates and the quoted limits."""
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
    """results.csv, results.md and memory_vs_depth.png in `out`, each atomically."""
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
