#!/usr/bin/env bash
# Creates .venv (once) and installs rigstream with its test tools into it. Safe to re-run.
# `tools/setup.sh train` also installs the training extra: torch pinned to 2.13.0 (the CPU
# build; a looser torch pulls several GB of CUDA wheels), pandas, PyTables, tqdm. The analysis extra
# (pynwb, ndx-pose, Dask) is always installed: `rigstream analyze` and `export` and their tests use it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras="host,dev,analysis"
pins=()
if [ "${1:-}" = "train" ]; then
  extras="host,dev,analysis,train"
  pins=("torch==2.13.0")
fi
stamp=".venv/.rigstream-installed-${extras//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # setuptools says "Editable installation ... be careful with folders named like the package" for
  # every editable install through a meta path finder (our wings map rigstream.<wing> to <wing>/):
  # information, not a fault, so that one message is filtered and any other warning still shows.
  PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
    .venv/bin/python -m pip install --quiet "${pins[@]}" -e ".[$extras]"
  touch "$stamp"
fi
