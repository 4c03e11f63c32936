#!/usr/bin/env bash
# The short inference benchmark behind results/benchmark/ (teacher vs xtremedistil students,
# tf.function and SavedModel, fp32 and mixed bf16, batch 32 × 128 tokens). ~5 minutes on 2 cores.
# Extra flags are passed on, e.g. scripts/benchmark.sh --modes eager,function,xla,saved_model
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" -m xtremedistil_tf.benchmark \
  --output_dir "${OUTPUT_DIR:-results/benchmark}" \
  --models mbert-base,xtremedistil-l6-h256,xtremedistil-l6-h384,xtremedistil-l12-h384 \
  --batch_sizes 32 --seq_lengths 128 \
  --modes function,saved_model --dtypes float32,bfloat16 \
  --repeats 5 --warmup 2 "$@"
