"""The evaluate node end to end on a tiny finished run: files, metrics, manifest, atomicity, CLI."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from zero1toa.env import apply_defaults

apply_defaults()
sys.path.insert(0, str(Path(__file__).parent))
import evaluate_fixtures as fx  # noqa: E402

from zero1toa.config import from_dict  # noqa: E402
from zero1toa.evaluate.run import CORE_KEYS, evaluate_run, latest_round_folder  # noqa: E402
from zero1toa.utils.io import read_json  # noqa: E402
from zero1toa.identity import code_digest  # noqa: E402
from zero1toa.utils.manifest import digest_path  # noqa: E402


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(run folder, EvaluateConfig, manifest) after evaluating the smoke run with one tiny CLIP."""
    base = tmp_path_factory.getbasetemp()
    run = fx.build_smoke_run(base / "shared_runs")
    clip = fx.build_tiny_clip(base / "tiny_clip_openai_norm")
    ev = dict(fx.SMOKE_EVALUATE, clip_models={"vit_l_14": None, "vit_b_16": None, "vit_b_32": str(clip)})
    cfg = from_dict(fx.smoke_dict(run.parent, run.name, ev))
    manifest = evaluate_run(run, "temporal/round_1", cfg.evaluate, seed=cfg.run.seed)
    return run, cfg.evaluate, manifest


def test_outputs_exist(evaluated):
    run, _, _ = evaluated
    out = run / "evaluate"
    for name in (
        "metrics.json", "summary.json", "manifest.json", "turntable.mp4", "expressions.mp4", "contact_sheet.png",
        "plots/loss_curves.png", "plots/metrics_per_round.png", "plots/loss_curves.csv",
        "plots/metrics_per_round.csv", "plots/plots.json",
    ):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in run.iterdir() if p.name.startswith(".evaluate")], "temporary folders left behind"


def test_metrics_json_is_flat_with_reasons(evaluated):
    run, cfg, _ = evaluated
    m = read_json(run / "evaluate" / "metrics.json")
    text = (run / "evaluate" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON for DVC
    for key in CORE_KEYS + ("num_gaussians", "clip_score_vit_b_32", "clip_score_vit_l_14"):
        assert key in m, key
    for key, value in m.items():
        if key in ("reasons", "details"):
            continue
        assert value is None or isinstance(value, (int, float)), (key, value)
        assert (value is None) == (key in m["reasons"]), key
    # CLIP: the tiny local model gives a cosine; the missing backbones say how to fix it
    assert -1.0 <= m["clip_score_vit_b_32"] <= 1.0
    assert -1.0 <= m["clip_identity_vit_b_32"] <= 1.0
    assert m["clip_score_vit_l_14"] is None
    assert "ViT-L/14" in m["reasons"]["clip_score_vit_l_14"] and "evaluate.clip_models.vit_l_14=" in m["reasons"]["clip_score_vit_l_14"]
    assert len(m["details"]["clip"]["renders"]) == len(cfg.clip_views_yaw_deg) * len(cfg.clip_expressions)
    summary = read_json(run / "evaluate" / "summary.json")
    assert summary == {k: v for k, v in m.items() if k not in ("reasons", "details")}


def test_metric_values_are_sane(evaluated):
    run, cfg, _ = evaluated
    m = read_json(run / "evaluate" / "metrics.json")
    # colours start from the photo, so the reference view already resembles it (measured on this
    # fixture: 22.9 dB, SSIM 0.84); bounds a broken renderer, camera or colour init would miss
    assert 18.0 < m["psnr_reference"] < 60.0
    assert 0.7 < m["ssim_reference"] <= 1.0
    assert m["determinism_max_abs_diff"] == 0.0
    assert m["temporal_change_expression"] > 0.0 and m["temporal_change_camera"] > 0.0
    assert 0.0 <= m["temporal_jitter_camera"] < 1.0
    sweep = m["details"]["face_detection"]
    assert set(sweep) == {f"{y:+.0f}" for y in cfg.sweep_yaw_deg}
    assert sweep["+0"] is True  # the frontal render of the photo-coloured avatar is a face
    assert m["face_detection_rate"] == pytest.approx(sum(bool(v) for v in sweep.values()) / len(sweep))
    assert m["landmark_error"] is not None and 0.0 <= m["landmark_error"] < 0.1  # measured 0.028 IOD
    # the README's claim: jaw_open opens the rendered mouth, not only the driving mesh's lips
    # (measured here: 0.058 inter-ocular distances for a driving gap of 0.255)
    assert m["mouth_open_driving"] > 0.1
    assert m["mouth_open_render"] is not None and m["mouth_open_render"] > 0.1 * m["mouth_open_driving"]
    assert m["num_gaussians"] == read_json(run / "temporal" / "round_1" / "avatar" / "avatar.json")["num_gaussians"]
    fps = m["details"]["fps"]
    assert m["fps_render"] > 0 and m["fps_animate_render"] > 0
    assert fps["width"] == fps["height"] == cfg.fps_resolution
    assert fps["num_gaussians"] == m["num_gaussians"]
    assert fps["backend"].startswith("cpu") or fps["backend"] == "gsplat"
    assert len(fps["render_times"]) == cfg.fps_repeats
    assert fps["device"]


def test_videos_and_contact_sheet(evaluated):
    from PIL import Image

    from zero1toa.render.video import read_video

    run, cfg, _ = evaluated
    frames, fps = read_video(run / "evaluate" / "turntable.mp4")
    assert frames.shape == (cfg.video_frames, cfg.resolution, cfg.resolution, 3)
    assert fps == pytest.approx(cfg.video_fps)
    assert frames.std(axis=0).mean() > 1.0  # the head turns: frames differ
    expr, _ = read_video(run / "evaluate" / "expressions.mp4")
    assert expr.shape[0] == cfg.video_frames
    sheet = np.asarray(Image.open(run / "evaluate" / "contact_sheet.png"))
    pad, top = 4, 18
    assert sheet.shape[0] == top + len(cfg.clip_expressions) * (cfg.resolution + pad) + pad
    assert sheet.shape[1] == 90 + len(cfg.clip_views_yaw_deg) * (cfg.resolution + pad) + pad


def test_plot_data_follows_round_manifests(evaluated):
    import csv

    run, _, _ = evaluated
    histories = [read_json(run / f / "manifest.json")["extra"]["losses"] for f in ("spatial/round_1", "temporal/round_1")]
    with open(run / "evaluate" / "plots" / "loss_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["round", "stage", "step", "global_step", "total", "l1"]
    assert len(rows) == sum(len(h) for h in histories)
    assert [r["round"] for r in rows] == ["spatial_1"] * len(histories[0]) + ["temporal_1"] * len(histories[1])
    assert float(rows[-1]["total"]) == pytest.approx(histories[1][-1]["total"])
    last_spatial = histories[0][-1]["step"]
    assert int(rows[len(histories[0])]["global_step"]) == last_spatial + histories[1][0]["step"]
    with open(run / "evaluate" / "plots" / "metrics_per_round.csv", newline="") as f:
        per_round = list(csv.DictReader(f))
    assert [r["round"] for r in per_round] == ["spatial_1", "temporal_1"]
    data = read_json(run / "evaluate" / "plots" / "plots.json")
    assert len(data["loss_curves"]) == len(rows)


def test_manifest_records_lineage(evaluated):
    run, cfg, manifest = evaluated
    on_disk = read_json(run / "evaluate" / "manifest.json")
    assert on_disk["node"] == manifest["node"] == "evaluate"
    assert on_disk["params"] == json.loads(json.dumps(asdict(cfg)))
    from zero1toa.utils.manifest import output_digest, read_manifest

    assert on_disk["inputs"] == {
        "avatar": digest_path(run / "temporal" / "round_1" / "avatar"),  # the round's outputs["avatar"]
        # whole upstream nodes: their output digests (what the producers' manifests name)
        "preprocess": output_digest(read_manifest(run / "preprocess")),
        "head": output_digest(read_manifest(run / "head")),
    }
    from zero1toa.evaluate.run import output_digest_of

    for rel, digest in on_disk["outputs"].items():
        assert output_digest_of(run / "evaluate" / rel) == digest, rel
    assert "metrics.json" in on_disk["outputs"] and "turntable.mp4" in on_disk["outputs"]
    assert on_disk["code_version"] == code_digest("evaluate")
    assert on_disk["seed"] == 0
    assert on_disk["timings"]["total"] > 0
    assert on_disk["metrics"]["psnr_reference"] == read_json(run / "evaluate" / "metrics.json")["psnr_reference"]


def test_failed_evaluation_keeps_the_previous_one(evaluated, monkeypatch):
    import zero1toa.evaluate.visuals as visuals

    run, cfg, _ = evaluated
    before = (run / "evaluate" / "metrics.json").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(visuals, "plot_metrics_per_round", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        evaluate_run(run, "temporal/round_1", cfg, seed=0)
    assert (run / "evaluate" / "metrics.json").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".evaluate")]


def test_unavailable_metric_is_null_with_reason(evaluated, tmp_path, monkeypatch, caplog):
    """A metric group that breaks nulls its keys (with the error) and logs; the rest still runs."""
    import shutil

    import zero1toa.evaluate.run as R

    run, cfg, _ = evaluated
    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def broken(*args, **kwargs):
        raise RuntimeError("no face models (simulated)")

    monkeypatch.setattr(R, "_detection_sweep", broken)
    with caplog.at_level("WARNING", logger="zero1toa.evaluate"):
        evaluate_run(copy, "spatial/round_1", cfg, seed=0)
    m = read_json(copy / "evaluate" / "metrics.json")
    assert m["face_detection_rate"] is None
    assert "simulated" in m["reasons"]["face_detection_rate"]
    assert any("face_detection_rate" in r.getMessage() for r in caplog.records)
    assert m["psnr_reference"] is not None
    assert read_json(copy / "evaluate" / "manifest.json")["inputs"]["avatar"] == digest_path(copy / "spatial" / "round_1" / "avatar")


def test_latest_round_and_missing_avatar(evaluated, tmp_path):
    run, cfg, _ = evaluated
    assert latest_round_folder(run) == "temporal/round_1"
    with pytest.raises(FileNotFoundError, match="no finished round"):
        latest_round_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="run that round first"):
        evaluate_run(run, "temporal/round_9", cfg, seed=0)


def test_node_and_cli(evaluated, tmp_path, capsys):
    import shutil

    from flows.cli import main
    from zero1toa.nodes import node_evaluate

    run, _, _ = evaluated
    copy = tmp_path / "smoke"
    shutil.copytree(run, copy)
    cfg = from_dict(fx.smoke_dict(tmp_path, "smoke"))
    man = node_evaluate(copy, cfg)
    assert man["extra"]["avatar_folder"] == "temporal/round_1"

    overrides = [f"evaluate.{k}={json.dumps(v).replace(' ', '')}" for k, v in fx.SMOKE_EVALUATE.items()]
    assert main(["evaluate", str(copy), "--avatar", "spatial/round_1", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "psnr_reference" in printed and "null: no local weights for ViT-B/32" in printed
    assert read_json(copy / "evaluate" / "manifest.json")["extra"]["avatar_folder"] == "spatial/round_1"
    assert math.isfinite(read_json(copy / "evaluate" / "metrics.json")["psnr_reference"])


def test_identity_per_yaw_and_dataset_consistency_are_reported(evaluated):
    """Every run (not only benchmark runs) gets the dlib identity sweep and dataset consistency."""
    run, cfg, manifest = evaluated
    m = read_json(run / "evaluate" / "metrics.json")
    ident = m["details"]["identity"]
    assert set(ident["per_yaw"]) == {f"{y:+.0f}" for y in cfg.identity_yaw_deg}
    assert ident["reference_face_found"] is True
    for yaw, row in ident["per_yaw"].items():
        assert (row["distance"] is None) == (not row["face_found"]), yaw
    for a in (0, 30, 60, 90):
        key = f"identity_distance_{a}"
        assert m[key] is None or 0.0 <= m[key] < 2.0
        assert (m[key] is None) == (key in m["reasons"])
        assert key in manifest["metrics"]
    rounds = m["details"]["dataset_consistency"]["per_round"]
    assert [r["round"] for r in rounds] == ["spatial/round_1", "temporal/round_1"]
    assert rounds[-1]["samples"] > rounds[0]["samples"]
    assert (m["dataset_consistency_final"] is None) == (rounds[-1]["views"] is None)
    assert "heldout" not in m["details"]  # not a benchmark run: no truth, no held-out metrics
