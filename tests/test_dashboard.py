"""`zero1toa dashboard start|status|stop`: Prefect server + MLflow UI on loopback, started and
stopped cleanly (~10-20 s: each server needs a few seconds to come up)."""

from __future__ import annotations

import json
import time
import urllib.request

from pipeline_fixtures import run_cli  # the orchestration fixture comes from conftest

from zero1toa.env import apply_defaults

apply_defaults()


def test_dashboard_start_status_stop(orchestration, tmp_path):
    from flows.dashboard import free_port

    home = tmp_path / "project"
    home.mkdir()
    env = {"ZERO1TOA_HOME": str(home), "PREFECT_HOME": str(home / ".prefect"), "MLFLOW_TRACKING_URI": ""}
    ports = [str(free_port()), str(free_port())]
    started = run_cli(["dashboard", "start", "--prefect-port", ports[0], "--mlflow-port", ports[1], "--json"], orchestration, timeout=300, **env)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        urls = json.loads(started.stdout.strip().splitlines()[-1])
        assert urls["prefect"] == f"http://127.0.0.1:{ports[0]}" and urls["PREFECT_API_URL"].endswith("/api")
        with urllib.request.urlopen(f"{urls['prefect']}/api/health", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(urls["mlflow"], timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        status = json.loads(run_cli(["dashboard", "status", "--json"], orchestration, **env).stdout)
        assert status["prefect"]["healthy"] and status["mlflow"]["healthy"]
        pids = [status["prefect"]["pid"], status["mlflow"]["pid"]]
        assert (home / ".mlflow").exists()  # the UI reads the project's store
    finally:
        stopped = run_cli(["dashboard", "stop"], orchestration, **env)
    assert stopped.returncode == 0 and "prefect" in stopped.stdout and "mlflow" in stopped.stdout
    time.sleep(0.5)
    from flows.dashboard import _alive

    assert not any(_alive(pid) for pid in pids)  # gone (a zombie left for a non-reaping PID 1 counts as gone)
    status = json.loads(run_cli(["dashboard", "status", "--json"], orchestration, **env).stdout)
    assert not status["prefect"]["running"] and not status["mlflow"]["running"]
