"""Shared fixtures of the orchestration tests (flow, MLflow/lineage, batch, resume, DVC).

- ``orchestration``: one isolated environment for the whole session: a Prefect server on a free
  loopback port with its own PREFECT_HOME (so flows pay ~1 s each instead of starting an ephemeral
  API, and the tests can ask the API what a dashboard would show), an MLflow SQLite store and
  artifact root in a temp folder, tracking in strict mode (a tracking failure fails the test).
  It must be set up before anything imports Prefect (Prefect freezes its settings at import), so
  the test modules import ``flows.flow`` only inside tests and fixtures.
- ``smoke_run``: the whole DAG of the sample portrait with the smoke preset, run once and shared.

Test modules use them by importing them (``from pipeline_fixtures import orchestration, ...``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

#: The smoke preset, trimmed further where the evaluation would spend time the tests do not need.
SMOKE = [
    "preset=smoke",
    "run.progress=false",
    "evaluate.expression_frames=4",
    "evaluate.stability_frames=6",
    "evaluate.video_frames=6",
]


@dataclass
class Orchestration:
    root: Path  # temp folder of the session
    api_url: str | None  # the Prefect server's API (None: ephemeral mode)
    tracking_uri: str
    server_problem: str | None = None  # why there is no server (None when there is one)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for subprocesses (CLI, DVC stages): same stores, the venv's scripts on PATH."""
        env = dict(os.environ)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.pop("MLFLOW_RUN_ID", None)
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def orchestration(tmp_path_factory):
    root = tmp_path_factory.mktemp("orchestration")
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(root / "prefect_home"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("ZERO1TOA_MLFLOW_ARTIFACT_ROOT", str(root / "mlflow_artifacts"))
    mp.setenv("ZERO1TOA_TRACKING", "strict")
    mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))  # conftest's share of the cores
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    from flows import dashboard

    api_url, problem = None, None
    if "prefect" in sys.modules:  # a server only helps if Prefect has not frozen its settings yet
        problem = "Prefect was imported before the session fixture"
    else:
        try:
            svc = dashboard.start(prefect_port=dashboard.free_port(), root=root, timeout=180, services=("prefect",))[0]
            api_url = f"{svc.url}/api"
            mp.setenv("PREFECT_API_URL", api_url)
        except RuntimeError as exc:  # fall back to Prefect's ephemeral mode
            problem = f"the Prefect server did not start: {exc}"
    try:
        yield Orchestration(root, api_url, os.environ["MLFLOW_TRACKING_URI"], problem)
    finally:
        _drain_prefect()  # send queued logs/events while the server is still there
        dashboard.stop_service("prefect", root=root)
        mp.undo()


def _drain_prefect() -> None:
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=15)
        EventsWorker.drain_all(timeout=15)
    except Exception as exc:  # best effort: only shortens the exit
        print(f"(could not drain Prefect workers: {exc})")


@dataclass
class SmokeRun:
    cfg: object  # zero1toa.config.Config
    run_dir: Path
    first: dict  # summary of the first (full) run
    overrides: list[str]


@pytest.fixture(scope="session")
def smoke_run(orchestration) -> SmokeRun:
    from flows.config import compose
    from flows.flow import run_portrait

    overrides = SMOKE + [f"run.root={orchestration.root / 'runs'}", "run.name=smoke"]
    cfg = compose(overrides)
    summary = run_portrait("sample", cfg)
    return SmokeRun(cfg, Path(summary["run_dir"]), summary, overrides)


def run_cli(args: list[str], orch: Orchestration, cwd: Path | None = None, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``zero1toa ARGS`` in a subprocess with the session's stores."""
    return subprocess.run([str(VENV_BIN / "zero1toa"), *args], cwd=cwd or PROJECT, env=orch.env(**env), capture_output=True, text=True, timeout=timeout)


__all__ = ["orchestration", "smoke_run", "run_cli", "SMOKE", "Orchestration", "SmokeRun", "PROJECT", "VENV_BIN"]
