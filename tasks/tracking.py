"""MLflow records of the DAG: one child run per executed node, under one parent run per pipeline run.

Why it looks like this:
- **Inside the project by default.** MLflow's own default is ``mlflow.db`` / ``mlruns/`` in
  whatever folder the process happens to start in, so two launches from two folders would
  scatter lineage. Unless ``MLFLOW_TRACKING_URI`` is set (a real server, or any store the user
  chooses), the store is ``sqlite:///<project>/.mlflow/mlflow.db`` and artifacts go to
  ``<project>/.mlflow/artifacts`` (``ZERO1TOA_MLFLOW_ARTIFACT_ROOT`` moves them).
- **The client API, never the fluent one.** Fluent MLflow keeps an "active run" in a global and
  picks up ``MLFLOW_RUN_ID`` from the environment; a child process or a Dask worker would then
  log into somebody else's run. Here every call names its run id, the parent id travels
  explicitly (:class:`TrackingContext`), and :func:`client` drops an inherited ``MLFLOW_RUN_ID``.
- **Tracking never breaks the pipeline.** A locked SQLite file or an unreachable server is
  retried briefly, then reported as a warning (and in the node's result); the avatar still gets
  built. ``ZERO1TOA_TRACKING=off`` disables tracking, ``=strict`` makes failures fatal (tests).
- **Bounded artifacts.** Previews, the contact sheet, plots, videos and the .ply are copied into
  the artifact store only up to ``ZERO1TOA_MLFLOW_MAX_ARTIFACT_MB`` (default 50) each;
  ``ZERO1TOA_MLFLOW_ARTIFACTS=none`` logs none. Datasets and checkpoints stay out of MLflow:
  they are DVC's job, and their digests are in the run's tags.

Nothing here imports Prefect: a DVC stage logs exactly the same records as a Prefect task.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from zero1toa.env import project_root

log = logging.getLogger("zero1toa.tracking")

T = TypeVar("T")

TAG = "zero1toa"  # tag namespace
PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"
ARTIFACT_SUFFIXES = (".png", ".jpg", ".mp4", ".gif", ".ply", ".csv")


class TrackingError(RuntimeError):
    """Tracking failed while ``ZERO1TOA_TRACKING=strict``."""


@dataclass
class TrackingContext:
    """Where a node's run goes: the store, the experiment and the parent run (picklable)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # copied onto every child (launcher, flow run, commit ...)


# ----------------------------------------------------------------------------- configuration


def mode() -> str:
    """``on`` (default), ``off`` or ``strict``."""
    value = os.environ.get("ZERO1TOA_TRACKING", "on").strip().lower()
    return value if value in ("on", "off", "strict") else "on"


def enabled() -> bool:
    return mode() != "off"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store (an absolute path)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    db = project_root() / ".mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def artifact_root() -> Path:
    root = os.environ.get("ZERO1TOA_MLFLOW_ARTIFACT_ROOT", "").strip()
    return Path(root).resolve() if root else project_root() / ".mlflow" / "artifacts"


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    # a fresh SQLite store announces its table creation and migration at INFO on the terminal,
    # before the run's first line: keep that to warnings (errors still show)
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def client(uri: str | None = None):
    """An ``MlflowClient`` for ``uri`` (default :func:`tracking_uri`), cached per process."""
    os.environ.pop("MLFLOW_RUN_ID", None)  # an inherited active run must never capture our runs
    return _client(uri or tracking_uri())


def experiment_name(run_name: str) -> str:
    """One MLflow experiment per portrait (run name)."""
    return f"zero1toa/{run_name}"


def _retry(fn: Callable[[], T], what: str, attempts: int = 4) -> T:
    delay = 0.3
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlite "database is locked", a server hiccup ...
            transient = "locked" in str(exc).lower() or "timeout" in str(exc).lower() or "connection" in str(exc).lower()
            if i + 1 == attempts or not transient:
                raise
            log.debug("%s failed (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def guarded(what: str, fn: Callable[[], T], default: T | None = None) -> T | None:
    """Run a tracking call; on failure warn (or raise when ``ZERO1TOA_TRACKING=strict``)."""
    if not enabled():
        return default
    try:
        return _retry(fn, what)
    except Exception as exc:
        if mode() == "strict":
            raise TrackingError(f"MLflow tracking failed ({what}): {exc}") from exc
        log.warning("MLflow tracking failed (%s): %s; the pipeline goes on without this record", what, exc)
        return default


#: MLflow 3's UI treats an experiment without this tag as a GenAI one and opens it on an empty
#: traces/overview page; "custom_model_development" makes it open on the runs table (our nodes).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Get or create the experiment; local stores keep its artifacts under the project."""
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made by an older version
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if is_local_store(uri):
        folder = artifact_root() / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    try:
        return c.create_experiment(name, artifact_location=location, tags={f"{TAG}.kind": "portrait", EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:  # created concurrently by another worker
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ----------------------------------------------------------------------------- flattening


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}`` (lists stay leaves)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.update(flatten(v, key))
    else:
        out[prefix] = obj
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


def _param_value(v: Any) -> str:
    s = "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
    return s if len(s) <= 500 else s[:497] + "..."


def _clean_key(key: str) -> str:
    import re

    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", key)[:250]


def _batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_records(
    run_id: str,
    uri: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    steps: list[tuple[str, float, int]] | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """Params, scalar metrics, per-step metrics and tags in as few batched calls as MLflow allows."""
    from mlflow.entities import Metric, Param, RunTag

    c = client(uri)
    now = int(time.time() * 1000)
    p = [Param(_clean_key(k), _param_value(v)) for k, v in (params or {}).items()]
    t = [RunTag(_clean_key(k), _param_value(v)[:8000]) for k, v in (tags or {}).items() if v is not None]
    m = [Metric(_clean_key(k), v, now, 0) for k, v in (metrics or {}).items() if _number(v) is not None]
    m += [Metric(_clean_key(k), float(v), now, int(s)) for k, v, s in (steps or []) if _number(v) is not None]
    for chunk in _batches(p, 100):
        _retry(lambda chunk=chunk: c.log_batch(run_id, params=chunk), "log params")
    for chunk in _batches(t, 100):
        _retry(lambda chunk=chunk: c.log_batch(run_id, tags=chunk), "log tags")
    for chunk in _batches(m, 1000):
        _retry(lambda chunk=chunk: c.log_batch(run_id, metrics=chunk), "log metrics")


# ----------------------------------------------------------------------------- node runs


def start_node_run(ctx: TrackingContext | None, node: str, tags: dict[str, Any]) -> str | None:
    """Open the node's child run (RUNNING) so a live MLflow UI shows it while it works."""
    if ctx is None:
        return None

    def _start() -> str:
        c = client(ctx.tracking_uri)
        all_tags = {**ctx.tags, **{k: _param_value(v) for k, v in tags.items() if v is not None}, f"{TAG}.node": node}
        if ctx.parent_run_id:
            all_tags[PARENT_TAG] = ctx.parent_run_id
        run = c.create_run(ctx.experiment_id, run_name=node, tags=all_tags)
        return run.info.run_id

    return guarded(f"start run of {node}", _start)


def _step_metrics(manifest: dict) -> list[tuple[str, float, int]]:
    rows = manifest.get("extra", {}).get("losses") or []
    steps = []
    for row in rows:
        step = int(row.get("step", 0))
        for k, v in row.items():
            if k == "step":
                continue
            name = "num_gaussians_step" if k == "num_gaussians" else f"loss/{k}"
            steps.append((name, v, step))
    return steps


def manifest_tags(manifest: dict) -> dict[str, str]:
    """Digests of every input and output, code version, seed, dataset->checkpoint link, licences."""
    tags = {f"{TAG}.in.{k}": v for k, v in (manifest.get("inputs") or {}).items()}
    tags.update({f"{TAG}.out.{k}": v for k, v in (manifest.get("outputs") or {}).items()})
    tags[f"{TAG}.code_version"] = manifest.get("code_version", "")
    if manifest.get("seed") is not None:
        tags[f"{TAG}.seed"] = manifest["seed"]
    extra = manifest.get("extra") or {}
    if extra.get("trained_on_dataset"):
        tags[f"{TAG}.trained_on_dataset"] = extra["trained_on_dataset"]
    licences = extra.get("licences") or ({"head": extra["licence"]} if "licence" in extra else {})
    for k, v in licences.items():
        tags[f"{TAG}.licence.{k}"] = v
    return tags


def _artifact_files(run_dir: Path, artifacts: list[str]) -> list[tuple[Path, str]]:
    """(file, artifact folder) pairs worth copying into MLflow: previews, plots, videos, .ply."""
    policy = os.environ.get("ZERO1TOA_MLFLOW_ARTIFACTS", "small").strip().lower()
    if policy == "none":
        return []
    limit = float(os.environ.get("ZERO1TOA_MLFLOW_MAX_ARTIFACT_MB", "50")) * 1e6
    out = []
    for rel in artifacts:
        root = run_dir / rel
        if not root.is_dir() or rel.endswith(("/dataset", "/avatar")):
            continue  # datasets and checkpoints: DVC's job
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix.lower() in ARTIFACT_SUFFIXES and (policy == "all" or f.stat().st_size <= limit):
                folder = f.parent.relative_to(run_dir).as_posix()
                out.append((f, folder))
    return out


def finish_node_run(ctx: TrackingContext | None, run_id: str | None, manifest: dict, result: dict) -> None:
    """Params (the node's resolved config), metrics (per step too), tags (digests), artifacts."""
    if ctx is None or run_id is None:
        return

    def _finish() -> None:
        metrics = {k: v for k, v in flatten(manifest.get("metrics") or {}).items() if _number(v) is not None}
        metrics.update({f"time/{k}": v for k, v in (manifest.get("timings") or {}).items()})
        metrics["time/wall"] = result.get("seconds", 0.0)
        tags = {
            **manifest_tags(manifest),
            f"{TAG}.output_digest": result["output_digest"],
            **{f"{TAG}.artifact.{k}": v for k, v in result["artifacts"]["digests"].items()},
        }
        log_records(run_id, ctx.tracking_uri, params=flatten(result.get("params") or {}), metrics=metrics, steps=_step_metrics(manifest), tags=tags)
        c = client(ctx.tracking_uri)
        for path, folder in _artifact_files(Path(result["run_dir"]), result["artifacts"]["paths"]):
            _retry(lambda path=path, folder=folder: c.log_artifact(run_id, str(path), folder), "log artifact")
        c.set_terminated(run_id, status="FINISHED")

    guarded(f"finish run of {manifest.get('node')}", _finish)


def fail_node_run(ctx: TrackingContext | None, run_id: str | None, exc: BaseException) -> None:
    if ctx is None or run_id is None:
        return

    def _fail() -> None:
        c = client(ctx.tracking_uri)
        c.set_tag(run_id, f"{TAG}.error", f"{type(exc).__name__}: {exc}"[:8000])
        c.set_terminated(run_id, status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")

    guarded("mark run failed", _fail)


def log_cached_node(ctx: TrackingContext | None, result: dict) -> str | None:
    """A child run for a node the orchestrator did not execute (cache hit), pointing at its producer.

    The parent run then lists every node of the pipeline, and lineage can follow
    ``zero1toa.source_run_id`` to the run that really produced the artifacts.
    """
    if ctx is None:
        return None

    def _log() -> str:
        c = client(ctx.tracking_uri)
        tags = {
            **ctx.tags,
            f"{TAG}.node": result["node"],
            f"{TAG}.cached": "true",
            f"{TAG}.source_run_id": result.get("mlflow_run_id") or "",
            f"{TAG}.cache_key": result["key"],
            f"{TAG}.output_digest": result["output_digest"],
            **{f"{TAG}.artifact.{k}": v for k, v in result["artifacts"]["digests"].items()},
        }
        if ctx.parent_run_id:
            tags[PARENT_TAG] = ctx.parent_run_id
        run = c.create_run(ctx.experiment_id, run_name=f"{result['node']} (cached)", tags={k: _param_value(v) for k, v in tags.items()})
        c.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    return guarded(f"record cached {result.get('node')}", _log)


__all__ = [
    "TrackingContext",
    "TrackingError",
    "tracking_uri",
    "artifact_root",
    "client",
    "enabled",
    "mode",
    "experiment_name",
    "ensure_experiment",
    "flatten",
    "log_records",
    "start_node_run",
    "finish_node_run",
    "fail_node_run",
    "log_cached_node",
    "manifest_tags",
    "guarded",
]
