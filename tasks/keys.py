"""What makes a DAG node's result reusable, as the orchestrators ask it.

The decision itself lives in :mod:`zero1toa.identity` (:class:`~zero1toa.identity.NodeIdentity`:
upstream output digests, resolved settings, the contents of the code and data files the node runs,
library versions, external file digests, seed) and the DAG's shape in :mod:`zero1toa.dag`; this
module adds what only a cache needs:

- **Its cache key** (:func:`node_key`): the node's identity digest, the same one the round's
  ``.work`` resume marker, its training checkpoint, :func:`zero1toa.nodes.run_all` and the
  generated ``dvc.yaml`` are built on.
- **Are its artifacts still there?** :func:`artifact_record` (a cheap stat fingerprint plus
  content digests) and :func:`artifacts_valid`: a cached result is only trusted while its files
  are on disk unchanged; a user who deleted or damaged a file gets the node re-run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zero1toa.config import Config
from zero1toa.dag import (  # noqa: F401  (the DAG's shape, re-exported for the orchestrators)
    artifact_paths,
    dag_nodes,
    key_params,
    node_folder,
    node_kind,
    node_seed,
    output_digest,
    upstream_from_disk,
    upstream_nodes,
)
from zero1toa.identity import NodeIdentity, code_digest, node_identity
from zero1toa.utils.io import digest_obj, sha256_file
from zero1toa.utils.manifest import digest_path


def node_code_version(cfg: Config, node: str) -> str:
    """The digest of the code and data files ``node`` runs."""
    return code_digest(node_kind(cfg, node))


def identity(node: str, cfg: Config, run_dir: Path | str, upstream: dict[str, str], image_digest: str | None = None) -> NodeIdentity:
    return node_identity(cfg, node, run_dir, upstream, image_digest)


def node_key(
    node: str,
    cfg: Config,
    run_dir: Path | str,
    upstream: dict[str, str],
    image_digest: str | None = None,
) -> str:
    """The cache key of ``node``: its :class:`~zero1toa.identity.NodeIdentity` digest.

    ``upstream`` maps each upstream node to its *output digest* (:func:`output_digest` of its
    manifest): content hashes of files, so a re-run that reproduces identical files leaves every
    downstream key unchanged.
    """
    return node_identity(cfg, node, run_dir, upstream, image_digest).digest


def image_digest(image: Path | str) -> str:
    return sha256_file(Path(image))


# ----------------------------------------------------------------------------- artifacts


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


#: What this module adds; the DAG's shape (node_kind, upstream_nodes, key_params, artifact_paths,
#: ...) is re-exported from zero1toa.dag above and stays reachable as keys.<name>.
__all__ = ["identity", "node_code_version", "node_key", "image_digest", "fingerprint", "artifact_record", "artifacts_valid"]
