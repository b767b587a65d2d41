"""The DAG of one portrait as data: its nodes, their folders, what each reads.

``preprocess -> fit_head -> spatial_1..K -> temporal_1..M -> evaluate -> export``. Every
orchestrator (the Prefect flow, ``dvc repro``, the Dask batch, :func:`zero1toa.nodes.run_all`)
and the round's own resume logic ask the same questions about a node, so the answers live here,
free of any orchestrator import:

- **Which node is this?** :func:`node_kind` maps a round name to the kind ``round``.
- **What does it read?** Its upstream nodes (:func:`upstream_nodes`, whose *output digests*
  enter its identity) and the config keys it reads (:func:`key_params`).
- **Where are its artifacts?** :func:`node_folder`, :func:`artifact_paths`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataclasses import dataclass

from .config import Config, node_params
from .utils.manifest import output_digest as _output_digest
from .utils.manifest import read_manifest


@dataclass(frozen=True)
class RoundPlan:
    name: str  # "spatial_1"
    stage: str  # "spatial" | "temporal"
    index: int  # 0-based within its stage
    folder: str  # relative to the run folder, e.g. "spatial/round_1"


def plan_rounds(cfg: Config) -> list[RoundPlan]:
    """All rounds in DAG order: spatial rounds, then temporal rounds."""
    plans = []
    for stage, n in (("spatial", cfg.stages.spatial.rounds), ("temporal", cfg.stages.temporal.rounds)):
        for i in range(n):
            plans.append(RoundPlan(f"{stage}_{i + 1}", stage, i, f"{stage}/round_{i + 1}"))
    return plans


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.root) / cfg.run.name


def previous_round(cfg: Config, name: str) -> RoundPlan | None:
    plans = plan_rounds(cfg)
    names = [p.name for p in plans]
    if name not in names:
        raise KeyError(f"no round {name!r} in this configuration (rounds: {', '.join(names)})")
    i = names.index(name)
    return plans[i - 1] if i > 0 else None


def final_round(cfg: Config) -> RoundPlan:
    return plan_rounds(cfg)[-1]

#: Per-node folder (relative to the run folder) of the non-round nodes.
NODE_FOLDERS = {"preprocess": "preprocess", "fit_head": "head", "evaluate": "evaluate", "export": "export"}
NODE_KINDS = ("preprocess", "fit_head", "round", "evaluate", "export")


def dag_nodes(cfg: Config) -> list[str]:
    """Every node of the DAG in execution order."""
    return ["preprocess", "fit_head", *[p.name for p in plan_rounds(cfg)], "evaluate", "export"]


def _rounds(cfg: Config) -> dict[str, RoundPlan]:
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
    """The nodes whose outputs ``node`` reads directly (their output digests enter its identity)."""
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
    """The resolved settings ``node`` reads (the config part of its identity and its DVC params).

    Spatial rounds under the progressive schedule never read the temporal stage's settings (see
    ``zero1toa.nodes.round_clips``), so those are left out: tuning the temporal stage re-runs
    the temporal rounds, not the spatial ones. In the ablation (``stages.progressive: false``)
    every round draws from both stages, so both stay in.
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


def output_digest(manifest: dict) -> str:
    """One digest of a node's outputs (from its manifest): what downstream identities are built on."""
    return _output_digest(manifest)  # one definition, shared with what consumers record as inputs


def upstream_from_disk(cfg: Config, run_dir: Path, node: str) -> dict[str, str]:
    """Upstream output digests read back from the manifests in the run folder.

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


def artifact_paths(cfg: Config, node: str) -> list[str]:
    """The node's artifacts, relative to the run folder (checked before a result is reused, tracked by DVC)."""
    kind = node_kind(cfg, node)
    if kind == "round":
        folder = _rounds(cfg)[node].folder
        return [f"{folder}/dataset", f"{folder}/avatar", f"{folder}/manifest.json"]
    return [NODE_FOLDERS[kind]]


__all__ = [
    "RoundPlan",
    "plan_rounds",
    "run_dir_for",
    "previous_round",
    "final_round",
    "NODE_FOLDERS",
    "NODE_KINDS",
    "dag_nodes",
    "node_kind",
    "node_folder",
    "upstream_nodes",
    "key_params",
    "node_seed",
    "output_digest",
    "upstream_from_disk",
    "artifact_paths",
]
