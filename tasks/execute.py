"""The task code: run one DAG node, record its artifacts, log it to MLflow, return a small result.

This is what every orchestrator executes for a node: the Prefect tasks in :mod:`tasks.nodes`
wrap it, and ``zero1toa node NAME`` (what each ``dvc.yaml`` stage runs) calls it directly, so a
node leaves the same files, the same manifest and the same MLflow record whichever way the user
launched it.

The result is deliberately small (paths, digests, key metrics; never tensors): it is what Prefect
persists as the cached result and what downstream nodes key on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from zero1toa import nodes
from zero1toa.config import Config

from . import keys
from . import tracking as tr

log = logging.getLogger("zero1toa.tasks")

#: Metrics copied into the result (and so into flow summaries / lineage) when a node reports them.
KEY_METRICS = (
    "final_loss",
    "final_l1",
    "num_gaussians",
    "resumed_from_iteration",
    "reprojection_error_px",
    "psnr_reference",
    "ssim_reference",
    "landmark_error",
    "fps_render",
    "clip_score_vit_b_32",
    "clip_score_vit_b_16",
    "clip_score_vit_l_14",
)


def run_node(
    node: str,
    run_dir: Path | str,
    cfg: Config,
    upstream: dict[str, str],
    image: Path | str | None = None,
    image_digest: str | None = None,
    tracking: tr.TrackingContext | None = None,
    launcher: str = "python",
) -> dict[str, Any]:
    """Execute ``node`` of the DAG in ``run_dir`` and return its result record.

    ``upstream`` maps the node's upstream nodes to their output digests (from their results, or
    :func:`tasks.keys.upstream_from_disk`). The record holds the cache key, the node's output
    digest, the artifacts' fingerprint and digests (checked before a cached result is reused),
    the node's key params and metrics, timings and the MLflow run id.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    kind = keys.node_kind(cfg, node)
    if kind == "preprocess" and image_digest is None and image is not None:
        image_digest = keys.image_digest(image)
    ident = keys.identity(node, cfg, run_dir, upstream, image_digest)
    key = ident.digest
    params = keys.key_params(cfg, node)
    run_id = tr.start_node_run(
        tracking,
        node,
        {
            f"{tr.TAG}.kind": kind,
            f"{tr.TAG}.cache_key": key,
            f"{tr.TAG}.launcher": launcher,
            f"{tr.TAG}.run_dir": str(run_dir),
            f"{tr.TAG}.run_name": cfg.run.name,
            **{f"{tr.TAG}.upstream.{k}": v for k, v in upstream.items()},
            **({f"{tr.TAG}.image": image_digest} if kind == "preprocess" else {}),
        },
    )
    try:
        manifest = nodes.execute_node(node, run_dir, cfg, ident, Path(image) if image is not None else None)
    except BaseException as exc:
        tr.fail_node_run(tracking, run_id, exc)
        raise
    paths = keys.artifact_paths(cfg, node)
    metrics = manifest.get("metrics") or {}
    result: dict[str, Any] = {
        "node": node,
        "kind": kind,
        "run_dir": str(run_dir),
        "run_name": cfg.run.name,
        "folder": keys.node_folder(cfg, node),
        "key": key,
        "upstream": dict(upstream),
        "output_digest": keys.output_digest(manifest),
        "outputs": dict(manifest.get("outputs") or {}),
        "artifacts": keys.artifact_record(run_dir, paths),
        "code_version": ident.code,
        "seed": keys.node_seed(cfg, node),
        "params": params,
        "metrics": {k: metrics[k] for k in KEY_METRICS if k in metrics},
        "node_seconds": (manifest.get("timings") or {}).get("total"),
        "seconds": round(time.perf_counter() - t0, 3),
        "mlflow_run_id": run_id,
        "launcher": launcher,
        "finished": time.time(),
    }
    tr.finish_node_run(tracking, run_id, manifest, result)
    log.info("%s done in %.1f s (outputs %s)", node, result["seconds"], result["output_digest"][:12])
    return result


def is_transient(exc: BaseException) -> bool:
    """Worth retrying? I/O hiccups, timeouts, lost connections, CUDA out-of-memory; not bugs or bad input.

    Config errors, missing inputs and programming errors fail at once: retrying them only delays
    the message the user needs.
    """
    from zero1toa.config import ConfigError

    if isinstance(exc, (ConfigError, FileNotFoundError, KeyError, ValueError, TypeError, AttributeError, AssertionError, NotImplementedError, ImportError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError, OSError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in ("out of memory", "cuda error", "timed out", "temporarily", "resource busy"))


__all__ = ["run_node", "is_transient", "KEY_METRICS"]
