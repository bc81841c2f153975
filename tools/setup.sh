#!/usr/bin/env bash
# Sets cxrbench up in one command: a virtual environment, torch's CPU wheels where there is no NVIDIA GPU (the
# default CUDA wheels are several GB), the project with its test extra, the installation's self-check
# (`cxrbench doctor`, which names what is broken and the command that fixes it) and the quickstart.
#
#   bash tools/setup.sh                   # .venv beside this checkout; the quickstart into ./cxrbench-quickstart
#   CXRBENCH_VENV=~/venvs/cxr bash tools/setup.sh --out /tmp/qs   # another venv; arguments go to the quickstart
#
# Re-running it reuses the environment and every finished quickstart step. PYTHON picks the interpreter
# (default python3, which must be 3.11 or newer); CXRBENCH_TORCH=cpu|default forces the wheel choice.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${CXRBENCH_VENV:-$ROOT/.venv}"
say() { echo "setup: $*" >&2; }

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "cxrbench needs Python 3.11 or newer; $PY is $("$PY" -V 2>&1 || echo missing) (set PYTHON=python3.11 or newer)"
  exit 1
fi
[ -x "$VENV/bin/python" ] || { say "making the virtual environment $VENV"; "$PY" -m venv "$VENV"; }
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip

if ! python -c 'import torch, torchvision' 2>/dev/null; then
  wheels="${CXRBENCH_TORCH:-}"
  if [ -z "$wheels" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then wheels=default; else wheels=cpu; fi
  fi
  cpu_index=https://download.pytorch.org/whl/cpu
  if [ "$wheels" = cpu ] && ! python -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=15)" \
    2>/dev/null; then
    say "no NVIDIA GPU, but the CPU wheel index $cpu_index is not reachable: torch comes from the default index"
    wheels=default
  fi
  if [ "$wheels" = cpu ]; then
    say "no NVIDIA GPU: installing torch and torchvision from the CPU wheel index"
    python -m pip install -q torch torchvision --index-url "$cpu_index"
  else
    say "installing torch and torchvision from the default index"
    python -m pip install -q torch torchvision
  fi
fi
say "installing cxrbench (editable) with its test extra"
python -m pip install -q -e "$ROOT[test]"
cxrbench doctor
cxrbench quickstart "$@"
say "done: '. $VENV/bin/activate' to use cxrbench in this shell"
