#!/usr/bin/env bash
# Creates .venv (once) and installs rigstream with its test tools into it. Safe to re-run.
# `tools/setup.sh train` also installs the training extra: torch pinned to 2.13.0 (the CPU
# build; a looser torch pulls several GB of CUDA wheels), pandas, PyTables, tqdm.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras="dev"
pins=()
if [ "${1:-}" = "train" ]; then
  extras="dev,train"
  pins=("torch==2.13.0")
fi
stamp=".venv/.rigstream-installed-${extras/,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${pins[@]}" -e ".[$extras]"
  touch "$stamp"
fi
