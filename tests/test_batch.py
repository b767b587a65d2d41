"""The batch flow: three tiny portraits through Prefect's Dask task runner on a 2-worker LocalCluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import SMOKE  # the orchestration fixture comes from conftest

from zero1toa.env import apply_defaults

apply_defaults()


def _portraits(folder: Path) -> Path:
    """Three portraits from the bundled sample: as is, mirrored, and re-framed."""
    from PIL import Image

    from zero1toa.sample import sample_portrait

    folder.mkdir(parents=True)
    img = sample_portrait()
    Image.fromarray(img).save(folder / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(folder / "mirrored.png")
    Image.fromarray(np.ascontiguousarray(img[24:, 12:])).save(folder / "Re framed.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_batch_helpers_name_runs_and_reject_clashes(orchestration, tmp_path):
    # importing flows.batch imports Prefect: the session server must be configured first
    from flows.batch import find_portraits, portrait_configs, run_name_for
    from flows.config import compose

    folder = _portraits(tmp_path / "in")
    images = find_portraits(folder)
    assert [p.name for p in images] == ["Re framed.jpg", "astronaut.png", "mirrored.png"]
    assert [run_name_for(p) for p in images] == ["Re_framed", "astronaut", "mirrored"]
    cfgs = portrait_configs(images, compose(["preset=smoke"]))
    assert [c["run"]["name"] for c in cfgs] == ["Re_framed", "astronaut", "mirrored"]
    (folder / "astronaut.jpg").write_bytes((folder / "astronaut.png").read_bytes())
    with pytest.raises(ValueError, match="astronaut"):
        portrait_configs(find_portraits(folder), compose(["preset=smoke"]))
    with pytest.raises(FileNotFoundError):
        find_portraits(tmp_path / "missing")


@pytest.mark.slow
def test_three_portraits_on_a_two_worker_local_cluster(orchestration, tmp_path):
    from flows.batch import run_batch
    from flows.config import compose
    from flows.tracking import runs_frame

    folder = _portraits(tmp_path / "portraits")
    shared = tmp_path / "shared"
    base = compose(SMOKE + [f"run.root={shared}"])
    summary = run_batch(folder, base, workers=2)
    assert summary["failed"] == {}
    names = ["Re_framed", "astronaut", "mirrored"]
    assert sorted(summary["portraits"]) == names
    for name in names:
        s = summary["portraits"][name]
        assert len(s["executed"]) == 6 and s["cached"] == []
        assert Path(s["run_dir"]) == (shared / name).resolve()
        assert (shared / name / "export" / "avatar_neutral.ply").exists()
    assert any((shared / ".prefect-results").iterdir())  # the cache lives on the shared root too
    # two workers: at least two portraits' pipeline runs overlapped in time
    spans = []
    for name in names:
        df = runs_frame(name)
        parent = df[(df["tags.zero1toa.parent"] == "true") & (df["tags.zero1toa.run_dir"] == str((shared / name).resolve()))].iloc[0]
        spans.append((parent["start_time"], parent["end_time"]))
    spans.sort()
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    again = run_batch(folder, base, workers=2)
    assert all(s["executed"] == [] for s in again["portraits"].values())
