"""Dataset consistency: how much a run's pseudo ground truth disagrees with itself.

SymGEN's claim is that refreshing the dataset from the avatar makes an inconsistent generator's
pseudo ground truth consistent. This measures it on the dataset versions themselves, for every
run (no truth needed), two ways per version:

- **across views** (``views``): pairs of frames from *different clips* that show (nearly) the same
  view and expression (yaw and elevation within ``view_tolerance_deg``, expression coefficients
  and jaw within ``expression_tolerance``) should be the same image; the figure is the mean
  absolute difference of such pairs, intensity in [0, 1], inside the union of their masks. With a
  perfectly consistent generator it is 0.
- **across refreshes** (``refresh``): a sample regenerated between the previous round's version and
  this one shows the same view and expression both times; the mean absolute difference of its two
  frames (same mask rule).

Lower is more consistent. A version with no pair to compare reports null with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..symgen.dataset import DatasetVersion, ObjectStore, load_version


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack(column.map(np.asarray).tolist()).astype(np.float64)


def same_view_pairs(table: pd.DataFrame, view_tolerance_deg: float = 3.0, expression_tolerance: float = 0.02, max_pairs: int = 200, seed: int = 0) -> list[tuple[int, int]]:
    """Row index pairs (different clips) showing nearly the same view and expression."""
    if len(table) < 2:
        return []
    yaw = table["yaw_deg"].to_numpy(np.float64)
    elev = table["elevation_deg"].to_numpy(np.float64)
    expr = np.concatenate([_matrix(table["expression"]), _matrix(table["jaw"])], 1)
    clip = table["clip_id"].to_numpy()
    close = (np.abs(yaw[:, None] - yaw[None]) <= view_tolerance_deg) & (np.abs(elev[:, None] - elev[None]) <= view_tolerance_deg)
    close &= np.abs(expr[:, None] - expr[None]).max(-1) <= expression_tolerance
    close &= clip[:, None] != clip[None]
    i, j = np.nonzero(np.triu(close, 1))
    pairs = list(zip(i.tolist(), j.tolist()))
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs


def _pair_difference(store: ObjectStore, frame_a: str, mask_a: str, frame_b: str, mask_b: str) -> float:
    a = store.get(frame_a).astype(np.float64) / 255.0
    b = store.get(frame_b).astype(np.float64) / 255.0
    m = np.maximum(store.get(mask_a), store.get(mask_b)).astype(np.float64) / 255.0
    if a.shape != b.shape:
        raise ValueError(f"frames of different sizes cannot be compared: {a.shape} vs {b.shape}")
    w = m[..., None] if a.ndim == 3 else m
    total = float(w.sum()) * (a.shape[-1] if a.ndim == 3 else 1)
    return float((np.abs(a - b) * w).sum() / total) if total > 0 else float(np.abs(a - b).mean())


def version_consistency(version: DatasetVersion, store: ObjectStore, previous: DatasetVersion | None = None, **pair_options) -> dict:
    """The two disagreement figures of one version (see the module docstring), with counts."""
    t = version.table.reset_index(drop=True)
    pairs = same_view_pairs(t, **pair_options)
    views = [_pair_difference(store, t.at[i, "frame"], t.at[i, "mask"], t.at[j, "frame"], t.at[j, "mask"]) for i, j in pairs]
    out: dict = {"samples": len(t), "view_pairs": len(pairs), "views": float(np.mean(views)) if views else None}
    if not views:
        out["views_reason"] = "no two clips of this version share a view and expression"
    refreshed: list[float] = []
    if previous is not None:
        old = previous.table.set_index("sample_id")
        for _, row in t.iterrows():
            sid = row["sample_id"]
            if sid in old.index and old.at[sid, "frame"] != row["frame"]:
                refreshed.append(_pair_difference(store, old.at[sid, "frame"], old.at[sid, "mask"], row["frame"], row["mask"]))
    out["refreshed_samples"] = len(refreshed)
    out["refresh"] = float(np.mean(refreshed)) if refreshed else None
    if not refreshed:
        out["refresh_reason"] = "no sample of the previous version was regenerated" if previous is not None else "first version"
    return out


def run_consistency(run_dir: Path, round_folders: list[str]) -> list[dict]:
    """One row per round with a dataset version, in DAG order: round, views, refresh, counts."""
    run_dir = Path(run_dir)
    store = ObjectStore(run_dir / "objects")
    rows, previous = [], None
    for folder in round_folders:
        ds = run_dir / folder / "dataset"
        if not (ds / "manifest.json").exists():
            continue
        version = load_version(ds)
        store.adopt(version)
        rows.append({"round": folder, **version_consistency(version, store, previous)})
        previous = version
    return rows
