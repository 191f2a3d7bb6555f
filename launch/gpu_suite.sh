#!/usr/bin/env bash
# The GPU parts of the memory / speed benchmark (issue 5) in one command, one folder,
# within about 8 minutes on one GPU (H100/H200 class); no network.
#
#   launch/gpu_suite.sh [OUT_DIR]            # default: gpu_suite_<UTC date-time>
#   launch/gpu_suite.sh --dry-run [OUT_DIR]  # print what would run; runs nothing
#
# Packages, installed ahead (no network at run time):
#   this package with its GPU extra: pip install -e '.[cuda12]'  (jax[cuda12], jaxlib,
#     the nvidia-* CUDA 12 wheels, flax, optax, numpy, absl-py), plus
#   torch and torchvision built for the same CUDA (e.g. from the cu12x wheel index),
#   matplotlib (the plot).
#
# What it writes into OUT_DIR: results.csv, results.md, memory_vs_depth.png (rewritten
# after each section, so a run cut short keeps what it measured), run.log, env.txt.
# Each GPU peak is measured in its own process (the allocator's peak is per process),
# with XLA's remat pass disabled for the JAX naive rows; memory preallocation is off so
# those processes can share the GPU with the parent.
set -euo pipefail
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
out=${1:-gpu_suite_$(date -u +%Y%m%dT%H%M%SZ)}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Python: $PYTHON, else python, else python3 (some GPU images name only python3).
py=${PYTHON:-$(command -v python || command -v python3)}
# Order and caps from the first run on an H200 (2026-11-30), which spent its 8 minutes
# compiling BC-1000 rows: step times first (--speed_first), and no GPU-peak row for a
# configuration estimated above 24 GiB (naive BC-1000 needs ~142 GiB; the deepest
# search reports naive's limit). Each progress line carries the seconds since start.
cmd=("$py" -m tlc_jax.benchmarks.memory_speed "--out=$out" --speed_first
     --gpu_peak_max_gib=24
     --depths=100,1000 --batch_size=64
     --imagenet_models=densenet121 --imagenet_batch=64
     --policies=dots_saveable,nothing_saveable
     --torch_max_depth=1000 --torch_max_ram_gib=60 --row_timeout=200
     --speed_bc_batch=64 --speed_imagenet_batch=64 --steps=10
     --no-deepest_check --no-deepest_gpu_check --budget_gib=12)
if (( dry_run )); then
  echo "would run (timeout 480 s): ${cmd[*]}"
  exit 0
fi
mkdir -p "$out"
{ date -u; nvidia-smi || true; "$py" -c 'import jax; print(jax.__version__, jax.devices())'
  "$py" -c 'import torch; print(torch.__version__, torch.version.cuda)' || true
} > "$out/env.txt" 2>&1
# 480 s for the whole run; rows that would not fit the device are skipped up front,
# each subprocess row has its own 200 s limit.
timeout 480 "${cmd[@]}" 2>&1 | tee "$out/run.log"
