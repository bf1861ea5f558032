#!/usr/bin/env bash
# Create .venv with tfqa and its test extras. torch is pinned first: an unpinned torch would pull
# a multi-GB CUDA build, and the pinned CPU build installs from the local wheel store in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TFQA_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test]"
