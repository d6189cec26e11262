#!/usr/bin/env bash
# GPU throughput in one short run, for a machine with a CUDA GPU: model-only and end-to-end
# images/s at batch 1, 8 and 32 in bfloat16 (bench/throughput.py parts a and b), written to
# $OUT (default out/bench/gpu). Needs the venv with a CUDA build of torch==2.13.0 and the
# model's weights (MATTEFLOW_MODEL_PATH or the model cache).
#
#     bash bench/gpu.sh [IMAGES]        # default 256 images (eval-dev's, repeated)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/bench/gpu}"
IMAGES="${1:-256}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# Decode and encode run on the CPU: several worker threads keep the GPU fed; each thread's
# batches go to the one model its process shares.
WORKERS="${WORKERS:-$(( $(nproc) / 2 ))}"
for batch in 1 8 32; do
    "$PY" bench/throughput.py --images "$IMAGES" \
        --set model.device=cuda --set model.dtype=bfloat16 \
        --set "batching.max_pixels=$(( batch * 1024 * 1024 ))" \
        --beam "--direct_num_workers=$WORKERS --direct_running_mode=multi_threading" \
        --out "$OUT/batch$batch.json" | tee "$OUT/batch$batch.txt"
done
