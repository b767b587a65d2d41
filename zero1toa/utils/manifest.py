"""Manifests: what every DAG node writes beside its outputs.

A manifest records the content digests of the node's inputs and outputs, the resolved
parameters it read, the version of the code it ran, its seed and timings. It is what makes a
run auditable (which dataset version trained which checkpoint), cacheable (the orchestrator keys
on these digests, never on tensors) and resumable (a node whose manifest is complete and whose
output digests still match is done).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import digest_obj, read_json, sha256_file, sha256_tree, write_json_atomic

MANIFEST_NAME = "manifest.json"


#: Files that tools put beside artifacts and that are no part of them: DVC writes a .gitignore
#: into every folder holding one of its outputs.
NOT_ARTIFACTS = (".gitignore",)


def digest_path(path: Path) -> str:
    """Content digest of an artifact: a file's, or a folder's (its manifest and tool files left out)."""
    path = Path(path)
    return sha256_tree(path, exclude=(MANIFEST_NAME,), exclude_names=NOT_ARTIFACTS) if path.is_dir() else sha256_file(path)


@dataclass
class Manifest:
    node: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # name -> digest
    outputs: dict[str, str] = field(default_factory=dict)
    code_version: str = ""
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[dict] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "params": self.params,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "code_version": self.code_version,
            "seed": self.seed,
            "timings": self.timings,
            "warnings": self.warnings,
            "metrics": self.metrics,
            "extra": self.extra,
            "created": self.created,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
        }

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        write_json_atomic(path, self.to_dict())
        return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def output_digest(manifest: dict[str, Any]) -> str:
    """One digest of a node's outputs (from its manifest): what downstream identities are built on."""
    return digest_obj(manifest.get("outputs", {}))


def upstream_digest(folder: Path) -> str:
    """What a consumer records as its input ``folder`` (a whole upstream node's folder).

    The upstream node's :func:`output_digest`: the digest its own manifest, its MLflow run
    (``zero1toa.output_digest``), the lineage table and the consumer's identity all name, so
    ``zero1toa lineage`` can join every consumer to its producer. A folder no node wrote (no
    manifest) falls back to its content digest.
    """
    man = read_manifest(Path(folder))
    return output_digest(man) if man else digest_path(Path(folder))


class Timer:
    """Collects named wall-clock durations: ``with timer("fit"): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> "_Span":
        return _Span(self, name)


class _Span:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.timings[self.name] = round(self.timer.timings.get(self.name, 0.0) + time.perf_counter() - self.start, 4)
