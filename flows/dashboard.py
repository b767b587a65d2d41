"""The local dashboard: a Prefect server (flow/task states, durations, logs) and the MLflow UI.

``zero1toa dashboard start`` launches both on 127.0.0.1 as background processes (their pid and
log files live in ``<project>/.dashboard/``), waits until both answer their health checks and
prints the URLs; ``zero1toa dashboard stop`` terminates exactly the processes it started
(SIGTERM to their own process groups, SIGKILL after a grace period); ``status`` reports.

While the Prefect server is up, ``zero1toa run`` / ``batch`` find it through
:func:`detect_api_url` and report to it (so runs appear on the dashboard without exporting
anything); ``PREFECT_API_URL`` set by the user always wins. MLflow runs are written straight to
the project's SQLite store, which the MLflow UI reads.

Both servers only listen on loopback; nothing is exposed to the network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from zero1toa.env import project_root

HOST = "127.0.0.1"
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000}


@dataclass
class Service:
    name: str
    port: int
    pid: int | None = None
    url: str = ""
    health: str = ""
    log: str = ""


def state_dir(root: Path | None = None) -> Path:
    return Path(root or project_root()) / ".dashboard"


def _state_file(name: str, root: Path | None = None) -> Path:
    return state_dir(root) / f"{name}.json"


def _bin(name: str) -> str:
    """The console script installed beside this Python (the venv's), else whatever PATH has."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the servers: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _command(name: str, port: int, root: Path) -> tuple[list[str], dict[str, str], str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the server must not try to report to another server
    env.pop("MLFLOW_RUN_ID", None)
    if name == "prefect":
        cmd = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
        env.setdefault("PREFECT_HOME", str(root / ".prefect"))
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_UI_API_URL"] = f"http://{HOST}:{port}/api"
        return cmd, env, f"http://{HOST}:{port}", f"http://{HOST}:{port}/api/health"
    if name == "mlflow":
        from tasks.tracking import artifact_root, tracking_uri

        backend = tracking_uri()
        cmd = [_bin("mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1", "--backend-store-uri", backend]
        if backend.startswith("sqlite:") or "://" not in backend:
            artifact_root().mkdir(parents=True, exist_ok=True)
            cmd += ["--default-artifact-root", artifact_root().as_uri()]
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        return cmd, env, f"http://{HOST}:{port}", f"http://{HOST}:{port}/health"
    raise KeyError(name)


def read_state(name: str, root: Path | None = None) -> Service | None:
    path = _state_file(name, root)
    if not path.exists():
        return None
    try:
        return Service(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def launch(name: str, port: int, root: Path | None = None) -> Service:
    """Start one service in the background (its own process group); returns at once."""
    root = Path(root or project_root())
    current = read_state(name, root)
    if current and _alive(current.pid):
        return current
    if not port_free(port):
        raise RuntimeError(f"port {port} on {HOST} is in use (another {name} server?): pass --{name}-port PORT")
    cmd, env, url, health = _command(name, port, root)
    state_dir(root).mkdir(parents=True, exist_ok=True)
    log_path = state_dir(root) / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root, start_new_session=True)
    svc = Service(name, port, proc.pid, url, health, str(log_path))
    _state_file(name, root).write_text(json.dumps(asdict(svc)))
    return svc


def wait_healthy(services: list[Service], timeout: float = 90.0) -> list[Service]:
    """Wait until every service answers its health URL; returns those that never did."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if not healthy(s.health)]
        if any(not _alive(s.pid) for s in pending):
            break  # a server that exited will not come up
        if pending:
            time.sleep(0.5)
    return [s for s in services if not healthy(s.health)]


def stop_service(name: str, root: Path | None = None, grace: float = 15.0) -> bool:
    """Terminate a service this module started (by its recorded pid / process group)."""
    svc = read_state(name, root)
    path = _state_file(name, root)
    if svc is None:
        return False
    stopped = False
    if _alive(svc.pid):
        try:
            os.killpg(svc.pid, signal.SIGTERM)  # its own session: the server and its workers
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while _alive(svc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(svc.pid):
            try:
                os.killpg(svc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped = True
    try:  # reap it if it is our own child (tests start and stop in one process)
        os.waitpid(svc.pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass
    path.unlink(missing_ok=True)
    return stopped


def start(prefect_port: int | None = None, mlflow_port: int | None = None, root: Path | None = None, timeout: float = 90.0, services: tuple[str, ...] = ("prefect", "mlflow")) -> list[Service]:
    """Start the dashboard services and wait for them; raises (after stopping them) if one fails."""
    ports = {"prefect": prefect_port or DEFAULT_PORTS["prefect"], "mlflow": mlflow_port or DEFAULT_PORTS["mlflow"]}
    started = []
    try:
        for name in services:
            started.append(launch(name, ports[name], root))
    except Exception:
        for s in started:
            stop_service(s.name, root)
        raise
    failed = wait_healthy(started, timeout)
    if failed:
        tails = []
        for s in failed:
            try:
                tails.append(f"--- {s.name} ({s.log}) ---\n" + Path(s.log).read_text(errors="replace")[-2000:])
            except OSError:
                pass
        for s in started:
            stop_service(s.name, root)
        raise RuntimeError(f"{', '.join(s.name for s in failed)} did not become healthy within {timeout:.0f} s\n" + "\n".join(tails))
    return started


#: MLflow 3.17's UI keeps a "workflow type" (GenAI or machine learning) in the browser and defaults
#: to GenAI, whose pages are empty for our runs; this query parameter switches it (and is remembered).
ML_WORKFLOW = "workflowType=machine_learning"


def project_experiment(uri: str | None = None) -> str | None:
    """Id of the project's most recently updated experiment (``zero1toa/<run name>``), or None.

    Also tags it as a model-development experiment (see :data:`tasks.tracking.EXPERIMENT_KIND`),
    so the UI shows its runs table rather than the GenAI overview.
    """
    from tasks import tracking as tr

    def _find() -> str | None:
        c = tr.client(uri)
        ours = [e for e in c.search_experiments(max_results=1000) if e.name.startswith(tr.experiment_name(""))]
        if not ours:
            return None
        exp = max(ours, key=lambda e: e.last_update_time or 0)
        if (exp.tags or {}).get(tr.EXPERIMENT_KIND_TAG) != tr.EXPERIMENT_KIND:
            c.set_experiment_tag(exp.experiment_id, tr.EXPERIMENT_KIND_TAG, tr.EXPERIMENT_KIND)
        return exp.experiment_id

    return tr.guarded("find the project's MLflow experiment", _find)


def mlflow_landing_url(base: str, experiment_id: str | None) -> str:
    """Where the MLflow UI should open: the experiment's runs (or the experiment list), ML view."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base}/#/{page}?{ML_WORKFLOW}"


def stop(root: Path | None = None) -> list[str]:
    return [name for name in ("prefect", "mlflow") if stop_service(name, root)]


def status(root: Path | None = None) -> dict[str, dict]:
    out = {}
    for name in ("prefect", "mlflow"):
        svc = read_state(name, root)
        if svc is None:
            out[name] = {"running": False}
        else:
            out[name] = {"running": _alive(svc.pid), "healthy": healthy(svc.health), "url": svc.url, "pid": svc.pid, "log": svc.log}
    return out


def detect_api_url(root: Path | None = None) -> str | None:
    """The running dashboard's Prefect API URL, if one is up and healthy (else None)."""
    svc = read_state("prefect", root)
    if svc is None or not _alive(svc.pid) or not healthy(svc.health, timeout=1.0):
        return None
    return f"{svc.url}/api"


def use_dashboard_if_running(root: Path | None = None) -> str | None:
    """Point this process at the dashboard's Prefect API unless PREFECT_API_URL is already set.

    Must run before Prefect is imported (Prefect reads its settings at import).
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    url = detect_api_url(root)
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url


__all__ = ["start", "stop", "status", "project_experiment", "mlflow_landing_url", "launch", "stop_service", "wait_healthy", "detect_api_url", "use_dashboard_if_running", "free_port", "Service"]
