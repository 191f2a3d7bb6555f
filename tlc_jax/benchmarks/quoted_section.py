"""Section 2 of the memory / speed benchmark: published figures, quoted, not measured.

They are set beside the measured rows (deepest depth within 12 GB, recompute time
overhead) and marked in the plot; their rows have status "quoted".
"""

from __future__ import annotations

from tlc_jax.benchmarks.result_rows import row

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


def quoted_section(rows: list[dict]) -> None:
    """Appends the quoted figures (DenseNet-BC k=12, batch 64, 32 px)."""
    for q in QUOTED:
        rows.append(row("quoted", status="quoted", unit=q["unit"], batch_size=64,
                        image_size=32, **{k: v for k, v in q.items() if k != "unit"}))
