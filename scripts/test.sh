#!/usr/bin/env bash
# The test command: install into .venv, then the fast suite, then the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q -m "not slow" "$@"
# pytest exits 5 when no test carries the mark; that is not a failure of the suite.
python -m pytest -q -m slow "$@" || [ $? -eq 5 ]
