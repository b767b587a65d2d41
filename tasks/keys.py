"""What makes a DAG node's result reusable: its cache key, its artifacts, and a check that they are intact.

Every orchestrator in the project (the Prefect flow, ``dvc repro``, the Dask batch) asks the same
questions about a node, so the answers live here, free of any orchestrator import:

- **Which node is this?** ``preprocess``, ``fit_head``, one round (``spatial_1``, ``temporal_2``,
  ...), ``evaluate``, ``export``; :func:`node_kind` maps a round name to the kind ``round``.
- **What does it read?** Its upstream nodes (:func:`upstream_nodes`) and the config keys it reads
  (:func:`key_params`: :data:`zero1toa.config.NODE_KEYS`, narrowed for spatial rounds, which do
  not read temporal settings while the progressive schedule is on).
- **Its cache key** (:func:`node_key`): a digest of the upstream nodes' *output digests* (hashes
  of files, never of tensors), the resolved config subtree, the code version of the packages the
  node runs, its seed, the input image's digest and the run folder. Changing an evaluation
  setting changes only ``evaluate``'s key; changing a temporal setting changes the temporal
  rounds' keys and, through their outputs, what follows them.
- **Where are its artifacts, and are they still there?** :func:`artifact_paths`,
  :func:`artifact_record` (a cheap stat fingerprint plus content digests) and
  :func:`artifacts_valid`: a cached result is only trusted while its files are on disk unchanged;
  a user who deleted a folder gets the node re-run, not a stale cache hit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zero1toa.config import Config, node_params
from zero1toa.nodes import ROUND_CODE, final_round, plan_rounds
from zero1toa.preprocess.pipeline import FIT_CODE, PREPROCESS_CODE
from zero1toa.utils.io import digest_obj, sha256_file
from zero1toa.utils.manifest import code_version, digest_path, read_manifest

KEY_FORMAT = "zero1toa-node-key/1"

#: Code each node kind runs (digested into its key: editing evaluation code re-runs evaluation only).
EVALUATE_CODE = ("zero1toa.evaluate", "zero1toa.avatar", "zero1toa.render", "zero1toa.head", "zero1toa.preprocess.facemesh", "zero1toa.nodes")
EXPORT_CODE = ("zero1toa.avatar", "zero1toa.nodes")
NODE_CODE: dict[str, tuple[str, ...]] = {
    "preprocess": PREPROCESS_CODE,
    "fit_head": FIT_CODE,
    "round": ROUND_CODE,
    "evaluate": EVALUATE_CODE,
    "export": EXPORT_CODE,
}

#: Per-node folder (relative to the run folder) of the non-round nodes.
NODE_FOLDERS = {"preprocess": "preprocess", "fit_head": "head", "evaluate": "evaluate", "export": "export"}


def dag_nodes(cfg: Config) -> list[str]:
    """Every node of the DAG in execution order."""
    return ["preprocess", "fit_head", *[p.name for p in plan_rounds(cfg)], "evaluate", "export"]


def _rounds(cfg: Config) -> dict[str, Any]:
    return {p.name: p for p in plan_rounds(cfg)}


def node_kind(cfg: Config, node: str) -> str:
    """``round`` for a round name of this configuration, else the node name itself."""
    if node in NODE_FOLDERS:
        return node
    if node in _rounds(cfg):
        return "round"
    raise KeyError(f"no DAG node {node!r} in this configuration (nodes: {', '.join(dag_nodes(cfg))})")


def node_folder(cfg: Config, node: str) -> str:
    """The node's folder relative to the run folder (where its manifest.json lives)."""
    return NODE_FOLDERS[node] if node in NODE_FOLDERS else _rounds(cfg)[node].folder


def upstream_nodes(cfg: Config, node: str) -> list[str]:
    """The nodes whose outputs ``node`` reads directly (their output digests enter its key)."""
    kind = node_kind(cfg, node)
    if kind == "preprocess":
        return []
    if kind == "fit_head":
        return ["preprocess"]
    if kind == "round":
        names = list(_rounds(cfg))
        i = names.index(node)
        # every round reloads the reference (preprocess) and the fitted head; later ones also
        # the previous round's avatar and dataset version
        return ["preprocess", "fit_head"] + ([names[i - 1]] if i > 0 else [])
    if kind == "evaluate":
        return ["preprocess", "fit_head", final_round(cfg).name]
    return [final_round(cfg).name]  # export


def key_params(cfg: Config, node: str) -> dict[str, Any]:
    """The resolved settings ``node`` reads (the config part of its cache key and DVC params).

    Spatial rounds under the progressive schedule never read the temporal stage's settings (see
    ``zero1toa.nodes.round_clips``), so those are left out of their key: tuning the temporal stage
    re-runs the temporal rounds, not the spatial ones. In the ablation (``stages.progressive:
    false``) every round draws from both stages, so both stay in.
    """
    kind = node_kind(cfg, node)
    params = node_params(cfg, kind)
    if kind == "round" and _rounds(cfg)[node].stage == "spatial" and cfg.stages.progressive:
        stages = dict(params["stages"])
        stages.pop("temporal", None)
        stages.pop("temporal_iterations", None)
        params = {**params, "stages": stages}
    return params


def node_seed(cfg: Config, node: str) -> int | None:
    """The seed a node draws from (None: the node is deterministic without one)."""
    kind = node_kind(cfg, node)
    if kind in ("round", "evaluate"):
        return int(cfg.run.seed)
    if kind == "fit_head":
        return int(cfg.head.seed)
    return None


def node_code_version(cfg: Config, node: str) -> str:
    return code_version(*NODE_CODE[node_kind(cfg, node)])


def node_key(
    node: str,
    cfg: Config,
    run_dir: Path | str,
    upstream: dict[str, str],
    image_digest: str | None = None,
) -> str:
    """The cache key of ``node``: identical inputs, settings, code and seed give the same key.

    ``upstream`` maps each upstream node to its *output digest* (:func:`output_digest` of its
    manifest): content hashes of files, so a re-run that reproduces identical files leaves every
    downstream key unchanged.
    """
    missing = [u for u in upstream_nodes(cfg, node) if u not in upstream]
    if missing:
        raise KeyError(f"cache key of {node} needs the output digests of {', '.join(missing)}")
    if node_kind(cfg, node) == "preprocess" and not image_digest:
        raise ValueError("the preprocess node's cache key needs the input image digest")
    return digest_obj(
        {
            "format": KEY_FORMAT,
            "node": node,
            "run_dir": str(Path(run_dir).resolve()),
            "upstream": {u: upstream[u] for u in upstream_nodes(cfg, node)},
            "params": key_params(cfg, node),
            "code": node_code_version(cfg, node),
            "seed": node_seed(cfg, node),
            "image": image_digest if node_kind(cfg, node) == "preprocess" else None,
        }
    )


def output_digest(manifest: dict) -> str:
    """One digest of a node's outputs (from its manifest): what downstream keys are built on."""
    return digest_obj(manifest.get("outputs", {}))


def image_digest(image: Path | str) -> str:
    return sha256_file(Path(image))


def upstream_from_disk(cfg: Config, run_dir: Path, node: str) -> dict[str, str]:
    """Upstream output digests read back from the manifests in the run folder (DVC stages use this).

    Fails with the missing node named when an upstream node has not run yet.
    """
    run_dir = Path(run_dir)
    found = {}
    for up in upstream_nodes(cfg, node):
        man = read_manifest(run_dir / node_folder(cfg, up))
        if not man:
            raise FileNotFoundError(f"{node} needs {up}'s outputs in {run_dir / node_folder(cfg, up)}: run {up} first")
        found[up] = output_digest(man)
    return found


# ----------------------------------------------------------------------------- artifacts


def artifact_paths(cfg: Config, node: str) -> list[str]:
    """The node's artifacts, relative to the run folder (checked on cache hits, tracked by DVC)."""
    kind = node_kind(cfg, node)
    if kind == "round":
        folder = _rounds(cfg)[node].folder
        return [f"{folder}/dataset", f"{folder}/avatar", f"{folder}/manifest.json"]
    return [NODE_FOLDERS[kind]]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def fingerprint(run_dir: Path, paths: list[str]) -> str | None:
    """A cheap identity of the artifacts: relative path, size and mtime of every file.

    None when any artifact is missing.
    """
    run_dir = Path(run_dir)
    rows = []
    for rel in paths:
        p = run_dir / rel
        if not p.exists():
            return None
        for f in _files(p):
            st = f.stat()
            rows.append((f.relative_to(run_dir).as_posix(), st.st_size, st.st_mtime_ns))
    return digest_obj(rows)


def artifact_record(run_dir: Path, paths: list[str]) -> dict[str, Any]:
    """Fingerprint + content digest of each artifact, stored in the node's (cached) result."""
    run_dir = Path(run_dir)
    return {
        "paths": list(paths),
        "fingerprint": fingerprint(run_dir, paths),
        "digests": {rel: digest_path(run_dir / rel) for rel in paths},
    }


def artifacts_valid(result: dict, verify_content: bool | None = None) -> bool:
    """Are a (cached) result's artifacts still on disk, unchanged?

    The stat fingerprint decides in the common case; when it differs (files restored by ``dvc
    checkout``/``pull``, copied to shared storage, ...) the content digests decide, so identical
    files restored elsewhere still count. ``ZERO1TOA_VERIFY_CONTENT=1`` always checks content.
    """
    record = result.get("artifacts") or {}
    run_dir = Path(result.get("run_dir", "."))
    paths = record.get("paths") or []
    if not paths:
        return False
    if verify_content is None:
        verify_content = os.environ.get("ZERO1TOA_VERIFY_CONTENT", "0") not in ("", "0", "false")
    fp = fingerprint(run_dir, paths)
    if fp is None:
        return False
    if fp == record.get("fingerprint") and not verify_content:
        return True
    digests = record.get("digests") or {}
    return all(digest_path(run_dir / rel) == digests.get(rel) for rel in paths)


__all__ = [
    "KEY_FORMAT",
    "NODE_CODE",
    "dag_nodes",
    "node_kind",
    "node_folder",
    "upstream_nodes",
    "key_params",
    "node_seed",
    "node_code_version",
    "node_key",
    "output_digest",
    "image_digest",
    "upstream_from_disk",
    "artifact_paths",
    "fingerprint",
    "artifact_record",
    "artifacts_valid",
]
