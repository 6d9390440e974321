#!/usr/bin/env bash
# Runs the simulated rig demo (set-up included). Extra arguments go to `rigstream demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/rigstream demo "$@"
