#!/usr/bin/env bash
# Measured GPU memory of one DenseNet-BC (k=12, 32 px) training step, naive vs recompute
# (dots_saveable, nothing_saveable), JAX and - where torch is installed - PyTorch: the
# memory section of the memory / speed benchmark for one depth. Each GPU peak is taken
# in its own process (the allocator's peak is per process), with XLA's remat pass
# disabled for the JAX naive row. Needs the package installed with the cuda12 extra;
# no network. On a machine without a GPU the peak columns say "not measured".
#
#   [PYTHON=python3] launch/gpu_memory.sh [depth] [batch_size] [OUT_DIR] [FLAG ...]
#   e.g. launch/gpu_memory.sh 100 64 gpu_memory     # default OUT_DIR: gpu_memory_<UTC>
#        launch/gpu_memory.sh 100 64 gpu_memory --no-torch   # JAX rows only
#
# Flags after OUT_DIR go to tlc_jax.benchmarks.memory_speed as they are.
#
# Writes results.csv, results.md and memory_vs_depth.png into OUT_DIR and prints
# results.md.
set -euo pipefail
depth=${1:-100}; batch=${2:-64}
out=${3:-gpu_memory_$(date -u +%Y%m%dT%H%M%SZ)}
shift $(( $# < 3 ? $# : 3 ))
export XLA_PYTHON_CLIENT_PREALLOCATE=false
${PYTHON:-python} -m tlc_jax.benchmarks.memory_speed "--out=$out" --depths="$depth" \
  --batch_size="$batch" --imagenet_models= --policies=dots_saveable,nothing_saveable \
  --gpu_peak --no-speed --no-deepest "$@"
