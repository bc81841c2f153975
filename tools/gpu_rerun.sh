#!/usr/bin/env bash
# A shorter GPU check for a second lease: GPU tests, the model and one-epoch training benchmarks only.
#   tools/gpu_rerun.sh OUT_DIR [WHEEL_DIR]
set -uo pipefail
OUT=${1:?usage: tools/gpu_rerun.sh OUT_DIR [WHEEL_DIR]}
WHEELS=${2:-.whl}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_rerun.log") 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cxr-site "$WHEELS"/*.whl
export PYTHONPATH="$PWD:/tmp/cxr-site:${PYTHONPATH:-}"
status=0
step() { echo "== $*"; local t=$SECONDS; "$@" || { echo "!! failed: $*"; status=1; }; echo "== $((SECONDS - t)) s"; }
step python3 -m pytest -q -m gpu -p no:cacheprovider tests
step python3 benchmarks/models.py --out "$OUT"
step python3 benchmarks/train_epoch.py --out "$OUT"
exit $status
