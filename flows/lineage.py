"""Lineage of a portrait's run, read back as tables (pandas): which node made what, from what.

Two views of the same facts:

- **A run folder** (``zero1toa lineage sample`` or a path): the chain as it is on disk now, one
  row per node in DAG order, from the node manifests (input/output digests, params, metrics,
  code version, seed, and for rounds the dataset version each checkpoint was trained on), joined
  to the MLflow run that produced exactly those outputs (matched by output digest), whichever
  launcher ran it (Prefect, DVC, the CLI).
- **An MLflow parent run id**: the nodes of that one pipeline run, executed or reused from the
  cache (cached ones point at the run that produced them).

:func:`compare` puts two runs (folders or parent run ids) side by side: the settings, metrics
and node outputs that differ.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zero1toa.utils.manifest import output_digest

#: A few settings worth a column per node kind (dotted paths in the node's params).
KEY_PARAMS = {
    "preprocess": ("preprocess.resolution", "preprocess.mask_method"),
    "fit_head": ("head.kind", "head.fit_iterations"),
    "round": ("generator.kind", "generator.resolution", "avatar.init.num_gaussians", "stages.spatial_iterations", "stages.temporal_iterations"),
    "evaluate": ("evaluate.resolution",),
    "export": ("export.expressions",),
}
from tasks.execute import KEY_METRICS  # noqa: E402  (one list: what summaries and lineage show)

SUBTREE = {"preprocess": "preprocess", "fit_head": "head", "evaluate": "evaluate", "export": "export"}


def _short(d: str | None, n: int = 12) -> str | None:
    return d[:n] if isinstance(d, str) else d


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    from tasks.tracking import flatten

    return flatten(obj, prefix)


def _kind(node: str) -> str:
    return "round" if node.startswith(("spatial_", "temporal_")) else node


def node_order(names: list[str]) -> list[str]:
    """DAG order: preprocess, fit_head, spatial rounds, temporal rounds, evaluate, export."""

    def rank(n: str) -> tuple[int, int]:
        fixed = {"preprocess": 0, "fit_head": 1, "evaluate": 4, "export": 5}
        if n in fixed:
            return fixed[n], 0
        stage, _, k = n.partition("_")
        return (2 if stage == "spatial" else 3), int(k) if k.isdigit() else 0

    return sorted(names, key=rank)


def config_params(node: str, params: dict) -> dict[str, Any]:
    """A manifest's params as dotted config paths (some nodes record their subtree unprefixed)."""
    kind = _kind(node)
    sub = SUBTREE.get(kind)
    if sub and sub not in params:
        params = {sub: params}
    return _flatten(params)


def metric_name(node: str, key: str) -> str:
    """Evaluation metrics keep their names (the headline numbers); others are ``node/metric``."""
    return key if node == "evaluate" else f"{node}/{key}"


# ----------------------------------------------------------------------------- targets


def resolve_target(target: str | None, root: str | Path | None = None) -> tuple[str, Any]:
    """``("folder", Path)`` for a run folder / run name, ``("mlflow", run_id)`` otherwise."""
    if target is None:
        target = "sample"
    p = Path(target)
    if p.is_dir() and (any(p.glob("*/manifest.json")) or (p / "preprocess").exists()):
        return "folder", p.resolve()
    root = Path(root) if root is not None else Path("runs")
    if (root / target).is_dir():
        return "folder", (root / target).resolve()
    if all(c in "0123456789abcdef" for c in target.lower()) and len(target) >= 16:
        return "mlflow", target
    raise FileNotFoundError(f"{target!r} is neither a run folder, a run name under {root}, nor an MLflow run id")


def _producer_runs(run_name: str, run_dir: Path):
    """Executed (non-cached) node runs of the portrait's experiment, newest first, or an empty frame."""
    import pandas as pd

    from flows.tracking import runs_frame
    from tasks.tracking import guarded

    df = guarded("read MLflow runs", lambda: runs_frame(run_name), default=None)
    if df is None or df.empty or "tags.zero1toa.output_digest" not in df:
        return pd.DataFrame()
    df = df[df["tags.zero1toa.output_digest"].notna()]
    if "tags.zero1toa.cached" in df:
        df = df[df["tags.zero1toa.cached"] != "true"]
    df = df.assign(_same_dir=(df.get("tags.zero1toa.run_dir") == str(run_dir)))
    return df.sort_values(["_same_dir", "start_time"], ascending=[False, False])


def lineage_from_folder(run_dir: Path, with_mlflow: bool = True):
    """One row per node found in ``run_dir``, in DAG order, joined to its producing MLflow run."""
    import pandas as pd

    from zero1toa.runfolder import read_run_manifests

    run_dir = Path(run_dir).resolve()
    manifests = read_run_manifests(run_dir)
    if not manifests:
        raise FileNotFoundError(f"no node manifests under {run_dir}: has this run started?")
    producers = _producer_runs(run_dir.name, run_dir) if with_mlflow else pd.DataFrame()
    sources = _sources(manifests)
    rows = []
    for node in node_order(list(manifests)):
        man = manifests[node]
        kind = _kind(node)
        out_digest = output_digest(man)
        run = None
        if not producers.empty:
            hit = producers[producers["tags.zero1toa.output_digest"] == out_digest]
            run = hit.iloc[0] if len(hit) else None
        params = config_params(node, man.get("params") or {})
        metrics = man.get("metrics") or {}
        extra = man.get("extra") or {}
        row: dict[str, Any] = {
            "node": node,
            "folder": man.get("folder"),
            "mlflow_run_id": None if run is None else run["run_id"],
            "launcher": None if run is None else run.get("tags.zero1toa.launcher"),
            "dvc_exp": None if run is None else run.get("tags.zero1toa.dvc_exp"),
            "git_commit": None if run is None else _short(run.get("tags.mlflow.source.git.commit"), 10),
            "inputs": {k: _short(v) for k, v in (man.get("inputs") or {}).items()},
            # which node (and which of its outputs) each input digest is: the chain, joined by digest
            "from": {k: _source_name(sources, node, v) for k, v in (man.get("inputs") or {}).items()},
            "outputs": {k: _short(v) for k, v in (man.get("outputs") or {}).items()},
            "output_digest": _short(out_digest),
            "code_version": man.get("code_version"),
            "seed": man.get("seed"),
            "params": {k.split(".", 1)[-1] if kind != "round" else k: params[k] for k in KEY_PARAMS.get(kind, ()) if k in params},
            "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if k in KEY_METRICS and v is not None},
            "dataset": _short((man.get("outputs") or {}).get("dataset")) if kind == "round" else None,
            "checkpoint": _short((man.get("outputs") or {}).get("avatar")) if kind == "round" else None,
            "trained_on": _short(extra.get("trained_on_dataset")) if kind == "round" else None,
            "previous_dataset": _short((man.get("inputs") or {}).get("previous_dataset")) if kind == "round" else None,
            "seconds": (man.get("timings") or {}).get("total"),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _sources(manifests: dict[str, dict]) -> dict[str, list[tuple[str, str | None]]]:
    """digest -> [(producing node, output name or None for its whole output digest)]."""
    found: dict[str, list[tuple[str, str | None]]] = {}
    for node, man in manifests.items():
        found.setdefault(output_digest(man), []).append((node, None))
        for name, d in (man.get("outputs") or {}).items():
            found.setdefault(d, []).append((node, name))
    return found


def _source_name(sources: dict, consumer: str, digest: str | None) -> str | None:
    """``"preprocess"`` (the node's whole output) or ``"spatial_1.avatar"`` (one output); None: external."""
    for node, name in sources.get(digest, []):
        if node != consumer:
            return node if name is None else f"{node}.{name}"
    return None


def lineage_edges(run_dir: Path):
    """Every input every node recorded, joined to the node that produced that digest.

    One row per (consumer, input): ``digest`` (short), ``from_node`` and ``from_output`` (None
    when the input came from outside the run, e.g. the photo, or when no manifest in the folder
    produced it: a broken chain).
    """
    import pandas as pd

    from zero1toa.runfolder import read_run_manifests

    manifests = read_run_manifests(Path(run_dir).resolve())
    sources = _sources(manifests)
    rows = []
    for node in node_order(list(manifests)):
        for name, digest in (manifests[node].get("inputs") or {}).items():
            src = _source_name(sources, node, digest)
            up, _, output = (src or "").partition(".")
            rows.append({"node": node, "input": name, "digest": _short(digest), "from_node": up or None, "from_output": output or None})
    return pd.DataFrame(rows, columns=["node", "input", "digest", "from_node", "from_output"])


def lineage_from_parent(run_id: str):
    """The nodes of one pipeline run (MLflow parent run id): executed and cached children."""
    import pandas as pd

    from flows.tracking import get_run
    from tasks import tracking as tr

    parent = get_run(run_id)
    c = tr.client()
    children = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1000)
    rows = []
    for r in children:
        t = r.data.tags
        node = t.get("zero1toa.node", r.info.run_name)
        rows.append(
            {
                "node": node,
                "mlflow_run_id": r.info.run_id,
                "status": r.info.status,
                "cached": t.get("zero1toa.cached") == "true",
                "produced_by": t.get("zero1toa.source_run_id") or r.info.run_id,
                "launcher": t.get("zero1toa.launcher") or parent.data.tags.get("zero1toa.launcher"),
                "inputs": {k[len("zero1toa.in.") :]: _short(v) for k, v in t.items() if k.startswith("zero1toa.in.")},
                "outputs": {k[len("zero1toa.out.") :]: _short(v) for k, v in t.items() if k.startswith("zero1toa.out.")},
                "output_digest": _short(t.get("zero1toa.output_digest")),
                "trained_on": _short(t.get("zero1toa.trained_on_dataset")),
                "metrics": {k: round(v, 4) for k, v in r.data.metrics.items() if k in KEY_METRICS},
                "seconds": round((r.info.end_time - r.info.start_time) / 1000, 3) if r.info.end_time else None,
            }
        )
    if not rows:
        return pd.DataFrame(columns=["node"])
    df = pd.DataFrame(rows)
    order = {n: i for i, n in enumerate(node_order(df["node"].tolist()))}
    return df.sort_values("node", key=lambda s: s.map(order)).reset_index(drop=True)


def lineage(target: str | None = None, root: str | Path | None = None, with_mlflow: bool = True):
    kind, value = resolve_target(target, root)
    return lineage_from_folder(value, with_mlflow) if kind == "folder" else lineage_from_parent(value)


# ----------------------------------------------------------------------------- compare


def _view(target: str, root: str | Path | None) -> dict[str, dict]:
    """{"params": {dotted: v}, "metrics": {name: v}, "nodes": {node: output digest}} of a run."""
    kind, value = resolve_target(target, root)
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    nodes: dict[str, str] = {}
    if kind == "folder":
        from zero1toa.runfolder import read_run_manifests

        for node, man in read_run_manifests(value).items():
            params.update(config_params(node, man.get("params") or {}))
            for k, v in (man.get("metrics") or {}).items():
                metrics[metric_name(node, k)] = v
            nodes[node] = _short(output_digest(man))
    else:
        from flows.tracking import get_run

        run = get_run(value)
        params = dict(run.data.params)
        metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith("time/") and not k.startswith("nodes_")}
        for _, row in lineage_from_parent(value).iterrows():
            nodes[row["node"]] = row["output_digest"]
    return {"params": params, "metrics": metrics, "nodes": nodes}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def compare(a: str, b: str, root: str | Path | None = None, show_all: bool = False) -> dict[str, Any]:
    """Settings, metrics and node outputs of two runs side by side (only differences by default)."""
    import pandas as pd

    va, vb = _view(a, root), _view(b, root)
    tables = {}
    for section in ("params", "nodes", "metrics"):
        keys = list(dict.fromkeys([*va[section], *vb[section]]))
        if section == "nodes":
            keys = node_order(keys)
        rows = []
        for k in keys:
            x, y = va[section].get(k), vb[section].get(k)
            same = _same(x, y)
            if show_all or not same:
                row = {"key": k, "A": x, "B": y, "same": same}
                if section == "metrics" and isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    row["B - A"] = y - x
                rows.append(row)
        tables[section] = pd.DataFrame(rows, columns=["key", "A", "B", "same"] + (["B - A"] if section == "metrics" else []))
    return tables


__all__ = ["lineage", "lineage_edges", "lineage_from_folder", "lineage_from_parent", "compare", "resolve_target", "node_order", "metric_name"]
