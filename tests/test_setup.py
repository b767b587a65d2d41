"""scripts/setup.sh talks to the user in one line per step: pip's output goes to .logs/setup.log.

The real script runs in a throw-away copy of the project with a stand-in interpreter (a bash
script on ``PYTHON``): ``-m venv`` makes a .venv whose python is the stand-in, ``-m pip`` prints
what pip prints on these machines (one "Location ... is ignored" warning per package) and
succeeds or fails as told. No network, no real install: ~1 s per test.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pipeline_fixtures import PROJECT

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0 ;;
  "-m pip")
    echo "Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple"
    for i in $(seq 311); do echo "WARNING: Location 'file:///opt/pypi-more/simple/pkg$i/' is ignored: it is neither a file nor a directory."; done
    if [ "${FAKE_PIP_RC:-0}" != 0 ]; then
      echo "ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)" >&2
      echo "ERROR: No matching distribution found for torch==2.13.0" >&2
      exit "$FAKE_PIP_RC"
    fi
    echo "Successfully installed everything"; exit 0 ;;
  "-m zero1toa.preprocess.assets") exit 0 ;;
  "--version ") echo "Python 3.11.7"; exit 0 ;;
esac
if [ "$1" = "-c" ]; then echo "torch 2.13.0+cpu | zero1toa 0.1.0"; exit 0; fi
exit 0
"""


@pytest.fixture
def project(tmp_path) -> Path:
    dst = tmp_path / "project"
    (dst / "scripts").mkdir(parents=True)
    shutil.copy2(PROJECT / "scripts" / "setup.sh", dst / "scripts" / "setup.sh")
    for name in ("requirements.txt", "pyproject.toml"):
        shutil.copy2(PROJECT / name, dst / name)
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return dst


def _setup(project: Path, **env: str) -> subprocess.CompletedProcess:
    calls = project.parent / "calls.txt"
    full = {**os.environ, "PYTHON": str(project.parent / "fakepython"), "FAKE_CALLS": str(calls), **env}
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=project, env=full, capture_output=True, text=True, timeout=60)


def test_first_setup_prints_one_line_per_step_and_logs_pip(project):
    r = _setup(project)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (r.stdout + r.stderr).splitlines()
    assert "Location" not in r.stdout + r.stderr  # 3 x 311 warnings went to the log
    assert len(lines) <= 8, lines
    assert lines[0].startswith("[setup] creating .venv") and lines[-1] == "[setup] ready: torch 2.13.0+cpu | zero1toa 0.1.0"
    n = sum(1 for line in (project / "requirements.txt").read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    assert f"[setup] installing pinned packages ({n};" in r.stdout
    log = (project / ".logs" / "setup.log").read_text()
    assert log.count("is ignored") == 3 * 311 and "Successfully installed" in log


def test_up_to_date_setup_is_one_quiet_line_and_runs_no_pip(project):
    assert _setup(project).returncode == 0
    calls = project.parent / "calls.txt"
    calls.write_text("")
    again = _setup(project)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).splitlines() == ["[setup] ready: torch 2.13.0+cpu | zero1toa 0.1.0"]
    assert "pip" not in calls.read_text()


def test_a_failed_install_shows_the_whole_error_and_the_log(project):
    r = _setup(project, FAKE_PIP_RC="1")
    assert r.returncode == 1
    assert "[setup] FAILED (1): installing pinned packages" in r.stderr
    assert "ERROR: Could not find a version that satisfies the requirement torch==2.13.0" in r.stderr
    assert "ERROR: No matching distribution found for torch==2.13.0" in r.stderr
    assert "Location" not in r.stderr + r.stdout  # the error, not the noise around it
    assert str(project / ".logs" / "setup.log") in r.stderr
    assert "No matching distribution" in (project / ".logs" / "setup.log").read_text()
    assert not (project / ".venv" / ".zero1toa-setup").exists()  # the next run tries again
    assert "ready" not in r.stdout


def test_a_slow_step_says_it_is_still_working(project):
    slow = project.parent / "fakepython"
    slow.write_text(slow.read_text().replace('  "-m pip")\n', '  "-m pip")\n    case "$*" in *" -r "*) sleep 2.5 ;; esac\n'))
    r = _setup(project, ZERO1TOA_SETUP_TICK="1")
    assert r.returncode == 0, r.stderr
    assert "[setup]   still installing pinned packages... (" in r.stdout
