"""zero1toa dashboard start|stop|status: the local Prefect dashboard and MLflow UI on 127.0.0.1."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "status"), nargs="?", default="status")
    p.add_argument("--prefect-port", type=int, default=None, help="Prefect server port (default 4200)")
    p.add_argument("--mlflow-port", type=int, default=None, help="MLflow UI port (default 5000)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for both servers to become healthy")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from flows import dashboard
    from tasks.tracking import tracking_uri

    if args.action == "start":
        services = dashboard.start(args.prefect_port, args.mlflow_port, timeout=args.timeout)
        urls = {s.name: s.url for s in services}
        # open MLflow on the runs of the project's experiment (its UI's own start page is an empty
        # GenAI overview for runs like ours)
        runs_url = dashboard.mlflow_landing_url(urls["mlflow"], dashboard.project_experiment())
        if args.json:
            print(json.dumps({"prefect": urls["prefect"], "mlflow": urls["mlflow"], "mlflow_runs": runs_url, "PREFECT_API_URL": f"{urls['prefect']}/api"}))
            return 0
        print(f"Prefect dashboard  {urls['prefect']}/runs")
        print(f"MLflow UI          {runs_url}")
        print(f"                   (store: {tracking_uri()})")
        print("zero1toa run/batch in this project report to it automatically; other Prefect clients:")
        print(f"  export PREFECT_API_URL={urls['prefect']}/api")
        print("stop both with: zero1toa dashboard stop")
        return 0
    if args.action == "stop":
        stopped = dashboard.stop()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    st = dashboard.status()
    if args.json:
        print(json.dumps(st))
    else:
        for name, s in st.items():
            print(f"{name:8} {'up' if s.get('healthy') else ('starting/unhealthy' if s.get('running') else 'stopped')}  {s.get('url', '')}")
    return 0 if all(s.get("running") for s in st.values()) or args.action == "status" else 1
