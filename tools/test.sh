#!/usr/bin/env bash
# Runs the lint and the whole test suite (set-up included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh train   # the tests train and export small models with torch
.venv/bin/ruff check .
.venv/bin/python tools/lint_imports.py   # the layers ([tool.importlinter] in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
