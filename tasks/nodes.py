"""Prefect tasks: one per DAG node, each a thin wrapper over :func:`tasks.execute.run_node`.

Caching is explicit. Prefect's default cache policy includes the flow run id, so nothing would be
reused across runs; hashing inputs would hash whatever objects happen to be passed. Instead each
task's ``cache_key_fn`` is :func:`tasks.keys.node_key`: upstream output digests (files), the
config subtree the node reads, the node's code version, its seed, the input image digest and the
run folder. The tracking context (parent MLflow run, flow run id) is a parameter too but is
deliberately not part of the key.

Results are small JSON dicts persisted under ``<run.root>/.prefect-results`` (the flow sets
``result_storage`` per run root, so a shared root carries its cache with it).

Retries: transient failures (I/O, timeouts, lost connections, CUDA OOM) are retried with
backoff; configuration errors and bugs fail at once (:func:`tasks.execute.is_transient`).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from zero1toa.config import Config

from . import keys
from .execute import is_transient, run_node
from .tracking import TrackingContext

# The node functions log progress at INFO on the ``zero1toa`` logger; Prefect forwards that logger
# to its API (PREFECT_LOGGING_EXTRA_LOGGERS, see flows.flow) so the dashboard shows it per task run.
if logging.getLogger("zero1toa").level == logging.NOTSET:
    logging.getLogger("zero1toa").setLevel(logging.INFO)

RETRIES = 2
RETRY_DELAYS = [5.0, 30.0]  # seconds; backoff between attempts


def node_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: the node's content-based key (never the run id, never tensors)."""
    return keys.node_key(
        parameters["node"],
        parameters["config"],
        parameters["run_dir"],
        parameters["upstream"],
        parameters.get("image_digest"),
    )


def retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    exc = getattr(state, "data", None)
    return isinstance(exc, BaseException) and is_transient(exc)


_COMMON: dict[str, Any] = dict(
    cache_key_fn=node_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)


@task(name="preprocess", **_COMMON)
def preprocess_task(
    node: str,
    run_dir: str,
    config: Config,
    upstream: dict[str, str],
    image: str,
    image_digest: str,
    tracking: TrackingContext | None = None,
) -> dict:
    """Portrait -> aligned reference, mask, landmarks (``zero1toa.nodes.node_preprocess``)."""
    return run_node(node, run_dir, config, upstream, image=image, image_digest=image_digest, tracking=tracking, launcher="prefect")


@task(name="fit_head", **_COMMON)
def fit_head_task(node: str, run_dir: str, config: Config, upstream: dict[str, str], tracking: TrackingContext | None = None) -> dict:
    """Head model + camera fitted to the landmarks (``zero1toa.nodes.node_fit_head``)."""
    return run_node(node, run_dir, config, upstream, tracking=tracking, launcher="prefect")


@task(name="round", **_COMMON)
def round_task(node: str, run_dir: str, config: Config, upstream: dict[str, str], tracking: TrackingContext | None = None) -> dict:
    """One SymGEN round (dataset refresh + training), resumable (``zero1toa.nodes.node_round``)."""
    return run_node(node, run_dir, config, upstream, tracking=tracking, launcher="prefect")


@task(name="evaluate", **_COMMON)
def evaluate_task(node: str, run_dir: str, config: Config, upstream: dict[str, str], tracking: TrackingContext | None = None) -> dict:
    """Metrics, videos, contact sheet, plots (``zero1toa.nodes.node_evaluate``)."""
    return run_node(node, run_dir, config, upstream, tracking=tracking, launcher="prefect")


@task(name="export", **_COMMON)
def export_task(node: str, run_dir: str, config: Config, upstream: dict[str, str], tracking: TrackingContext | None = None) -> dict:
    """Standard 3DGS .ply files (``zero1toa.nodes.node_export``)."""
    return run_node(node, run_dir, config, upstream, tracking=tracking, launcher="prefect")


TASKS = {
    "preprocess": preprocess_task,
    "fit_head": fit_head_task,
    "round": round_task,
    "evaluate": evaluate_task,
    "export": export_task,
}


def task_for(config: Config, node: str):
    return TASKS[keys.node_kind(config, node)]


__all__ = ["preprocess_task", "fit_head_task", "round_task", "evaluate_task", "export_task", "TASKS", "task_for", "node_cache_key", "retry_if_transient"]
