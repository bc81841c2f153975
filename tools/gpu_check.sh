#!/usr/bin/env bash
# The GPU check: GPU-only tests, then the model, training, loader and cache benchmarks, every figure as JSON.
#
#   tools/gpu_check.sh OUT_DIR [WHEEL_DIR]
#
# Needs python3 with torch (CUDA) and the runtime packages; any of zarr, numcodecs, imagecodecs, pyspng,
# captum, donfig, google-crc32c that is missing is installed from WHEEL_DIR (default .whl) without network.
# The real PNGs and metadata CSV are read from ../shared/data/nih, or from CXRBENCH_NIH.
# Plan: under 8 minutes on one H100.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR [WHEEL_DIR]}
WHEELS=${2:-.whl}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
echo "== $(date -u +%FT%TZ) $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"

missing=$(python3 - <<'PY'
import importlib.util
need = {"zarr": "zarr", "numcodecs": "numcodecs", "imagecodecs": "imagecodecs", "pyspng": "pyspng",
        "captum": "captum", "donfig": "donfig", "google_crc32c": "google_crc32c"}
print(" ".join(k for k, m in need.items() if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  echo "== installing from $WHEELS: $missing"
  wheels=()
  for name in $missing; do
    stem=${name//-/_}
    for w in "$WHEELS"/${stem}-*.whl "$WHEELS"/${name}-*.whl; do [ -f "$w" ] && wheels+=("$w"); done
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cxr-site "${wheels[@]}" \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/cxr-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
python3 -c "import torch, zarr, numba; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'zarr', zarr.__version__, 'numba', numba.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"

status=0
step() { echo "== $*"; local t=$SECONDS; "$@" || { echo "!! failed: $*"; status=1; }; echo "== $((SECONDS - t)) s"; }
step python3 -m pytest -q -m gpu -p no:cacheprovider tests
step python3 benchmarks/models.py --out "$OUT"
step python3 benchmarks/train_epoch.py --out "$OUT"
step python3 benchmarks/loader.py --n 1000 --out "$OUT"
step python3 benchmarks/cache_build.py --real 1000 --synth 250 --out "$OUT"
echo "== done, status $status"
exit $status
