#!/usr/bin/env bash
# Set up (if needed) and run the main job: the whole DAG on the bundled sample portrait
# (default preset: CPU, embedded generator). Extra arguments are Hydra overrides, e.g.
#   bash scripts/main.sh preset=smoke
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[main] zero1toa run sample $*  (the DAG: preprocess -> fit_head -> rounds -> evaluate -> export)"
exec .venv/bin/zero1toa run sample "$@"
