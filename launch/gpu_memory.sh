#!/usr/bin/env bash
# Measured GPU memory of one DenseNet training step, naive vs recompute, one process per
# row (the allocator's peak is per process). Needs the package installed with the cuda12
# extra; no network. Usage: [PYTHON=python3] launch/gpu_memory.sh [depth] [growth_rate] [batch_size]
#   e.g. launch/gpu_memory.sh 100 12 64 | tee gpu_memory.txt
set -euo pipefail
depth=${1:-100}; k=${2:-12}; batch=${3:-64}
common=(--model=densenet_bc --depth="$depth" --growth_rate="$k" --batch_size="$batch"
        --image_size=32 --compile --measure)
${PYTHON:-python} -m tlc_jax.memory "${common[@]}" --policies=
for policy in dots_saveable nothing_saveable; do
  ${PYTHON:-python} -m tlc_jax.memory "${common[@]}" --nonaive --policies="$policy" | tail -n 1
done
