#!/usr/bin/env bash
# The GPU check of whole runs: GPU-only tests, then one whole `cxrbench run` per variant on a paper-size layout
# (the real 112,120 metadata rows and official lists, PNGs hard-linked from the real originals), each with
# its stage breakdown, then a summary: whole-run efficiency, torch.compile against CUDA graphs (compile time
# included) and the deterministic mode's cost and repeatability. Every figure is JSON under OUT_DIR.
#
#   tools/gpu_check.sh OUT_DIR [WHEEL_DIR]   on one H100/H200: plan under 8 minutes (see the budget below)
#   tools/gpu_check.sh OUT_DIR --dry-run     the same steps on the CPU with tiny settings (a test runs this)
#
# Runs (densenet121 under paper-15c shortened to 1 fold x 2 epochs, no final run; each projects the full
# protocol from its stages), in order of importance; a run is skipped when the budget cannot hold it:
#   graphs            the default: bf16, channels_last, CUDA-graph training steps, cuDNN autotuning
#   deterministic-a/b --deterministic twice (1 epoch): its cost per epoch, and whether the predictions of two
#                     runs are bitwise identical
#   compile           --compile (compile time is its own stage), against graphs
#   deterministic-graphs-a/b, eager: extras when the budget allows (GPU_CHECK_BUDGET=700 runs them all):
#                     do graph replays stay bitwise identical in deterministic mode; what graphs save
# Needs python3 with torch and the runtime packages; any of zarr, numcodecs, imagecodecs, pyspng, captum,
# donfig, google-crc32c that is missing is installed from WHEEL_DIR (default .whl) without network.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR [WHEEL_DIR | --dry-run]}
DRY=0
WHEELS=.whl
case "${2:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) WHEELS=$2 ;;
esac
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds for the whole script; a run starts only if its estimate fits
echo "== $(date -u +%FT%TZ) $(hostname) dry-run=$DRY budget=${BUDGET}s"

if [ "$DRY" = 1 ]; then
  MODEL=tiny; PROTOCOL=smoke; ROWS=400; EPOCHS=2; DEVICE=cpu
else
  MODEL=densenet121; PROTOCOL=paper-15c; ROWS=all; EPOCHS=2; DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  missing=$($PY - <<'PY'
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
      for w in "$WHEELS"/${name}-*.whl; do [ -f "$w" ] && wheels+=("$w"); done
    done
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cxr-site "${wheels[@]}" \
      || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/cxr-site:${PYTHONPATH:-}"
  fi
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"

WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/cxr-gpu-check.XXXXXX)}
status=0
step() { echo "== $*"; local t=$SECONDS; "$@" || { echo "!! failed: $*"; status=1; }; echo "== $((SECONDS - t)) s"; }
# whole-run variant TAG ESTIMATE_SECONDS [flags...]: skipped when the estimate would overrun the budget
variant() {
  local tag=$1 est=$2; shift 2
  if [ $((SECONDS - START + est)) -gt "$BUDGET" ]; then
    echo "== skipped $tag: ~${est}s would pass the ${BUDGET}s budget"; return
  fi
  step $PY benchmarks/whole_run.py --model "$MODEL" --protocol "$PROTOCOL" --rows "$ROWS" --epochs "$EPOCHS" \
    --folds 1 --no-final --device "$DEVICE" --work "$WORK" --out "$OUT" --tag "$tag" "$@"
}

if [ "$DRY" = 0 ]; then
  step $PY -m pytest -q -m gpu -p no:cacheprovider tests   # ~60 s
fi
# estimates on one H200 (2 epochs of 15,249 images at ~1,650 images/s is ~20 s of training per run; start-up,
# binding 112,120 rows, loading ~24,000 images, scoring 6,875 and Grad-CAM add ~25 s; the first run also lays
# out the folder and builds the cache, ~40 s on 16 cores; eager and deterministic runs train at ~600 images/s)
variant graphs 110
variant deterministic-a 50 --deterministic --epochs 1
variant deterministic-b 50 --deterministic --epochs 1
variant compile 180 --compile
if [ "$DRY" = 0 ]; then  # GPU questions only (on the CPU these equal the runs above)
  variant deterministic-graphs-a 45 --deterministic --cuda-graphs --epochs 1
  variant deterministic-graphs-b 45 --deterministic --cuda-graphs --epochs 1
  variant eager 70 --no-cuda-graphs
fi
step $PY benchmarks/whole_run.py --summarize "$OUT"
[ -z "${GPU_CHECK_WORK:-}" ] && rm -rf "$WORK"
echo "== done in $((SECONDS - START)) s, status $status"
exit $status
