#!/usr/bin/env bash
# The GPU check, as the one command a lent GPU machine runs (from the repo root, with .device
# carried; scripts/device_prep.sh fills .device here first):
#
#     bash scripts/device_check.sh [gpu_check.py options]
#
# The machine's image has torch and transformers but no MLflow and no tfqa: this installs the
# carried wheels (MLflow for a local sqlite store, and its dependencies) into /tmp/site, prints the
# GPU and the library versions, then runs benchmarks/gpu_check.py (the stages end to end on CUDA,
# then the bf16 throughput table) under a timeout, so that the whole command ends inside 8 minutes.
# Results: $OUT/gpu_check.json, gpu_check.md and gpu_check.log ($OUT is the device tool's folder
# that comes back; ./gpu_check/ without it). Exit status: gpu_check.py's (0: every stage passed and
# no table row failed; 124: the timeout struck, the files hold what was measured by then).
# PYTHON, DEVICE_SITE and DEVICE_TIMEOUT_S (default 450) change the interpreter, the install folder
# and the time limit (to try it on a slow CPU with --cpu-smoke).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-gpu_check}
PY=${PYTHON:-python3}
SITE=${DEVICE_SITE:-/tmp/site}
LIMIT_S=${DEVICE_TIMEOUT_S:-450}
mkdir -p "$OUT_DIR"
if ! compgen -G ".device/wheels/*.whl" >/dev/null; then
  echo "device_check: no wheels in .device/wheels: run scripts/device_prep.sh on the machine you call from, and carry .device" >&2
  exit 2
fi
{
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .device/wheels/*.whl \
    || { echo "device_check: installing the carried wheels into $SITE failed" >&2; exit 3; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
  # Hub kernels off: transformers 5.25's from_pretrained fails without the `kernels` package unless
  # this is 0 (seen here), the image lists no `kernels`, and the machine cannot fetch hub kernels.
  export USE_HUB_KERNELS=${USE_HUB_KERNELS:-0}
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv || true
  "$PY" -c "import sys, torch, transformers, mlflow; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '| transformers', transformers.__version__, '| mlflow', mlflow.__version__)" \
    || { echo "device_check: the libraries do not import" >&2; exit 3; }
  timeout -k 10 "$LIMIT_S" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" "$@"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
