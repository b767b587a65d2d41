"""The ground-truth benchmark's instruments: truth subject, frame alignment, simulated generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zero1toa.bench.simulated import SimulatedGenerator, SimulatorConfig, gaussian_blur, level_value, sdedit_blend
from zero1toa.bench.truth import Similarity, TruthSubject, align_heads, pipeline_cameras, truth_cameras
from zero1toa.generate.base import GenerationRequest
from zero1toa.head.base import HeadPose
from zero1toa.render.mesh_raster import rasterize_mesh


def _still(truth: TruthSubject, yaws, res=64, elev=0.0, preset="neutral"):
    e, j = truth.head.expression_preset(preset)
    n = len(yaws)
    return truth.render(truth.cameras(yaws, elev, res), e[None].expand(n, -1), j[None].expand(n, -1))


def test_subject_files_and_reference_photo(truth_dir, truth):
    from PIL import Image

    for name in ("head", "source.png", "source_mask.png", "reference.png", "subject.json", "preview.png"):
        assert (truth_dir / name).exists(), name
    photo = np.asarray(Image.open(truth_dir / "reference.png"))
    assert photo.shape == (256, 256, 4)
    alpha = photo[..., 3]
    # the alpha is the head's exact coverage: opaque in the middle of the face, clear in a corner
    assert alpha[128, 128] == 255 and alpha[2, 2] == 0
    assert 0.15 < (alpha > 127).mean() < 0.9
    # no backdrop patches in the truth head
    assert not bool((truth.head.face_labels == 6).any())


def test_render_is_deterministic_and_seen_mask_follows_the_view(truth):
    a = _still(truth, [0.0, 90.0, 180.0])
    b = _still(truth, [0.0, 90.0, 180.0])
    assert torch.equal(a.rgb, b.rgb)
    cover = a.alpha[:, 0] > 0.5
    seen = [(a.seen[i, 0][cover[i]] > 0.5).float().mean().item() for i in range(3)]
    assert seen[0] > 0.6  # the photo's own view: mostly seen
    assert seen[2] < 0.02  # the back of the head: never seen
    assert seen[0] > seen[1] > seen[2]


def test_unseen_regions_carry_detail_not_a_flat_fill(truth):
    out = _still(truth, [180.0], res=128)
    m = (out.alpha[0, 0] > 0.99) & (out.seen[0, 0] < 0.01)
    assert int(m.sum()) > 1000
    px = out.rgb[0][:, m]  # [3, N]
    assert float(px.std(1).mean()) > 0.03  # texture, not one colour per part
    # high-frequency content: neighbouring pixels differ
    lum = out.rgb[0].mean(0)
    dx = (lum[:, 1:] - lum[:, :-1]).abs()[m[:, 1:] & m[:, :-1]]
    assert float(dx.mean()) > 0.01


def test_expressions_move_the_truth(truth):
    a = _still(truth, [0.0], preset="neutral")
    b = _still(truth, [0.0], preset="jaw_open")
    assert float((a.rgb - b.rgb).abs().mean()) > 0.003


def _moved_head(head, sim: Similarity):
    """The same rig in another world frame: x' = (R^T (x - t)) / s (so sim maps it back)."""
    from zero1toa.head.facemesh_rig import FaceMeshRig

    Rt = sim.R.T
    template = ((head.template - sim.t) @ Rt.T) / sim.scale
    joints = ((head.joints - sim.t) @ Rt.T) / sim.scale
    blend = (head.blendshapes @ Rt.T) / sim.scale
    return FaceMeshRig(template, head.faces, head.skin_weights, joints, blend, head.face_labels, head.landmark_embedding, head.meta)


def test_alignment_recovers_a_similarity_and_cameras_round_trip(truth):
    ident = align_heads(truth.head, torch.zeros(9), torch.zeros(3), truth)
    assert abs(ident.scale - 1) < 1e-4 and ident.rms_m < 1e-5
    ang = 0.3
    R = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    sim = Similarity(1.7, R, torch.tensor([0.02, -0.05, 0.1]), 0.0)
    moved = _moved_head(truth.head, sim)
    found = align_heads(moved, torch.zeros(9), torch.zeros(3), truth)
    assert abs(found.scale - 1.7) < 1e-3
    assert torch.allclose(found.R, R, atol=1e-4)
    assert found.rms_m < 1e-5
    cams = truth.cameras([0.0, 75.0, -150.0], [0.0, 10.0, -20.0], 64)
    back = truth_cameras(pipeline_cameras(cams, found), found)
    assert torch.allclose(back.viewmats, cams.viewmats, atol=1e-4)
    # the moved head seen through the converted cameras is the truth seen through the originals
    a = rasterize_mesh(truth.rest, truth.head.faces, cams).face_ids
    b = rasterize_mesh(moved.neutral_vertices(), moved.faces, pipeline_cameras(cams, found)).face_ids
    assert (a == b).float().mean() > 0.995


def _request(truth, generator, yaws=(0.0, 40.0), res=64, seed=1, init=None, strength=1.0):
    cams_t = truth.cameras(list(yaws), 0.0, res)
    cams = pipeline_cameras(cams_t, generator.alignment)
    n = len(yaws)
    return GenerationRequest(
        reference=torch.zeros(3, res, res), landmark_maps=torch.zeros(n, 3, res, res), init_frames=init, strength=strength, seed=seed,
        cameras=cams, expressions=torch.zeros(n, 9), poses=HeadPose.neutral(n),
    )  # fmt: skip


def test_oracle_returns_the_truth_exactly(truth):
    gen = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "0", resolution=64)
    out = gen.generate(_request(truth, gen))
    ref = _still(truth, [0.0, 40.0])
    assert torch.allclose(out.frames, ref.rgb, atol=1e-5)
    assert torch.allclose(out.masks, ref.alpha, atol=1e-5)


def test_inconsistency_differs_per_call_and_is_reproducible(truth):
    gen = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "medium", resolution=64)
    a = gen.generate(_request(truth, gen, seed=1)).frames
    a2 = gen.generate(_request(truth, gen, seed=1)).frames
    b = gen.generate(_request(truth, gen, seed=2)).frames
    truth_frames = _still(truth, [0.0, 40.0]).rgb
    assert torch.equal(a, a2)
    assert float((a - b).abs().mean()) > 0.005
    err_med = float((a - truth_frames).abs().mean())
    high = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "high", resolution=64)
    err_high = float((high.generate(_request(truth, high, seed=1)).frames - truth_frames).abs().mean())
    assert 0.003 < err_med < err_high


def test_hallucination_redraws_only_what_the_photo_did_not_see(truth):
    only = SimulatorConfig(warp=0, colour_gain=0, colour_offset=0, expression_error=0, expression_jitter=0, jaw_error_rad=0, hallucination=1.0)
    gen = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "medium", config=only, resolution=64)
    req = _request(truth, gen, yaws=(60.0,), seed=5)
    out = gen.generate(req)
    ref = _still(truth, [60.0])
    seen = ref.seen[0, 0] > 0.999
    unseen = (ref.seen[0, 0] < 0.001) & (ref.alpha[0, 0] > 0.999)
    diff = (out.frames - ref.rgb).abs()[0].amax(0)
    assert float(diff[seen].max()) < 1e-3  # (a fully seen output pixel may hold a sub-pixel seen at 0.9999)
    assert float(diff[unseen].mean()) > 0.01


def test_strength_has_sdedit_semantics(truth):
    gen = SimulatedGenerator(truth, truth.head, torch.zeros(9), torch.zeros(3), "0", resolution=64)
    prior = gen.generate(_request(truth, gen)).frames
    init = torch.full_like(prior, 0.3)
    assert torch.allclose(gen.generate(_request(truth, gen, init=init, strength=0.0)).frames, init)
    assert torch.allclose(gen.generate(_request(truth, gen, init=init, strength=1.0)).frames, prior)
    # the further from 0, the further from the init frames (monotone in strength)
    dist = [float((gen.generate(_request(truth, gen, init=init, strength=s)).frames - init).abs().mean()) for s in (0.0, 0.3, 0.6, 0.9, 1.0)]
    assert all(a < b for a, b in zip(dist, dist[1:])), dist
    low = gen.generate(_request(truth, gen, init=init, strength=0.6)).frames
    blur = lambda x: gaussian_blur(x, 8.0)  # noqa: E731
    assert float((blur(low) - blur(init)).abs().mean()) < float((blur(low) - blur(prior)).abs().mean())
    # the blend is exactly low(init) + high(prior)
    x = torch.rand(1, 3, 32, 32)
    y = torch.rand(1, 3, 32, 32)
    s = sdedit_blend(x, y, 0.5, 32, 4.0)
    sigma = 4.0 * (32 / 256)
    assert torch.allclose(s, gaussian_blur(y, sigma) + x - gaussian_blur(x, sigma))


def test_levels_and_bad_heads_are_named():
    assert level_value("0") == 0 and level_value("low") == 0.5 and level_value("medium") == 1 and level_value("high") == 2
    assert level_value(1.5) == 1.5
    with pytest.raises(ValueError, match="inconsistency"):
        level_value("extreme")
    with pytest.raises(ValueError, match="inconsistency"):
        level_value(-1)


def test_simulated_generator_refuses_a_head_it_cannot_map(truth):
    class Other:
        expression_dim = 50
        expression_names = None
        name = "flame2023"

    with pytest.raises(ValueError, match="head=facemesh"):
        SimulatedGenerator(truth, Other(), torch.zeros(50), torch.zeros(3), "low")


def test_config_names_missing_truth_and_bad_levels():
    from zero1toa.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="generator.truth_dir"):
        from_dict({"generator": {"kind": "simulated"}})
    with pytest.raises(ConfigError, match="generator.inconsistency"):
        from_dict({"generator": {"kind": "simulated", "truth_dir": "/x", "inconsistency": "extreme"}})
    cfg = from_dict({"generator": {"kind": "simulated", "truth_dir": "/x", "inconsistency": 0}, "train": {"mode": "sds"}})
    assert cfg.generator.inconsistency == 0
