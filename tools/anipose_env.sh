#!/usr/bin/env bash
# A separate environment with aniposelib beside rigstream, for side-by-side comparisons only
# (bench triangulate, tools/anipose_compare.py). aniposelib needs opencv-contrib-python, numba
# and jax; rigstream never depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-anipose/bin/python ]; then
  "$PY" -m venv .venv-anipose
fi
.venv-anipose/bin/python -m pip install --quiet --upgrade pip
.venv-anipose/bin/python -m pip install --quiet -e . "aniposelib==0.8.0" h5py
# aniposelib wants opencv-contrib-python; both it and opencv-python-headless install cv2, so
# install contrib last (it is a superset).
.venv-anipose/bin/python -m pip install --quiet --force-reinstall --no-deps opencv-contrib-python
