#!/usr/bin/env bash
# The test command: install into .venv, then the fast suite, then the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The MLflow UI screenshot test drives Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
fi
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check --quiet .
ruff format --check --quiet .
python -m pytest -q -m "not slow" "$@"
python -m pytest -q -m slow "$@"
