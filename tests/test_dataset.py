"""SymGEN's versioned dataset: immutable versions, shared bytes, lookup by digest, diffs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from zero1toa.symgen.dataset import COLUMNS, ObjectStore, diff_versions, find_version, load_version, write_version


def _rows(store: ObjectStore, clip: str, frames: int, value: int, round_name: str) -> list[dict]:
    rows = []
    for f in range(frames):
        img = np.full((8, 8, 3), value + f, np.uint8)
        rows.append(
            {
                "sample_id": f"{clip}/{f:03d}", "clip_id": clip, "frame_index": f, "stage": "spatial",
                "clip_round": "spatial_1", "generated_round": round_name, "refresh_count": 0, "last_refreshed": f"{round_name}@0",
                "refresh_order": 0, "generator": "test", "landmark_status": "unchecked", "landmark_error": float("nan"),
                "landmarks_extracted": [], "sample_weight": 1.0,
                "source_avatar": "init", "strength": 1.0, "seed": 0, "clip_source": "synthetic",
                "yaw_deg": 10.0 * f, "elevation_deg": 0.0, "viewmat": np.eye(4).reshape(-1).tolist(),
                "K": np.eye(3).reshape(-1).tolist(), "resolution": 8, "expression": [0.0, 0.5], "jaw": [0.0, 0.0, 0.0],
                "frame": store.put(img), "mask": store.put(np.full((8, 8), 255, np.uint8)),
                "landmarks": store.put(np.zeros((8, 8, 3), np.uint8)),
            }
        )  # fmt: skip
    return rows


@pytest.fixture()
def two_versions(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    v1 = write_version(tmp_path / "r1" / "dataset", pd.DataFrame(_rows(store, "a", 3, 10, "r1") + _rows(store, "b", 3, 50, "r1")), store, None)
    # round 2: clip a refreshed (new pixels), clip b untouched, clip c added
    table = pd.DataFrame(_rows(store, "a", 3, 100, "r2") + _rows(store, "b", 3, 50, "r1") + _rows(store, "c", 2, 200, "r2"))
    v2 = write_version(tmp_path / "r2" / "dataset", table, store, v1.digest)
    return tmp_path, store, v1, v2


def test_new_version_leaves_the_old_one_intact_and_loadable(two_versions):
    root, store, v1, v2 = two_versions
    again = load_version(root / "r1" / "dataset")
    assert again.digest == v1.digest and len(again) == 6
    assert v2.parent == v1.digest and len(v2) == 8
    for d in again.table["frame"]:
        assert (root / "r1" / "dataset" / "frames" / f"{d}.png").exists()


def test_unchanged_samples_share_bytes_and_refreshed_ones_do_not(two_versions):
    root, store, v1, v2 = two_versions
    old = dict(zip(v1.table.sample_id, v1.table.frame))
    new = dict(zip(v2.table.sample_id, v2.table.frame))
    assert old["b/000"] == new["b/000"] and old["a/000"] != new["a/000"]
    ino = lambda version, d: os.stat(version.file_for(d)).st_ino  # noqa: E731
    assert ino(v1, old["b/000"]) == ino(v2, new["b/000"]) == os.stat(store.path(old["b/000"])).st_ino


def test_diff_and_lookup_by_digest(two_versions):
    root, store, v1, v2 = two_versions
    d = diff_versions(v1, v2)
    assert d["refreshed"] == ["a/000", "a/001", "a/002"]
    assert d["added"] == ["c/000", "c/001"]
    assert d["dropped"] == [] and d["unchanged"] == 3
    assert find_version(root, v1.digest[:12]).digest == v1.digest
    assert find_version(root, v2.digest).folder == root / "r2" / "dataset"
    with pytest.raises(KeyError):
        find_version(root, "ffffffffff")


def test_edited_table_is_detected(two_versions):
    root, store, v1, v2 = two_versions
    path = root / "r1" / "dataset" / "samples.parquet"
    t = pd.read_parquet(path)
    t.loc[0, "yaw_deg"] = 99.0
    t.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_version(root / "r1" / "dataset")


def test_columns_are_documented():
    assert len(COLUMNS) == len(set(COLUMNS))
    for c in ("frame", "mask", "landmarks", "source_avatar", "generator", "generated_round", "expression", "viewmat"):
        assert c in COLUMNS
