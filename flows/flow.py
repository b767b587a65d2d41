"""The DAG for one portrait as a Prefect flow (``zero1toa run IMAGE [overrides]``).

``preprocess -> fit_head -> spatial_1..K -> temporal_1..M -> evaluate -> export``, each node a
cached task (:mod:`tasks.nodes`). What a re-run does:

- a finished portrait with unchanged settings and code: every task is a cache hit (Prefect state
  ``Cached``), nothing executes, the flow takes seconds;
- a changed evaluation setting: only ``evaluate`` has a new key;
- a changed temporal-stage setting: the temporal rounds, ``evaluate`` and ``export`` re-run;
- a node that crashed: the nodes before it are cache hits; a round that was killed continues
  from its last checkpoint (``<round>/.work``, kept by ``zero1toa.nodes.node_round``);
- a cached node whose artifacts were deleted or changed on disk: re-run (the cached result is
  checked against the files before it is trusted, :func:`tasks.keys.artifacts_valid`).

Run folders: the bundled portrait runs in ``<root>/sample``; a photo in ``<root>/<its file
stem>`` (or ``<stem>-<digest>`` when that folder holds another photo, see
:mod:`zero1toa.runfolder`); an explicit ``run.name=`` wins (:func:`name_run_for_photo`).

Every pipeline run is an MLflow parent run; executed nodes are child runs with their params,
metrics and digests, cached nodes are small child runs pointing at their producer.

Without a Prefect server the flow runs against Prefect's ephemeral local API (a start-up cost of
~10-20 s per process, with a raised timeout, see ``zero1toa.env``); with ``zero1toa dashboard
start`` running and ``PREFECT_API_URL`` exported, runs appear on the dashboard.
"""

from __future__ import annotations

import os


def prefect_env_defaults() -> None:
    """Orchestration defaults that must be in place before Prefect / Dask are imported.

    - our own ``zero1toa.*`` log records reach the Prefect API (the dashboard's run logs);
    - with a server configured, task and flow run logs are sent at INFO (the dashboard shows
      them) while the console stays at WARNING; in ephemeral mode everything stays quiet;
    - Dask's ``distributed`` logs only warnings.
    """
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "zero1toa")
    # node code called outside a flow (a notebook, `zero1toa node`) logs normally, without a warning
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    if os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


prefect_env_defaults()

import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from flows.tracking import end_pipeline, start_pipeline  # noqa: E402
from tasks import keys  # noqa: E402
from tasks.nodes import task_for  # noqa: E402
from tasks.tracking import log_cached_node  # noqa: E402
from zero1toa.config import Config, RunConfig, from_dict, to_dict  # noqa: E402
from zero1toa.nodes import run_dir_for  # noqa: E402
from zero1toa.runfolder import folder_for_photo, record_input, recorded_input_digest, run_name_for  # noqa: E402

log = logging.getLogger("zero1toa.flow")

RESULTS_FOLDER = ".prefect-results"


def result_store(cfg: Config) -> Path:
    """Where task results (small JSON records) persist: beside the run folders, so a shared run
    root carries its cache with it."""
    path = (Path(cfg.run.root) / RESULTS_FOLDER).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_image(image: str | Path, cfg: Config) -> Path:
    """``sample`` -> the bundled portrait, written once to ``<run>/input.png``; else an existing file."""
    if str(image) == "sample":
        from zero1toa.sample import write_sample_portrait

        path = run_dir_for(cfg).resolve() / "input.png"
        if not path.exists():
            write_sample_portrait(path)
        return path
    path = Path(image).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"portrait not found: {image}")
    return path


def explicit_run_name(overrides: list[str] | None) -> bool:
    """Whether the user chose the run folder (a ``run.name=`` override)."""
    return any(o.split("=", 1)[0].lstrip("+~") == "run.name" for o in overrides or [])


def name_run_for_photo(image: str | Path, path: Path, cfg: Config, overrides: list[str] | None = None) -> tuple[Config, str | None]:
    """``cfg`` with ``run.name`` = the photo's own folder name, and a note when it had to differ.

    Unchanged for the bundled portrait (``sample``), for an explicit ``run.name=`` override, and
    for a config whose ``run.name`` is not the default (a library caller chose it). Otherwise the
    name is the photo's sanitised file stem, or ``<stem>-<digest>`` when that folder already
    holds a different photo (:func:`zero1toa.runfolder.folder_for_photo`).
    """
    if str(image) == "sample" or explicit_run_name(overrides) or cfg.run.name != RunConfig().name:
        return cfg, None
    name, note = folder_for_photo(Path(cfg.run.root), run_name_for(path), keys.image_digest(path))
    data = to_dict(cfg)
    data["run"]["name"] = name
    return from_dict(data), note


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    try:
        return f"portrait-{flow_run.parameters['config']['run']['name']}"
    except (KeyError, TypeError):
        return "portrait"


def _run_task(task_obj, kwargs: dict[str, Any], store: Path, refresh: bool, retries: int | None, retry_delays: list[float] | None):
    """Call one node's task; a cache hit whose artifacts changed on disk is run again."""
    opts: dict[str, Any] = {"result_storage": store, "task_run_name": kwargs["node"]}
    if refresh:
        opts["refresh_cache"] = True
    if retries is not None:
        opts["retries"] = retries
    if retry_delays is not None:
        opts["retry_delay_seconds"] = list(retry_delays)
    state = task_obj.with_options(**opts)(**kwargs, return_state=True)
    result = state.result()  # raises the node's error when it failed (after its retries)
    if state.name == "Cached" and not keys.artifacts_valid(result):
        log.warning("%s: cached result found but its artifacts are missing or changed on disk; running it again", kwargs["node"])
        state = task_obj.with_options(**{**opts, "refresh_cache": True})(**kwargs, return_state=True)
        result = state.result()
    return result, state.name


def outputs_summary(run_dir: Path) -> dict[str, Any]:
    """Where the user's results are: the avatar (.ply), videos, metrics, contact sheet, plots."""
    run_dir = Path(run_dir)
    ev, ex = run_dir / "evaluate", run_dir / "export"
    return {
        "run_dir": str(run_dir),
        "avatar": [str(p) for p in sorted(ex.glob("*.ply"))],
        "videos": [str(p) for p in sorted(ev.glob("*.mp4"))],
        "metrics": str(ev / "metrics.json") if (ev / "metrics.json").exists() else None,
        "contact_sheet": str(ev / "contact_sheet.png") if (ev / "contact_sheet.png").exists() else None,
        "plots": [str(p) for p in sorted((ev / "plots").glob("*.png"))],
    }


@flow(name="zero1toa-portrait", flow_run_name=_flow_run_name, log_prints=False, validate_parameters=False)
def portrait_flow(
    image: str,
    config: dict,
    refresh: bool = False,
    retries: int | None = None,
    retry_delays: list[float] | None = None,
) -> dict[str, Any]:
    """Run (or reuse) every node of the DAG for one portrait; returns a summary of nodes and outputs.

    ``config`` is the resolved, validated configuration as a dict (``zero1toa.config.to_dict``);
    ``refresh`` ignores all caches; ``retries`` / ``retry_delays`` override the tasks' defaults.
    """
    from zero1toa.runlock import run_lock

    t0 = time.perf_counter()
    cfg = from_dict(config)
    run_dir = run_dir_for(cfg).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # one run per folder (re-entrant: run_portrait may hold it already)
        return _portrait_flow_body(image, cfg, run_dir, refresh, retries, retry_delays, t0)


def _portrait_flow_body(image: str, cfg: Config, run_dir: Path, refresh: bool, retries, retry_delays, t0: float) -> dict[str, Any]:
    from prefect.runtime import flow_run

    store = result_store(cfg)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    ctx = start_pipeline(cfg, run_dir, "prefect", flow_run_id=flow_run_id)
    summary: dict[str, Any] = {
        "run_name": cfg.run.name,
        "run_dir": str(run_dir),
        "flow_run_id": flow_run_id,
        "parent_run_id": ctx.parent_run_id if ctx else None,
        "nodes": {},
    }
    image_digest = keys.image_digest(image)
    held = recorded_input_digest(run_dir)
    if held is not None and held != image_digest:  # only an explicit run.name gets here (see name_run_for_photo)
        log.warning("%s was made from another photo (sha256 %s...); its results are replaced by this photo's (%s)", run_dir, held[:12], image)
        summary["run_folder_note"] = f"{run_dir} held another photo; its results are replaced"
    record_input(run_dir, Path(image), image_digest)
    results: dict[str, dict] = {}
    try:
        for node in keys.dag_nodes(cfg):
            upstream = {u: results[u]["output_digest"] for u in keys.upstream_nodes(cfg, node)}
            kwargs: dict[str, Any] = {"node": node, "run_dir": str(run_dir), "config": cfg, "upstream": upstream, "tracking": ctx}
            if node == "preprocess":
                kwargs.update(image=str(image), image_digest=image_digest)
            result, state = _run_task(task_for(cfg, node), kwargs, store, refresh, retries, retry_delays)
            results[node] = result
            if state == "Cached":
                log_cached_node(ctx, result)
            summary["nodes"][node] = {
                "node": node,
                "kind": result["kind"],
                "state": state,
                "key": result["key"],
                "output_digest": result["output_digest"],
                "mlflow_run_id": result.get("mlflow_run_id"),
                "seconds": result.get("seconds"),
                "metrics": result.get("metrics", {}),
            }
    except BaseException as exc:
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        summary["error"] = f"{type(exc).__name__}: {exc}"
        end_pipeline(ctx, "FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED", summary)
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["executed"] = [n for n, s in summary["nodes"].items() if s["state"] != "Cached"]
    summary["cached"] = [n for n, s in summary["nodes"].items() if s["state"] == "Cached"]
    summary["outputs"] = outputs_summary(run_dir)
    end_pipeline(ctx, "FINISHED", summary)
    return summary


def run_portrait(
    image: str | Path,
    cfg: Config,
    refresh: bool = False,
    retries: int | None = None,
    retry_delays: list[float] | None = None,
    overrides: list[str] | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Run the portrait flow for an already validated config (what ``zero1toa run`` calls).

    A photo runs in its own folder (:func:`name_run_for_photo`; ``sample`` and an explicit
    ``run.name`` keep theirs). The run folder is locked for the flow's duration (a second run of
    the same folder fails at once, or waits with ``wait``), and records its settings
    (``overrides``, the resolved config) for later commands on it (:mod:`flows.runconfig`).
    """
    from flows.runconfig import save_run_config
    from zero1toa.runlock import run_lock

    path = resolve_image(image, cfg)
    cfg, note = name_run_for_photo(image, path, cfg, overrides)
    if note:
        log.warning("%s", note)
    with run_lock(run_dir_for(cfg), wait=wait):
        save_run_config(run_dir_for(cfg), cfg, overrides)
        summary = portrait_flow(image=str(path), config=to_dict(cfg), refresh=refresh, retries=retries, retry_delays=retry_delays)
    if note:
        summary["run_folder_note"] = note
    return summary


__all__ = ["portrait_flow", "run_portrait", "resolve_image", "name_run_for_photo", "explicit_run_name", "result_store", "outputs_summary", "prefect_env_defaults"]
