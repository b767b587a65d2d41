"""SymGEN's updatable, versioned pseudo ground-truth dataset.

A dataset version is a folder with one table (``samples.parquet``: per sample its camera,
expression and pose, the round and generator that produced it, the avatar it was refined from,
and the digests of its frame, mask and landmark map) plus the PNGs it references, and a
manifest listing every sample's digests. Versions are immutable: a round writes a *new* version.

Frames are content-addressed: every PNG is stored once in the run's object store
(``<run>/objects/ab/abcdef....png``) and a version's ``frames/`` folder hard-links to it, so a
version that refreshes 2 of 40 clips adds only those clips' bytes, while each version folder is
still complete on its own (DVC tracks it as an ordinary output; DVC's cache deduplicates the
same way). Where hard links are impossible (another file system) files are copied.

Any version can be found again by its digest (:func:`find_version`) and two versions can be
diffed (:func:`diff_versions`: added, refreshed, dropped samples).
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from .. import faults
from ..train.samples import SampleTensors
from ..utils.io import atomic_dir, atomic_path, digest_obj, read_json, sha256_bytes, sha256_file, write_json_atomic

DATASET_FORMAT = "zero1toa-dataset/1"
TABLE_NAME = "samples.parquet"

#: Columns of the samples table (lists are stored as Parquet list columns).
COLUMNS = (
    "sample_id",  # "<clip_id>/<frame:03d>"
    "clip_id",
    "frame_index",
    "stage",  # spatial | temporal
    "clip_round",  # round name that created the clip
    "generated_round",  # round name that last (re)generated the frame
    "refresh_count",  # how often the clip was regenerated after it entered the dataset
    "last_refreshed",  # "<round>@<iteration>" of the frame's latest (re)generation
    "refresh_order",  # run-wide counter of (re)generations: the smallest is the stalest clip
    "generator",
    "source_avatar",  # digest of the avatar the frame was refined from (an avatar folder's digest, or of its parameters mid-round; "init:<digest>" for the initial Gaussians)
    "strength",
    "seed",
    "clip_source",  # synthetic | sequence:<file>
    "yaw_deg",
    "elevation_deg",
    "viewmat",  # 16 floats, world -> camera
    "K",  # 9 floats
    "resolution",
    "expression",  # E floats
    "jaw",  # 3 floats
    "frame",  # digest of the generated frame PNG
    "mask",  # digest of the mask PNG
    "landmarks",  # digest of the landmark map PNG (the condition the generator was given)
    "landmark_status",  # ok | unchecked (outside the detector's range) | regenerated | downweighted: <why> | dropped: <why>
    "landmark_error",  # extracted vs requested landmarks, mean distance / inter-ocular distance (NaN: not checked)
    "landmarks_extracted",  # 468 x (u, v) pixels found in the generated frame (empty: none)
    "sample_weight",  # how often the trainer draws the frame, relative (0: dropped)
)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_uint8(x: Tensor) -> np.ndarray:
    """[3, H, W] or [1, H, W] float in [0, 1] -> uint8 HWC (or HW)."""
    arr = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def from_uint8(arr: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.array(arr, copy=True)).float() / 255.0
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


class CorruptFrameError(OSError):
    """A stored frame cannot be decoded (truncated or overwritten)."""


class ObjectStore:
    """Content-addressed PNG store shared by all versions of one run."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.png"

    def put(self, image: np.ndarray) -> str:
        """Store a frame; an existing object of that name is kept only when its bytes are intact.

        A damaged object (truncated by a full disk, a crash, a user) is replaced by a fresh file
        (a new inode: the versions that hard-linked the damaged one keep their damage and are
        re-made by their own node), so a regenerated frame is never read back corrupt.
        """
        data = encode_png(image)
        digest = sha256_bytes(data)
        path = self.path(digest)
        if not self._intact(path, digest, len(data)):
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return digest

    @staticmethod
    def _intact(path: Path, digest: str, size: int | None = None) -> bool:
        try:
            if size is not None and path.stat().st_size != size:
                return False
            return sha256_file(path) == digest
        except FileNotFoundError:
            return False

    def get(self, digest: str) -> np.ndarray:
        path = self.path(digest)
        try:
            return np.asarray(Image.open(path))
        except (OSError, SyntaxError) as exc:  # PIL raises OSError for truncated files
            raise CorruptFrameError(f"dataset frame {path} cannot be read ({exc}): the run folder is damaged; re-run the round that made it") from exc

    def adopt(self, version: "DatasetVersion") -> int:
        """Link a version's frames into the store where missing; returns how many were added.

        The store is a cache, not an artifact: after ``dvc pull`` into a fresh checkout only
        the version folders exist, and the next round must still find every frame.
        """
        added = 0
        for png in sorted((Path(version.folder) / "frames").glob("*.png")) if version.folder else []:
            target = self.path(png.stem)
            if not target.exists() and self._intact(png, png.stem):
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(png, target)
                added += 1
        return added


@dataclass
class DatasetVersion:
    table: pd.DataFrame
    digest: str
    parent: str | None
    folder: Path | None = None
    meta: dict | None = None

    def __len__(self) -> int:
        return len(self.table)

    def clip_ids(self) -> list[str]:
        return list(dict.fromkeys(self.table["clip_id"].tolist()))

    def corrupt_frames(self) -> list[str]:
        """Frames of this version whose bytes no longer match their content address (their name)."""
        if self.folder is None:
            return []
        names = sorted(set(self.table["frame"]) | set(self.table["mask"]) | set(self.table["landmarks"]))
        return [d for d in names if not ObjectStore._intact(self.file_for(d), d)]

    def file_for(self, digest: str) -> Path:
        if self.folder is None:
            raise ValueError("this version is not on disk")
        return self.folder / "frames" / f"{digest}.png"


def table_digest(table: pd.DataFrame) -> str:
    rows = table.sort_values("sample_id").to_dict(orient="records")
    return digest_obj([{k: _plain(v) for k, v in r.items()} for r in rows])


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (np.floating,)):
        return round(float(v), 6)
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_version(folder: Path, table: pd.DataFrame, store: ObjectStore, parent: str | None, meta: dict | None = None) -> DatasetVersion:
    """Write an immutable version folder (atomically) whose frames hard-link into ``store``."""
    table = table[list(COLUMNS)].sort_values("sample_id").reset_index(drop=True)
    digest = table_digest(table)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        frames = tmp / "frames"
        frames.mkdir()
        for d in sorted(set(table["frame"]) | set(table["mask"]) | set(table["landmarks"])):
            _link_or_copy(store.path(d), frames / f"{d}.png")
        table.to_parquet(tmp / TABLE_NAME, index=False)
        faults.point("dataset:written")  # frames and table written, the manifest and the rename not yet
        write_json_atomic(
            tmp / "manifest.json",
            {
                "format": DATASET_FORMAT,
                "digest": digest,
                "parent": parent,
                "num_samples": len(table),
                "num_clips": int(table["clip_id"].nunique()),
                "samples": {r.sample_id: {"frame": r.frame, "mask": r.mask, "landmarks": r.landmarks} for r in table.itertuples()},
                "meta": meta or {},
            },
        )
    return DatasetVersion(table, digest, parent, folder, meta)


def load_version(folder: Path) -> DatasetVersion:
    folder = Path(folder)
    man_path = folder / "manifest.json"
    if not man_path.exists():
        raise FileNotFoundError(f"{folder} is not a dataset version (no manifest.json)")
    man = read_json(man_path)
    if man.get("format") != DATASET_FORMAT:
        raise ValueError(f"{man_path}: not a zero1toa dataset version")
    table = pd.read_parquet(folder / TABLE_NAME)
    if table_digest(table) != man["digest"]:
        raise ValueError(f"{folder}: the samples table does not match its manifest digest (edited or corrupt)")
    return DatasetVersion(table, man["digest"], man.get("parent"), folder, man.get("meta"))


def find_version(run_dir: Path, digest: str) -> DatasetVersion:
    """Locate a version of this run by (a prefix of) its digest."""
    hits = []
    for man in Path(run_dir).rglob("manifest.json"):
        try:
            data = read_json(man)
        except ValueError:
            continue
        if data.get("format") == DATASET_FORMAT and str(data.get("digest", "")).startswith(digest):
            hits.append(man.parent)
    if not hits:
        raise KeyError(f"no dataset version {digest} under {run_dir}")
    if len({read_json(h / 'manifest.json')['digest'] for h in hits}) > 1:
        raise KeyError(f"digest prefix {digest} is ambiguous under {run_dir}")
    return load_version(hits[0])


def diff_versions(old: DatasetVersion, new: DatasetVersion) -> dict[str, list[str] | int]:
    """Which samples ``new`` added, refreshed (frame changed), dropped, relative to ``old``."""
    a = dict(zip(old.table["sample_id"], old.table["frame"]))
    b = dict(zip(new.table["sample_id"], new.table["frame"]))
    return {
        "added": sorted(set(b) - set(a)),
        "dropped": sorted(set(a) - set(b)),
        "refreshed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
        "unchanged": sum(1 for k in set(a) & set(b) if a[k] == b[k]),
    }


def rows_to_tensors(table: pd.DataFrame, load_png) -> SampleTensors:
    """Decode a table's samples; ``load_png(digest) -> uint8 array``."""
    frames = torch.stack([from_uint8(load_png(d)) for d in table["frame"]])
    masks = torch.stack([from_uint8(load_png(d)) for d in table["mask"]])
    return SampleTensors(
        frames=frames,
        masks=masks,
        viewmats=torch.tensor(np.stack(table["viewmat"].map(np.asarray).tolist()), dtype=torch.float32).reshape(-1, 4, 4),
        Ks=torch.tensor(np.stack(table["K"].map(np.asarray).tolist()), dtype=torch.float32).reshape(-1, 3, 3),
        expressions=torch.tensor(np.stack(table["expression"].map(np.asarray).tolist()), dtype=torch.float32),
        jaws=torch.tensor(np.stack(table["jaw"].map(np.asarray).tolist()), dtype=torch.float32),
        resolution=int(table["resolution"].iloc[0]),
        weights=_weights(table),
    )


def _weights(table: pd.DataFrame) -> Tensor | None:
    """Sampling probabilities from ``sample_weight`` (None: uniform)."""
    if "sample_weight" not in table.columns:
        return None
    w = torch.tensor(table["sample_weight"].to_numpy(np.float64), dtype=torch.float32).clamp_min(0)
    if bool((w == w[0]).all()) or float(w.sum()) <= 0:
        return None
    return w / w.sum()
