"""Reading a run folder: the portrait and its fit, and every node's manifest.

Shared by the DAG's nodes (:mod:`zero1toa.nodes`) and by the libraries they call (evaluation,
reports), so those libraries need not import the node layer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .utils.io import read_json


def load_reference(run_dir: Path):
    """The portrait and its fit as rounds and evaluation need them."""
    from .preprocess.head_fit import load_fitted_head
    from .preprocess.pipeline import load_preprocess
    from .progressive.schedules import orbit_target
    from .symgen.round import Reference

    run_dir = Path(run_dir)
    pre = load_preprocess(run_dir / "preprocess")
    fitted = load_fitted_head(run_dir / "head")
    ref = Reference(
        image=torch.from_numpy(pre.reference.copy()).permute(2, 0, 1).float() / 255.0,
        mask=torch.from_numpy(pre.mask.copy()),
        camera=fitted.camera,
        expression=fitted.expression,
        jaw=fitted.jaw,
        target=orbit_target(fitted.head),
        completion=fitted.completion,
    )
    return fitted.head, ref


def read_run_manifests(run_dir: Path) -> dict[str, dict]:
    """Every node manifest of a run, keyed by node name (for lineage and reports)."""
    run_dir = Path(run_dir)
    found = {}
    for man in sorted(run_dir.rglob("manifest.json")):
        if "objects" in man.parts or man.parent.name == "dataset" or ".work" in man.parts:
            continue
        try:
            data = read_json(man)
        except ValueError:
            continue
        if "node" in data:
            found[data["node"]] = {**data, "folder": str(man.parent.relative_to(run_dir))}
    return found
