"""The SDS-only baseline on the tiny random AnimateDiff + ControlNet + IP-Adapter model.

The tiny model's predictions are noise, so these tests check the mechanics: gradients reach
every trainable Gaussian parameter and nothing of the diffusion model, values stay finite, the
avatar changes, chunked and single-pass VAE pull-backs agree, resume is exact, and a round
writes an avatar folder without a dataset.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from zero1toa.config import from_dict  # noqa: E402
from zero1toa.progressive.schedules import SpatialConfig, spatial_clips  # noqa: E402
from zero1toa.train.sds import SDSConfig, SDSGuidance, run_sds_round, sds_train  # noqa: E402
from zero1toa.train.trainer import TrainConfig  # noqa: E402

R = 64
TRAINABLE = ("means", "scales", "quats", "opacities", "sh0")


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from zero1toa.generate.diffusion import AnimateDiffControlNetGenerator, DiffusionSettings
    from zero1toa.generate.tiny import build_tiny_animatediff

    folder = build_tiny_animatediff(tmp_path_factory.mktemp("tiny") / "animatediff", seed=0, resolution=R)
    # guidance 3: both classifier-free branches run; the tiny folder has an IP-Adapter
    return AnimateDiffControlNetGenerator.from_folder(folder, settings=DiffusionSettings(num_inference_steps=2, guidance_scale=3.0))


@pytest.fixture(scope="module")
def scene(fitted_run):
    from zero1toa.nodes import initial_avatar
    from zero1toa.runfolder import load_reference

    head, reference = load_reference(fitted_run)
    cfg = from_dict({"avatar": {"init": {"num_gaussians": 1500}}})
    gaussians = initial_avatar(cfg, head, reference)
    clips = spatial_clips(SpatialConfig(clips_per_round=2, frames_per_clip=4), 0, reference.expression.numpy(), reference.jaw.numpy(), seed=0)
    return gaussians, head, reference, clips


def _train_cfg(**changes) -> TrainConfig:
    cfg = TrainConfig()
    cfg.log_every = 1
    cfg.checkpoint_every = 0
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def _render_clip(gaussians, head, reference, clip):
    from zero1toa.avatar.render import render_avatar
    from zero1toa.progressive.schedules import clip_cameras
    from zero1toa.render.landmark_maps import head_landmark_maps

    cams = clip_cameras(clip, reference.camera, reference.target, R)
    expr = torch.from_numpy(clip.expressions).float()
    poses = clip.poses()
    maps = head_landmark_maps(head, head.animate(expr, poses), cams)
    return render_avatar(gaussians, head, cams, expr, poses), maps


def test_gradients_reach_the_gaussians_not_the_model(generator, scene):
    gaussians, head, reference, clips = scene
    g = copy.deepcopy(gaussians)
    guidance = SDSGuidance(generator, reference.image, SDSConfig())
    assert guidance.cfg_on and guidance.image_embeds is not None  # CFG + IP-Adapter path
    out, maps = _render_clip(g, head, reference, clips[0])
    d_rgb, info = guidance.pixel_gradient(out.rgb, maps, t=500, noise=torch.randn(4, 4, R // 8, R // 8, generator=torch.Generator().manual_seed(0)))
    assert d_rgb.shape == out.rgb.shape and torch.isfinite(d_rgb).all() and d_rgb.abs().max() > 0
    assert np.isfinite(info["sds"]) and info["sds"] > 0 and info["t"] == 500
    (out.rgb * d_rgb).sum().backward()
    for name in TRAINABLE:
        grad = g.params[name].grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().max() > 0, name
    # the diffusion model is never trained: no gradient reached it (VAE included)
    for module in guidance.modules():
        assert all(p.grad is None for p in module.parameters())


def test_chunked_pullback_equals_single_pass(generator, scene):
    gaussians, head, reference, clips = scene
    with torch.no_grad():
        out, maps = _render_clip(gaussians, head, reference, clips[1])
    noise = torch.randn(4, 4, R // 8, R // 8, generator=torch.Generator().manual_seed(1))
    whole, info_a = SDSGuidance(generator, reference.image, SDSConfig(vae_chunk=4)).pixel_gradient(out.rgb, maps, 300, noise)
    parts, info_b = SDSGuidance(generator, reference.image, SDSConfig(vae_chunk=3)).pixel_gradient(out.rgb, maps, 300, noise)
    assert torch.allclose(whole, parts, atol=1e-6, rtol=1e-4)
    assert info_a["sds"] == pytest.approx(info_b["sds"], rel=1e-5)


def test_sds_steps_change_the_avatar(generator, scene):
    gaussians, head, reference, clips = scene
    g = copy.deepcopy(gaussians)
    before = {k: v.detach().clone() for k, v in g.params.items()}
    flags = [p.requires_grad for p in generator.pipeline.unet.parameters()]
    result = sds_train(g, head, reference, generator, clips, 3, _train_cfg(), seed=0, progress=False)
    assert [row["step"] for row in result.losses] == [1, 2, 3]
    for row in result.losses:
        assert all(np.isfinite(v) for v in row.values())
        assert row["sds"] > 0 and 0 < row["t"] < 1000
    for name in TRAINABLE:
        assert (g.params[name].detach() - before[name]).abs().max() > 0, name
    assert torch.equal(g.params["binding"], before["binding"])
    assert set(result.active_terms) == {"sds", "position", "scale"}
    assert "l1" in result.inactive_terms
    assert [p.requires_grad for p in generator.pipeline.unet.parameters()] == flags  # restored


def test_resume_continues_exactly(generator, scene, tmp_path):
    gaussians, head, reference, clips = scene
    ckpt = tmp_path / "checkpoint.pt"
    cfg = _train_cfg(checkpoint_every=2)
    a = copy.deepcopy(gaussians)
    sds_train(a, head, reference, generator, clips, 4, cfg, seed=3, checkpoint_path=ckpt, round_name="r", progress=False)
    assert ckpt.exists()  # written at step 2 of 4
    b = copy.deepcopy(gaussians)  # a fresh process would start from the initial avatar
    result = sds_train(b, head, reference, generator, clips, 4, cfg, seed=3, checkpoint_path=ckpt, round_name="r", progress=False)
    assert result.resumed_from == 2
    for name in TRAINABLE:
        assert torch.allclose(a.params[name], b.params[name], atol=1e-6), name


def test_round_writes_an_avatar_without_a_dataset(generator, scene, tmp_path):
    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.symgen.round import RoundSpec

    gaussians, head, reference, clips = scene
    spec = RoundSpec(name="spatial_1", stage="spatial", index=0, iterations=2, clips=clips, strength=1.0, max_clips=20, seed=0)
    result = run_sds_round(spec, copy.deepcopy(gaussians), head, reference, generator, tmp_path / "round", _train_cfg(), SDSConfig(frames_per_step=2), progress=False, record={"generator": "tiny"})
    assert result.avatar_dir == tmp_path / "round" / "avatar"
    assert not (tmp_path / "round" / "dataset").exists() and not (tmp_path / "round" / ".work").exists()
    g, _, info = load_avatar(result.avatar_dir)
    assert info["mode"] == "sds" and info["round"] == "spatial_1" and info["generator"] == "tiny"
    assert info["sds"]["frames_per_step"] == 2 and len(info["losses"]) == 2
    assert info["reference_camera"]["width"] == reference.camera.width  # animate/export read it
    assert g.num_gaussians == result.train.num_gaussians


def test_reference_term_and_weighting_options(generator, scene):
    gaussians, head, reference, clips = scene
    g = copy.deepcopy(gaussians)
    sds = SDSConfig(reference_weight=1.0, weighting="uniform", grad_clip=0.5, t_max_final=0.5, guidance_scale=1.0)
    result = sds_train(g, head, reference, generator, clips[:1], 2, _train_cfg(), seed=1, sds=sds, progress=False)
    assert all("reference" in row and np.isfinite(row["reference"]) for row in result.losses)
    assert result.active_terms["reference"] == 1.0


def test_needs_a_diffusion_generator(scene):
    from zero1toa.generate.reprojection import ReprojectionGenerator

    gaussians, head, reference, clips = scene
    gen = ReprojectionGenerator(head, reference.image, reference.camera, reference.mask)
    with pytest.raises(ValueError, match="diffusion generator"):
        sds_train(copy.deepcopy(gaussians), head, reference, gen, clips, 1, _train_cfg(), seed=0, progress=False)
    with pytest.raises(ValueError, match="weighting"):
        SDSGuidance(None, reference.image, SDSConfig(weighting="dreamfusion"))
