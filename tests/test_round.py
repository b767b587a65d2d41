"""A SymGEN round on the smoke scale: versions, refreshes, loss, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zero1toa.avatar.checkpoint import load_avatar
from zero1toa.config import from_dict
from zero1toa.nodes import node_round, plan_rounds
from zero1toa.symgen.dataset import diff_versions, load_version
from zero1toa.utils.io import read_json

SMOKE = {
    "generator": {"resolution": 64, "supersample": 1},
    "avatar": {"init": {"num_gaussians": 1500}},
    "stages": {
        "spatial": {"rounds": 1, "clips_per_round": 2, "frames_per_clip": 3},
        "temporal": {"rounds": 1, "clips_per_round": 2, "frames_per_clip": 3},
        "spatial_iterations": 40,
        "temporal_iterations": 40,
    },
    "symgen": {"refresh_every": 10},
    "train": {"checkpoint_every": 10, "log_every": 5, "densify": {"refine_start": 5, "refine_every": 10, "max_gaussians": 3000}},
    "run": {"progress": False},
}


def _run_copy(fitted_run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("preprocess", "head"):
        shutil.copytree(fitted_run / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def two_rounds(fitted_run, tmp_path_factory):
    run = _run_copy(fitted_run, tmp_path_factory.mktemp("rounds") / "run")
    cfg = from_dict(SMOKE)
    m1 = node_round(run, cfg, "spatial_1")
    m2 = node_round(run, cfg, "temporal_1")
    return run, cfg, m1, m2


def test_round_writes_a_new_version_and_keeps_the_old(two_rounds):
    run, cfg, m1, m2 = two_rounds
    v1 = load_version(run / "spatial" / "round_1" / "dataset")
    v2 = load_version(run / "temporal" / "round_1" / "dataset")
    assert v1.digest == m1["outputs"]["dataset"] and v2.digest == m2["outputs"]["dataset"]
    assert v2.parent == v1.digest
    d = diff_versions(v1, v2)
    assert len(d["added"]) == 2 * 3  # two temporal clips of three frames
    # the stalest-first policy covers the whole dataset: the spatial clips are refreshed in the
    # temporal round too (the first version never refreshed them after their stage)
    assert len(d["refreshed"]) == 2 * 3 and d["unchanged"] == 0
    assert m2["metrics"]["refreshes"] == 3  # iterations 10, 20, 30 (refresh_every=10)
    assert set(v2.table["last_refreshed"].str.split("@").str[0]) == {"temporal_1"}
    refreshed_now = {c for e in m2["extra"]["refresh_log"] for c in e["clips"]}
    assert refreshed_now == set(v2.table["clip_id"])  # every clip of the dataset, once or more
    # lineage: a refreshed frame names the avatar it was refined from by content digest
    mid = v2.table[v2.table["refresh_count"] > 0]["source_avatar"]
    assert len(mid) and mid.str.fullmatch(r"[0-9a-f]{64}").all()
    assert (run / "spatial" / "round_1" / ".work").exists() is False  # working state cleaned up


def test_refreshed_samples_change_and_frames_are_shared(two_rounds):
    from zero1toa.symgen.dataset import ObjectStore

    run, cfg, m1, m2 = two_rounds
    v1 = load_version(run / "spatial" / "round_1" / "dataset")
    v2 = load_version(run / "temporal" / "round_1" / "dataset")
    old = v1.table.set_index("sample_id")
    new = v2.table.set_index("sample_id")
    store = ObjectStore(run / "objects")
    for sid in old.index:
        assert new.at[sid, "frame"] != old.at[sid, "frame"], sid
        a = store.get(old.at[sid, "frame"]).astype(float)
        b = store.get(new.at[sid, "frame"]).astype(float)
        assert abs(a - b).mean() > 0.05, sid  # regenerated pixels, not just a new digest
    # version folders hard-link the run's object store (one copy of every frame)
    d = new["frame"].iloc[0]
    assert os.stat(v2.file_for(d)).st_ino == os.stat(store.path(d)).st_ino
    assert m1["metrics"]["refreshes"] == 3


def test_loss_decreases_over_a_round(two_rounds):
    run, cfg, m1, m2 = two_rounds
    losses = [r["total"] for r in m1["extra"]["losses"]]
    assert losses[-1] < losses[0], losses
    assert m1["extra"]["active_loss_terms"]["l1"] == 10.0
    assert "lpips" in m1["extra"]["inactive_loss_terms"]  # no local LPIPS weights here: recorded as off


def test_round_lineage_records_inputs(two_rounds):
    run, cfg, m1, m2 = two_rounds
    assert m2["inputs"]["previous_dataset"] == m1["outputs"]["dataset"]
    assert m2["inputs"]["previous_avatar"] == m1["outputs"]["avatar"]
    info = read_json(run / "temporal" / "round_1" / "avatar" / "avatar.json")
    assert info["trained_on_dataset"] == m2["outputs"]["dataset"]


CHILD = r"""
import json, sys
from pathlib import Path
from zero1toa.env import apply_defaults; apply_defaults()
import torch; torch.set_num_threads(1)
from zero1toa.config import from_dict
from zero1toa.nodes import node_round
cfg = from_dict(json.loads(Path(sys.argv[2]).read_text()))
node_round(Path(sys.argv[1]), cfg, sys.argv[3] if len(sys.argv) > 3 else "spatial_1")
"""


def test_killed_round_resumes_from_its_checkpoint(fitted_run, tmp_path):
    cfg_dict = json.loads(json.dumps(SMOKE))
    cfg_dict["stages"]["spatial_iterations"] = 60
    cfg_dict["train"]["checkpoint_every"] = 10
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg_dict))
    killed = _run_copy(fitted_run, tmp_path / "killed")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ckpt = killed / "spatial" / "round_1" / ".work" / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(killed), str(cfg_path)], env=env)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the round finished before it could be killed"
    time.sleep(0.3)  # let it get past the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "spatial" / "round_1" / "avatar").exists()  # nothing half-written
    saved_step = torch.load(ckpt, weights_only=True)["step"]
    assert saved_step >= 10

    torch.set_num_threads(1)
    cfg = from_dict(cfg_dict)
    resumed = node_round(killed, cfg, "spatial_1")
    assert resumed["metrics"]["resumed_from_iteration"] >= 10
    assert resumed["extra"]["losses"][-1]["step"] == 60

    fresh = _run_copy(fitted_run, tmp_path / "fresh")
    straight = node_round(fresh, cfg, "spatial_1")
    assert straight["metrics"]["resumed_from_iteration"] == 0
    a, _, _ = load_avatar(killed / "spatial" / "round_1" / "avatar")
    b, _, _ = load_avatar(fresh / "spatial" / "round_1" / "avatar")
    assert a.num_gaussians == b.num_gaussians
    for k in ("means", "sh0", "opacities"):
        diff = (a.params[k] - b.params[k]).abs().max().item()
        assert diff < 1e-4, f"{k} differs by {diff} after resume"
    assert resumed["outputs"]["dataset"] == straight["outputs"]["dataset"]


def test_a_round_after_the_first_killed_mid_way_resumes(fitted_run, tmp_path):
    """SIGKILL inside the *second* round (it trains on the first round's dataset, refreshes clips
    of both stages): the re-run resumes from its checkpoint, which loads with weights_only (the
    working table lives in .work/table_<step>.parquet, not in the checkpoint), and ends where an
    uninterrupted run ends."""
    cfg_dict = json.loads(json.dumps(SMOKE))
    cfg_dict["stages"]["temporal_iterations"] = 60
    cfg = from_dict(cfg_dict)
    base = _run_copy(fitted_run, tmp_path / "base")
    torch.set_num_threads(1)
    node_round(base, cfg, "spatial_1")
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    shutil.copytree(base, killed)
    shutil.copytree(base, fresh)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg_dict))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    work = killed / "temporal" / "round_1" / ".work"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), str(cfg_path), "temporal_1"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while not (work / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the round finished before it could be killed"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(work / "checkpoint.pt", weights_only=True)  # plain tensors and values only
    assert state["step"] >= 10 and any(work.glob("table_*.parquet"))
    resumed = node_round(killed, cfg, "temporal_1")
    assert resumed["metrics"]["resumed_from_iteration"] >= 10
    straight = node_round(fresh, cfg, "temporal_1")
    assert resumed["outputs"]["dataset"] == straight["outputs"]["dataset"]
    assert resumed["extra"]["refresh_log"] == straight["extra"]["refresh_log"]
    a, _, _ = load_avatar(killed / "temporal" / "round_1" / "avatar")
    b, _, _ = load_avatar(fresh / "temporal" / "round_1" / "avatar")
    for k in ("means", "sh0", "opacities"):
        assert (a.params[k] - b.params[k]).abs().max().item() < 1e-4, k


def test_sds_baseline_rounds_through_the_same_node(fitted_run, tmp_path):
    """train.mode=sds: the paper's baseline runs through node_round; no dataset, chain intact."""
    from zero1toa.nodes import round_is_complete

    run = _run_copy(fitted_run, tmp_path / "sds")
    cfg = from_dict(
        {
            "generator": {"kind": "tiny", "resolution": 64},
            "train": {"mode": "sds", "checkpoint_every": 0},
            "avatar": {"init": {"num_gaussians": 1200}},
            "stages": {
                "spatial": {"rounds": 1, "clips_per_round": 1, "frames_per_clip": 4},
                "temporal": {"rounds": 1, "clips_per_round": 1, "frames_per_clip": 4},
                "spatial_iterations": 3,
                "temporal_iterations": 3,
            },
            "run": {"progress": False},
        }
    )
    m1 = node_round(run, cfg, "spatial_1")
    m2 = node_round(run, cfg, "temporal_1")
    assert set(m1["outputs"]) == {"avatar"} and m1["extra"]["mode"] == "sds"
    assert m2["inputs"]["previous_avatar"] == m1["outputs"]["avatar"] and "previous_dataset" not in m2["inputs"]
    assert not (run / "spatial" / "round_1" / "dataset").exists()
    assert all(round_is_complete(run, p) for p in plan_rounds(cfg))
    with pytest.raises(Exception, match="generator=animatediff"):
        from_dict({"train": {"mode": "sds"}})


def test_training_with_a_progress_bar(fitted_run, tmp_path, capsys):
    """The interactive path (tqdm bar with loss postfix), which the other tests switch off."""
    cfg_dict = json.loads(json.dumps(SMOKE))
    cfg_dict["run"]["progress"] = True
    cfg_dict["stages"]["spatial_iterations"] = 10
    run = _run_copy(fitted_run, tmp_path / "bar")
    m = node_round(run, from_dict(cfg_dict), "spatial_1")
    assert m["extra"]["losses"][-1]["step"] == 10
    err = capsys.readouterr().err
    assert "spatial_1" in err and "loss=" in err


def test_refresh_schedule_predicts_what_the_rounds_did(two_rounds):
    """`zero1toa schedule`'s coverage table comes from the same decisions the rounds take."""
    from collections import Counter

    from zero1toa.nodes import refresh_schedule

    run, cfg, m1, m2 = two_rounds
    sched = refresh_schedule(cfg)
    for name, man in (("spatial_1", m1), ("temporal_1", m2)):
        did = Counter(c for e in man["extra"]["refresh_log"] for c in e["clips"])
        predicted = sched[sched["round"] == name].set_index("clip_id")["refreshes"].to_dict()
        assert {c: n for c, n in predicted.items() if n} == dict(did), name
