"""The AniPortrait route end to end on a tiny random model saved in AniPortrait's folder layout.

The tiny model has the route's own classes at toy sizes and is loaded through the same
``from_folder`` path (file checks, ``weights_only`` loading) as AniPortrait's published files, so
these tests check the plumbing: shapes, windows, seeds, strength semantics, which inputs can change
the output, save/load, error messages. The pictures themselves are noise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from zero1toa.generate.aniportrait.checkpoint import CheckpointMismatchError, check_folder  # noqa: E402
from zero1toa.generate.aniportrait.generator import AniPortraitGenerator, AniPortraitSettings  # noqa: E402
from zero1toa.generate.aniportrait.tiny import build_tiny_aniportrait, tiny_networks, zero_pose_guider  # noqa: E402
from zero1toa.generate.base import GenerationRequest  # noqa: E402
from zero1toa.generate.model_folder import ModelFolderError  # noqa: E402

R = 64
SETTINGS = AniPortraitSettings(num_inference_steps=2, guidance_scale=1.0)
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_aniportrait(tmp_path_factory.mktemp("ani") / "aniportrait", seed=0, resolution=R)


@pytest.fixture(scope="module")
def gen(tiny_folder):
    return AniPortraitGenerator.from_folder(tiny_folder, resolution=R, settings=SETTINGS)


def _landmarks(num_frames: int, seed: int) -> torch.Tensor:
    """[F, 3, R, R]: coloured dots on black, like a drawn landmark map."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.zeros(num_frames, 3, R, R)
    idx = torch.randint(0, R, (num_frames, 80, 2), generator=g)
    colour = torch.rand(num_frames, 80, 3, generator=g)
    for f in range(num_frames):
        maps[f, :, idx[f, :, 0], idx[f, :, 1]] = colour[f].T
    return maps


def _images(num: int, seed: int) -> torch.Tensor:
    """[num, 3, R, R] smooth random images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(num, 3, 8, 8, generator=g), size=(R, R), mode="bilinear", align_corners=False)


def _request(num_frames=2, init=False, strength=1.0, seed=0, lm_seed=1, init_seed=2, ref_seed=3):
    return GenerationRequest(
        reference=_images(1, ref_seed)[0],
        landmark_maps=_landmarks(num_frames, lm_seed),
        init_frames=_images(num_frames, init_seed) if init else None,
        strength=strength,
        seed=seed,
    )


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


def test_folder_has_aniportraits_layout_and_is_small(tiny_folder):
    names = sorted(p.name for p in tiny_folder.iterdir())
    assert names == sorted(["reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_guider.pth", "stable-diffusion-v1-5", "sd-vae-ft-mse", "image_encoder", "aniportrait_config.json"])
    assert (tiny_folder / "stable-diffusion-v1-5" / "unet" / "config.json").is_file()
    size = sum(p.stat().st_size for p in tiny_folder.rglob("*") if p.is_file())
    assert size < 8e6, f"tiny AniPortrait folder is {size / 1e6:.1f} MB"
    check_folder(tiny_folder)


def test_info(gen, tiny_folder):
    info = gen.info
    assert (info.name, info.resolution, info.frames_per_call, info.overlap, info.landmark_style) == ("aniportrait", R, 16, 4, "aniportrait")
    assert str(tiny_folder.resolve()) in info.weights and "AniPortrait" in info.weights


@pytest.mark.parametrize("num_frames, windows", [(2, 1), (20, 2)])
def test_shapes_ranges_and_windows(gen, num_frames, windows):
    out = gen.generate(_request(num_frames))
    assert out.frames.shape == (num_frames, 3, R, R) and out.frames.dtype == torch.float32
    assert torch.isfinite(out.frames).all() and out.frames.min() >= 0 and out.frames.max() <= 1
    assert out.frames.std() > 1e-3
    assert out.extras["windows"] == windows and out.extras["mode"] == "noise"


def test_seed_determinism(gen):
    a = gen.generate(_request(seed=5)).frames
    b = gen.generate(_request(seed=5)).frames
    c = gen.generate(_request(seed=6)).frames
    assert torch.equal(a, b)
    assert _diff(a, c) > 1e-3


def test_strength_near_zero_returns_the_init_frames_within_vae_error(gen):
    req = _request(init=True, strength=0.02)  # int(2 * 0.02) = 0 steps
    out = gen.generate(req)
    assert out.extras["mode"] == "vae_roundtrip"
    baseline = gen.vae_roundtrip(req.init_frames)
    torch.testing.assert_close(out.frames, baseline, rtol=0, atol=1e-6)
    # one real step from the lowest noise level of a 100-step schedule (t = 9) stays near it
    g100 = gen.with_settings(num_inference_steps=100)
    one = g100.generate(_request(init=True, strength=0.01))
    assert one.extras == {"mode": "refresh", "denoise_steps": 1, "reference": "reference_unet+clip", "windows": 1}
    full = g100.with_settings(num_inference_steps=2).generate(_request()).frames
    assert _diff(one.frames, baseline) < 0.25 * _diff(full, baseline), (_diff(one.frames, baseline), _diff(full, baseline))


def test_strength_one_ignores_init_frames(gen):
    base = gen.generate(_request(seed=4)).frames
    for init_seed in (10, 11):
        assert torch.equal(base, gen.generate(_request(init=True, strength=1.0, seed=4, init_seed=init_seed)).frames)
    a = gen.generate(_request(init=True, strength=0.5, init_seed=10)).frames
    b = gen.generate(_request(init=True, strength=0.5, init_seed=11)).frames
    assert _diff(a, b) > 1e-3


def test_pose_condition_acts_only_once_the_guider_is_non_zero():
    mods, vae, image_encoder, arch = tiny_networks(seed=0, resolution=R)  # its own guider to edit
    g = AniPortraitGenerator.from_networks(mods, vae, image_encoder, arch, resolution=R, settings=SETTINGS)

    def pair():
        return g.generate(_request(lm_seed=1, seed=7)).frames, g.generate(_request(lm_seed=2, seed=7)).frames

    a, b = pair()
    assert _diff(a, b) > 1e-3
    zero_pose_guider(g.net.pose_guider, zero=True)  # AniPortrait's own init: final_proj = 0
    a, b = pair()
    assert torch.equal(a, b)
    zero_pose_guider(g.net.pose_guider, zero=False, seed=3)
    a, b = pair()
    assert _diff(a, b) > 1e-3


def test_reference_changes_the_result_with_and_without_guidance(gen):
    for g in (gen, gen.with_settings(guidance_scale=3.0)):
        a = g.generate(_request(ref_seed=3)).frames
        b = g.generate(_request(ref_seed=4)).frames
        assert _diff(a, b) > 1e-4
    assert _diff(gen.generate(_request()).frames, gen.with_settings(guidance_scale=3.0).generate(_request()).frames) > 1e-4


def test_ddim_inversion_round_trip_returns_the_renders(gen):
    settings = dict(num_inference_steps=10, guidance_scale=1.0)
    inv, sde = gen.with_settings(refresh_start="ddim_inversion", **settings), gen.with_settings(refresh_start="sdedit", **settings)
    req = _request(init=True, strength=0.3)
    baseline = gen.vae_roundtrip(req.init_frames)
    out = inv.generate(req)
    assert out.extras["mode"] == "refresh (ddim inversion)" and out.extras["denoise_steps"] == 3
    err_inv, err_sde = _diff(out.frames, baseline), _diff(sde.generate(req).frames, baseline)
    assert err_inv < 0.5 * err_sde, (err_inv, err_sde)  # measured 0.045 vs 0.136 on the tiny model
    again = inv.generate(_request(init=True, strength=0.3, seed=99)).frames  # no noise drawn on this path
    torch.testing.assert_close(again, out.frames, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="refresh_start"):
        gen.with_settings(refresh_start="magic").generate(req)


def test_folder_and_in_memory_networks_give_identical_frames(gen):
    mods, vae, image_encoder, arch = tiny_networks(seed=0, resolution=R)
    mem = AniPortraitGenerator.from_networks(mods, vae, image_encoder, arch, resolution=R, settings=SETTINGS)
    for req in (_request(), _request(init=True, strength=0.5)):
        assert torch.equal(mem.generate(req).frames, gen.generate(req).frames)


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def test_missing_pieces_and_wrong_files_are_named(tiny_folder, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist|missing"):
        AniPortraitGenerator.from_folder(tmp_path / "nowhere")
    folder = _copy(tiny_folder, tmp_path)
    (folder / "motion_module.pth").unlink()
    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(ModelFolderError) as err:
        AniPortraitGenerator.from_folder(folder, resolution=R)
    missing = str(err.value).split("missing: ")[1].split(".\n")[0]
    assert missing == "motion_module.pth, image_encoder/config.json, image_encoder/model*.safetensors or pytorch_model*.bin"
    folder = _copy(tiny_folder, tmp_path / "b")
    shutil.copy(folder / "reference_unet.pth", folder / "pose_guider.pth")  # another network's file
    with pytest.raises(CheckpointMismatchError, match=r"pose_guider\.pth does not hold .* missing keys: .* unexpected keys: "):
        AniPortraitGenerator.from_folder(folder, resolution=R)
    torch.save({"weights": [1, 2, 3]}, folder / "pose_guider.pth")  # not a state dict of tensors
    with pytest.raises(CheckpointMismatchError, match="not a flat state dict"):
        AniPortraitGenerator.from_folder(folder, resolution=R)


def test_generator_aniportrait_tiny_is_registered():
    """``generator=aniportrait-tiny`` composes, validates and builds (its folder cached under .cache/)."""
    from flows.config import compose
    from zero1toa.generate.factory import build_generator

    cfg = compose(["preset=smoke", "generator=aniportrait-tiny", "generator.resolution=64"])
    assert (cfg.generator.kind, cfg.generator.num_inference_steps, cfg.generator.guidance_scale) == ("aniportrait-tiny", 2, 1.0)
    with pytest.raises(Exception, match="multiple of 64"):
        compose(["preset=smoke", "generator=aniportrait-tiny", "generator.resolution=96"])
    g = build_generator(cfg.generator, head=None, reference=None, seed=0)
    assert isinstance(g, AniPortraitGenerator) and g.info.resolution == 64 and ".cache" in g.info.weights
    assert g.generate(_request()).frames.shape == (2, 3, R, R)


def test_preflight_lists_what_an_aniportrait_folder_lacks(tmp_path):
    from flows.config import compose
    from zero1toa.preflight import missing_assets

    assert any("generator.model_dir is not set: generator=aniportrait" in m for m in missing_assets(compose(["generator=aniportrait"])))
    (tmp_path / "pose_guider.pth").write_bytes(b"")
    lines = missing_assets(compose(["generator=aniportrait", f"generator.model_dir={tmp_path}"]))
    lacks = [m.split(" lacks ")[1] for m in lines if " lacks " in m]
    assert lacks[:4] == ["reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "stable-diffusion-v1-5/unet/config.json"]
    assert "sd-vae-ft-mse/config.json" in lacks and "image_encoder/config.json" in lacks


@pytest.mark.slow  # ~25 s on 2 cores: preprocessing and head fitting of the sample portrait, in a new process
def test_cli_generate_sample_writes_video_sheet_and_aniportrait_conditions(tmp_path):
    from PIL import Image

    from zero1toa.render.landmark_maps import ANIPORTRAIT_LIPS, ANIPORTRAIT_OVAL_COLOUR, ANIPORTRAIT_PARTS

    out = tmp_path / "gen"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "generate", "sample", "--out", str(out), "--frames", "4", "generator=aniportrait-tiny", "generator.resolution=64", "preprocess.resolution=256"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "aniportrait: 4 frames at 64px" in proc.stdout
    assert (out / "aniportrait.mp4").stat().st_size > 0 and (out / "aniportrait_contact_sheet.png").stat().st_size > 0
    pngs = sorted((out / "conditions").glob("*.png"))
    assert len(pngs) == 4
    palette = {ANIPORTRAIT_OVAL_COLOUR} | {c for _, c in ANIPORTRAIT_PARTS} | {c for c, _ in ANIPORTRAIT_LIPS}
    img = np.asarray(Image.open(pngs[0]).convert("RGB"))
    colours = {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, 3), axis=0)}
    assert len(colours & palette) >= 5  # jaw, eyes, brows, lips in AniPortrait's colours (resized: blends too)
