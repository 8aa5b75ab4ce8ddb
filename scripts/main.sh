#!/usr/bin/env bash
# The main job: a full local ReST run (G=1, I=3) on the bundled LibreOffice de→en data,
# starting from the shipped BC policy, executed as a real KFP pipeline through
# kfp.local. Extra arguments go to `python pipeline.py run-local` (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec python pipeline.py run-local --output-dir "${OUTPUT_DIR:-runs/default}" "$@"
