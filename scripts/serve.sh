#!/usr/bin/env bash
# Serve every model of an export folder with TF Serving: REST on :8501, gRPC on :8500.
#
#   scripts/serve.sh [EXPORT_DIR]        # default: saved_models
#
# Reads EXPORT_DIR/models.config (written by every export). Uses tensorflow_model_server when it
# is on PATH, else the tensorflow/serving docker image with EXPORT_DIR mounted read-only at
# /models. The config is re-read every 60 s, so later exports are picked up without a restart.
# Environment: REST_PORT (8501), GRPC_PORT (8500), TF_SERVING_IMAGE (tensorflow/serving:latest).
set -euo pipefail

export_dir="${1:-saved_models}"
if [[ ! -d "$export_dir" ]]; then
  echo "error: $export_dir is not a folder; pass the --export_dir of your exports" >&2
  exit 2
fi
export_dir="$(cd "$export_dir" && pwd)"
config="$export_dir/models.config"
if [[ ! -f "$config" ]]; then
  echo "error: $config not found; export a model first:" \
    "python -m xtremedistil_tf.export --run_dir runs/default" >&2
  exit 2
fi
rest_port="${REST_PORT:-8501}"
grpc_port="${GRPC_PORT:-8500}"
image="${TF_SERVING_IMAGE:-tensorflow/serving:latest}"

if command -v tensorflow_model_server >/dev/null 2>&1; then
  # models.config names container paths (/models/<name>); point them at this folder instead.
  local_config="$(mktemp)"
  trap 'rm -f "$local_config"' EXIT
  escaped="$(printf '%s' "$export_dir" | sed 's/[\\&|]/\\&/g')"
  sed "s|base_path: \"/models/|base_path: \"$escaped/|" "$config" >"$local_config"
  tensorflow_model_server \
    --port="$grpc_port" \
    --rest_api_port="$rest_port" \
    --model_config_file="$local_config" \
    --model_config_file_poll_wait_seconds=60
elif command -v docker >/dev/null 2>&1; then
  exec docker run --rm \
    -p "$rest_port:8501" -p "$grpc_port:8500" \
    --mount "type=bind,source=$export_dir,target=/models,readonly" \
    "$image" \
    --model_config_file=/models/models.config \
    --model_config_file_poll_wait_seconds=60
else
  echo "error: neither tensorflow_model_server nor docker is on PATH" >&2
  exit 2
fi
