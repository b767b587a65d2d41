"""`zero1toa dashboard start|status|stop`: Prefect server + MLflow UI on loopback, started and
stopped cleanly (~10-20 s: each server needs a few seconds to come up); and (slow) what a browser
shows of a smoke run on both dashboards, with screenshots under .logs/test_artifacts/dashboard/."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline_fixtures import PROJECT, SMOKE, run_cli  # the orchestration fixture comes from conftest

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


# ----------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT / ".logs" / "test_artifacts" / "dashboard"  # git-ignored; kept for a human to look at


def _browser(url: str, shot: Path | None = None, budget_ms: int = 20000) -> str:
    """The rendered DOM's visible text of ``url`` (headless Chromium; a screenshot too when asked)."""
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", "--hide-scrollbars"]
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=180)
        print(f"screenshot: {shot}")
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def _page(url: str, shot: Path, needle: str, seconds: float = 90.0) -> str:
    """Load ``url`` again while ``needle`` is not on it yet (the UIs fetch their data asynchronously)."""
    deadline = time.monotonic() + seconds
    while True:
        text = _browser(url, shot)
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it when it may)")
def test_dashboards_show_a_smoke_run_in_a_browser(orchestration, tmp_path):
    """`zero1toa dashboard start`, a smoke portrait, then what a user sees: the Prefect UI lists the
    flow run and its task runs, the MLflow UI opens on the runs and shows the evaluation's fps_render."""
    from flows.dashboard import free_port

    home = tmp_path / "project"
    home.mkdir()
    # own project home, stores and ports: nothing a user's dashboard or the session's server holds;
    # PREFECT_API_URL empty so `zero1toa run` finds the dashboard by itself
    env = {"ZERO1TOA_HOME": str(home), "PREFECT_HOME": str(home / ".prefect"), "MLFLOW_TRACKING_URI": "", "ZERO1TOA_MLFLOW_ARTIFACT_ROOT": "", "PREFECT_API_URL": ""}
    ports = [str(free_port()), str(free_port())]
    started = run_cli(["dashboard", "start", "--prefect-port", ports[0], "--mlflow-port", ports[1], "--json"], orchestration, timeout=300, **env)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        urls = json.loads(started.stdout.strip().splitlines()[-1])
        run = run_cli(["run", "sample", *SMOKE, f"run.root={tmp_path / 'runs'}", "run.name=dash", "--json"], orchestration, timeout=1500, **env)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout[run.stdout.index("{") :])
        flow_run_id = summary["flow_run_id"]

        # Prefect: the runs page lists the flow run; its task-runs tab one completed run per node
        # (the flow run's own page draws its task runs on a canvas: a screenshot for a human)
        flows_page = _page(f"{urls['prefect']}/runs", ARTIFACTS / "prefect_runs.png", "6 Task runs")  # (the count arrives last)
        assert re.search(r"zero1toa-portrait portrait-dash \+0 Completed .*? 6 Task runs", flows_page), flows_page[:3000]
        tasks_page = _page(f"{urls['prefect']}/runs?tab=task-runs", ARTIFACTS / "prefect_task_runs.png", "portrait-dash preprocess")
        for node in ("preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate", "export"):
            assert f"zero1toa-portrait portrait-dash {node} +0 Completed" in tasks_page, (node, tasks_page[:3000])
        _browser(f"{urls['prefect']}/runs/flow-run/{flow_run_id}", ARTIFACTS / "prefect_flow_run.png")

        # MLflow: `dashboard start` (run again: now the experiment exists) prints the runs page of
        # the project's experiment, which opens on the runs table, not the GenAI overview
        again = run_cli(["dashboard", "start", "--prefect-port", ports[0], "--mlflow-port", ports[1], "--json"], orchestration, timeout=120, **env)
        landing = json.loads(again.stdout.strip().splitlines()[-1])["mlflow_runs"]
        from tasks import tracking as tr

        c = tr.client(f"sqlite:///{home / '.mlflow' / 'mlflow.db'}")
        exp = c.get_experiment_by_name("zero1toa/dash")
        assert landing == f"{urls['mlflow']}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        runs_page = _page(landing, ARTIFACTS / "mlflow_runs.png", "matching runs")
        # the runs table (Model training view) with the pipeline's parent run; its 6 node runs nest under it
        assert "Model training" in runs_page and "zero1toa/dash" in runs_page and "7 matching runs" in runs_page, runs_page[:3000]
        assert re.search(r"Run Name .*dash \(prefect ", runs_page), runs_page[:3000]
        ev = c.search_runs([exp.experiment_id], filter_string="tags.`zero1toa.node` = 'evaluate'")[0]
        fps = ev.data.metrics["fps_render"]
        run_page = _page(f"{urls['mlflow']}/#/experiments/{exp.experiment_id}/runs/{ev.info.run_id}?workflowType=machine_learning", ARTIFACTS / "mlflow_evaluate_run.png", "fps_render")
        shown = re.search(r"fps_render ([0-9][0-9.]*)", run_page)
        assert shown, run_page[:3000]
        assert abs(float(shown.group(1)) - fps) <= 0.01 * fps + 0.01  # the number MLflow holds, as the UI prints it
    finally:
        stopped = run_cli(["dashboard", "stop"], orchestration, **env)
    assert stopped.returncode == 0 and "prefect" in stopped.stdout and "mlflow" in stopped.stdout
