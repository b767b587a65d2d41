"""Pipeline benchmark: what the orchestration costs around the method's own work.

    .venv/bin/python benchmarks/pipeline.py                 # smoke preset, Prefect and DVC
    .venv/bin/python benchmarks/pipeline.py --only prefect  # or --only dvc
    .venv/bin/python benchmarks/pipeline.py --server        # Prefect against a local server

Measured, side by side for the Prefect flow (``zero1toa run``) and DVC (``dvc repro``):

- full smoke run: wall time of the command, and the time inside the pipeline;
- cached re-run: the same command again (Prefect: every task a cache hit; DVC: a no-op);
- orchestration overhead per node: (pipeline wall time - the nodes' own compute time) / nodes.
  The nodes' compute time is what their manifests record (``timings.total``); the rest is
  orchestration: for Prefect the task engine, cache-key computation, result persistence, the
  artifact fingerprint and MLflow logging; for DVC a Python process per stage (imports of torch,
  MLflow ...), DVC's hashing of deps/outs and the same MLflow logging. The "task code" line is
  the part both share (hashing artifacts + MLflow records, inside ``tasks.execute.run_node``).

Everything runs in a temporary folder with its own MLflow store and Prefect home; the project's
stores are not touched. Numbers depend on the machine's load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = ["preset=smoke", "run.progress=false"]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "ZERO1TOA_MLFLOW_ARTIFACT_ROOT": str(tmp / "mlflow_artifacts"),
            "PREFECT_HOME": str(tmp / "prefect_home"),
            "OMP_WAIT_POLICY": "PASSIVE",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@zero1toa.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@zero1toa.invalid",
        }
    )
    env.pop("MLFLOW_RUN_ID", None)
    env.update(extra)
    return env


def _timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return wall, r


def _node_compute(run_dir: Path) -> dict[str, float]:
    sys.path.insert(0, str(PROJECT))
    from zero1toa.runfolder import read_run_manifests

    return {n: float((m.get("timings") or {}).get("total") or 0.0) for n, m in read_run_manifests(run_dir).items()}


def warm_up(tmp: Path) -> None:
    """Create the MLflow store and the Prefect database once, as any project has them after its
    first run, so the numbers below are the steady-state costs (a fresh MLflow SQLite store takes
    ~3 s to create, a fresh Prefect database ~10 s more on the first ephemeral start)."""
    code = "from tasks.tracking import client; client().search_experiments(max_results=1); from prefect import flow; flow(lambda: 1)()"
    _timed([sys.executable, "-c", code], PROJECT, _env(tmp))


def bench_prefect(tmp: Path, server: bool) -> dict[str, float]:
    root = tmp / "prefect_runs"
    env = _env(tmp)
    proc = None
    if server:
        from flows.dashboard import free_port, launch, stop_service, wait_healthy

        svc = launch("prefect", free_port(), root=tmp)
        if wait_healthy([svc], 120):
            raise SystemExit("prefect server did not start")
        env["PREFECT_API_URL"] = f"{svc.url}/api"
        proc = (stop_service, tmp)
    try:
        cmd = [str(BIN / "zero1toa"), "run", "sample", *SMOKE, f"run.root={root}", "--json"]
        wall1, r1 = _timed(cmd, PROJECT, env)
        s1 = json.loads(r1.stdout)
        wall2, r2 = _timed(cmd, PROJECT, env)
        s2 = json.loads(r2.stdout)
    finally:
        if proc:
            proc[0]("prefect", root=proc[1])
    compute = _node_compute(Path(s1["run_dir"]))
    n = len(s1["nodes"])
    task_code = sum(v["seconds"] for v in s1["nodes"].values()) - sum(compute.values())
    return {
        "full_wall": wall1,
        "full_pipeline": s1["seconds"],
        "cached_wall": wall2,
        "cached_pipeline": s2["seconds"],
        "cached_executed": len(s2["executed"]),
        "compute": sum(compute.values()),
        "overhead_per_node": (s1["seconds"] - sum(compute.values())) / n,
        "task_code_per_node": task_code / n,
        "process_start": wall1 - s1["seconds"],
        "nodes": n,
    }


def _dvc_repo(tmp: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.o")
    repo = tmp / "dvc_project"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(PROJECT / name, repo / name)
    shutil.copytree(PROJECT / "conf", repo / "conf", ignore=ignore)
    shutil.copytree(PROJECT / "zero1toa", repo / "zero1toa", ignore=ignore)
    (repo / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy2(PROJECT / ".dvc" / name, repo / ".dvc" / name)
    shutil.copytree(PROJECT / ".dvc" / "hydra", repo / ".dvc" / "hydra", ignore=ignore)
    return repo


def bench_dvc(tmp: Path) -> dict[str, float]:
    repo = _dvc_repo(tmp)
    env = _env(tmp)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _timed([str(BIN / "zero1toa"), "params", *SMOKE], repo, env)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=repo, check=True, env=env)
    wall1, r1 = _timed([str(BIN / "dvc"), "repro"], repo, env)
    wall2, r2 = _timed([str(BIN / "dvc"), "repro"], repo, env)
    stages = r1.stdout.count("Running stage")
    compute = _node_compute(repo / "runs" / "sample")
    return {
        "full_wall": wall1,
        "full_pipeline": wall1,
        "cached_wall": wall2,
        "cached_pipeline": wall2,
        "cached_executed": r2.stdout.count("Running stage"),
        "compute": sum(compute.values()),
        "overhead_per_node": (wall1 - sum(compute.values())) / max(1, stages),
        "nodes": stages,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("prefect", "dvc"), default=None)
    ap.add_argument("--server", action="store_true", help="run the Prefect flow against a local Prefect server instead of the ephemeral API")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zero1toa-bench-"))
    results = {}
    try:
        warm_up(tmp)
        if args.only in (None, "prefect"):
            results["prefect"] = bench_prefect(tmp, args.server)
        if args.only in (None, "dvc"):
            results["dvc"] = bench_dvc(tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("full smoke run, command wall time (s)", "full_wall"),
        ("  inside the pipeline (s)", "full_pipeline"),
        ("  of which the nodes' own compute (s)", "compute"),
        ("cached re-run / no-op, wall time (s)", "cached_wall"),
        ("  inside the pipeline (s)", "cached_pipeline"),
        ("  nodes executed on the re-run", "cached_executed"),
        ("orchestration overhead per node (s)", "overhead_per_node"),
        ("  of which task code: hashing + MLflow (s)", "task_code_per_node"),
        ("process start + Prefect API start-up (s)", "process_start"),
        ("nodes / stages", "nodes"),
    ]
    cols = list(results)
    mode = "server" if args.server else "ephemeral API"
    header = {"prefect": f"Prefect ({mode})", "dvc": "DVC"}
    print(f"{'':46}" + "".join(f"{header[c]:>26}" for c in cols))
    for label, key in rows:
        cells = []
        for c in cols:
            v = results[c].get(key)
            cells.append(f"{'-':>26}" if v is None else (f"{v:>26.0f}" if key in ("nodes", "cached_executed") else f"{v:>26.2f}"))
        print(f"{label:46}" + "".join(cells))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
