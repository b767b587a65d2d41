#!/usr/bin/env bash
# The project's one prepared GPU check (see benchmarks/gpu_check.py for the steps):
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine: < 8 min, writes benchmarks/results/gpu_check-<date>.json
#   bash benchmarks/gpu_check.sh --dry-run --out DIR   # any machine: every step at toy size on the CPU, CUDA parts skipped
# Extra arguments go to gpu_check.py (--only raster fps train generate projection, --steps N).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
# OpenMP threads sleep instead of spinning: on a busy machine spinning made CPU steps ~10x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
