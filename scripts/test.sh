#!/usr/bin/env bash
# Set up (if needed) and run the test suite.   bash scripts/test.sh [--slow] [pytest args...]
#   --slow   also run the long end-to-end tests (dashboard servers, longer resume runs)
# Two test processes (pytest-xdist, a test file's tests stay in one process and in order), one
# torch thread each; ZERO1TOA_TEST_WORKERS=1 runs them in this process alone (e.g. to debug).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The HTML report is tested in a real browser: Debian's chromium, installed when we may.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian chromium for the browser tests (apt's output: .logs/setup.log)"
  mkdir -p .logs
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >> .logs/setup.log 2>&1 \
    || echo "[test] chromium install failed (see .logs/setup.log); the browser tests will skip"
fi
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then marker=(); shift; fi
workers=${ZERO1TOA_TEST_WORKERS:-2}
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi
exec .venv/bin/python -m pytest "${marker[@]}" "${parallel[@]}" "$@"
