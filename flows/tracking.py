"""MLflow at the pipeline level: parent runs, their tags, and reading runs back for lineage.

A *pipeline run* (one ``zero1toa run``, one portrait of a batch, or one ``dvc repro`` /
``dvc exp run``) is an MLflow parent run in the portrait's experiment; every node it executed is a
child run (written by :mod:`tasks.tracking`), and every node it reused from the cache is a small
child run pointing at the run that produced the artifacts.

Parent tags: the git commit (``mlflow.source.git.commit``, plus ``zero1toa.git_dirty``), the
launcher (prefect / dvc / batch), the Prefect flow run id, the DVC experiment name when DVC runs
one, the run folder and the digest of the whole resolved config. Params: the whole resolved
config, flattened.

DVC stages are separate processes with no shared run id, so a DVC pipeline's parent is found by a
*pipeline key* (:func:`dvc_pipeline_key`: the ``dvc`` process that launched the stage), created by
its first stage and reused by the rest.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tasks import tracking as tr
from tasks.tracking import TAG, TrackingContext
from zero1toa.config import Config, to_dict
from zero1toa.env import project_root
from zero1toa.utils.io import digest_obj

# ----------------------------------------------------------------------------- provenance


def git_state(root: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the repository holding ``root`` (empty outside git)."""
    root = Path(root or Path.cwd())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=20)
        return {tr.GIT_TAG: commit.stdout.strip(), f"{TAG}.git_dirty": str(bool(dirty.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {}


def dvc_pipeline_key() -> str | None:
    """Identify the ``dvc repro`` / ``dvc exp run`` process that launched this stage, or None.

    DVC runs each stage as ``sh -c CMD`` under the dvc process and shares no run id with it; the
    launching process (pid + start time) is the same for every stage of one invocation and
    different for the next.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return None
    try:
        proc = psutil.Process().parent()
        for _ in range(6):
            if proc is None:
                return None
            cmd = " ".join(proc.cmdline()[:3])
            if proc.name() == "dvc" or "/dvc " in f"{cmd} " or " dvc " in f" {cmd} " or "dvc.cli" in cmd or cmd.endswith("/dvc"):
                return f"dvc:{proc.pid}:{int(proc.create_time())}"
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def config_digest(cfg: Config) -> str:
    return digest_obj(to_dict(cfg))


# ----------------------------------------------------------------------------- parent runs


def _parent_tags(cfg: Config, run_dir: Path, launcher: str, flow_run_id: str | None, pipeline_key: str | None) -> dict[str, str]:
    tags = {
        f"{TAG}.parent": "true",
        f"{TAG}.launcher": launcher,
        f"{TAG}.run_name": cfg.run.name,
        f"{TAG}.run_dir": str(run_dir),
        f"{TAG}.config_digest": config_digest(cfg),
        f"{TAG}.generator": cfg.generator.kind,
        f"{TAG}.head": cfg.head.kind,
        **git_state(project_root() if launcher != "dvc" else Path.cwd()),
    }
    if flow_run_id:
        tags[f"{TAG}.flow_run_id"] = flow_run_id
    if pipeline_key:
        tags[f"{TAG}.pipeline_key"] = pipeline_key
    if os.environ.get("DVC_EXP_NAME"):
        tags[f"{TAG}.dvc_exp"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags[f"{TAG}.dvc_baseline"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def _child_tags(parent_tags: dict[str, str]) -> dict[str, str]:
    keep = (tr.GIT_TAG, f"{TAG}.git_dirty", f"{TAG}.flow_run_id", f"{TAG}.dvc_exp", f"{TAG}.pipeline_key", f"{TAG}.config_digest")
    return {k: v for k, v in parent_tags.items() if k in keep}


def start_pipeline(
    cfg: Config,
    run_dir: Path,
    launcher: str,
    flow_run_id: str | None = None,
    pipeline_key: str | None = None,
    reuse: bool = False,
    extra_tags: dict[str, str] | None = None,
) -> TrackingContext | None:
    """Open the parent run of a pipeline run (or, with ``reuse``, find the one with ``pipeline_key``)."""
    if not tr.enabled():
        return None

    def _start() -> TrackingContext:
        uri = tr.tracking_uri()
        exp_id = tr.ensure_experiment(tr.experiment_name(cfg.run.name), uri)
        c = tr.client(uri)
        tags = {**_parent_tags(cfg, Path(run_dir), launcher, flow_run_id, pipeline_key), **(extra_tags or {})}
        if reuse and pipeline_key:
            found = c.search_runs([exp_id], filter_string=f"tags.`{TAG}.pipeline_key` = '{pipeline_key}' and tags.`{TAG}.parent` = 'true'", max_results=1)
            if found:
                parent = found[0].info.run_id
                c.update_run(parent, status="RUNNING")
                return TrackingContext(uri, exp_id, parent, _child_tags(tags))
        name = f"{cfg.run.name} ({launcher} {time.strftime('%Y-%m-%d %H:%M:%S')})"
        run = c.create_run(exp_id, run_name=name, tags=tags)
        tr.log_records(run.info.run_id, uri, params=tr.flatten(to_dict(cfg)))
        return TrackingContext(uri, exp_id, run.info.run_id, _child_tags(tags))

    return tr.guarded("start pipeline run", _start)


def end_pipeline(ctx: TrackingContext | None, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
    """Close the parent run: totals and the evaluation's headline metrics, for the runs table."""
    if ctx is None or not ctx.parent_run_id:
        return

    def _end() -> None:
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        summary_ = summary or {}
        nodes = summary_.get("nodes", {})
        if summary and not summary_.get("partial"):  # a DVC stage reports one node at a time
            metrics["nodes_executed"] = sum(1 for n in nodes.values() if n.get("state") != "Cached")
            metrics["nodes_cached"] = sum(1 for n in nodes.values() if n.get("state") == "Cached")
            if summary_.get("seconds") is not None:
                metrics["time/pipeline"] = summary_["seconds"]
        for n in nodes.values():
            for k, v in (n.get("metrics") or {}).items():
                # evaluation metrics keep their names (the runs table's headline columns)
                metrics[k if n["node"] == "evaluate" else f"{n['node']}/{k}"] = v
        if summary_.get("error"):
            tags[f"{TAG}.error"] = summary_["error"]
        tr.log_records(ctx.parent_run_id, ctx.tracking_uri, metrics=metrics, tags=tags)
        tr.client(ctx.tracking_uri).set_terminated(ctx.parent_run_id, status=status)

    tr.guarded("end pipeline run", _end)


# ----------------------------------------------------------------------------- reading back


def runs_frame(run_name: str | None = None, filter_string: str = "", uri: str | None = None):
    """All runs of a portrait's experiment (or every zero1toa experiment) as a pandas DataFrame."""
    import pandas as pd

    uri = uri or tr.tracking_uri()
    c = tr.client(uri)
    if run_name:
        exp = c.get_experiment_by_name(tr.experiment_name(run_name))
        exp_ids = [exp.experiment_id] if exp else []
    else:
        exp_ids = [e.experiment_id for e in c.search_experiments() if e.name.startswith("zero1toa/")]
    if not exp_ids:
        return pd.DataFrame()
    rows = []
    token = None
    while True:
        page = c.search_runs(exp_ids, filter_string=filter_string, max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        for r in page:
            rows.append(
                {
                    "run_id": r.info.run_id,
                    "run_name": r.info.run_name,
                    "status": r.info.status,
                    "start_time": r.info.start_time,
                    "end_time": r.info.end_time,
                    "experiment_id": r.info.experiment_id,
                    **{f"tags.{k}": v for k, v in r.data.tags.items()},
                    **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                    **{f"params.{k}": v for k, v in r.data.params.items()},
                }
            )
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def get_run(run_id: str, uri: str | None = None):
    return tr.client(uri).get_run(run_id)


__all__ = ["git_state", "dvc_pipeline_key", "start_pipeline", "end_pipeline", "runs_frame", "get_run", "config_digest"]
