"""The diffusers backend end to end on the tiny random AnimateDiff + ControlNet + IP-Adapter model.

The tiny model has the real classes at toy sizes and is loaded through the same
``from_folder`` path as real weights, so these tests check the plumbing (shapes, windows,
seeds, strength semantics, which inputs can change the output, save/load, error messages);
the pictures themselves are noise.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from zero1toa.generate.base import GenerationRequest  # noqa: E402
from zero1toa.generate.diffusion import (  # noqa: E402
    AnimateDiffControlNetGenerator,
    DiffusionSettings,
    ModelFolderError,
    check_model_folder,
)
from zero1toa.generate.tiny import build_tiny_animatediff, tiny_components, zero_controlnet  # noqa: E402

R = 64
SETTINGS = DiffusionSettings(num_inference_steps=2, guidance_scale=3.0)  # CFG on: both branches run


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_animatediff(tmp_path_factory.mktemp("tiny") / "animatediff", seed=0, resolution=R)


@pytest.fixture(scope="module")
def gen(tiny_folder):
    return AnimateDiffControlNetGenerator.from_folder(tiny_folder, settings=SETTINGS)


def _landmarks(num_frames: int, seed: int, size: int = R) -> torch.Tensor:
    """[F, 3, size, size]: white dots on black, like a drawn landmark map."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.zeros(num_frames, 3, size, size)
    idx = torch.randint(0, size, (num_frames, 60, 2), generator=g)
    for f in range(num_frames):
        maps[f, :, idx[f, :, 0], idx[f, :, 1]] = 1.0
    return maps


def _images(num: int, seed: int, size: int = R) -> torch.Tensor:
    """[num, 3, size, size] smooth random images in [0, 1] (upsampled coarse noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _request(num_frames=8, init=False, strength=1.0, seed=0, lm_seed=1, init_seed=2, ref_seed=3, size=R):
    return GenerationRequest(
        reference=_images(1, ref_seed, size)[0],
        landmark_maps=_landmarks(num_frames, lm_seed, size),
        init_frames=_images(num_frames, init_seed, size) if init else None,
        strength=strength,
        seed=seed,
    )


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


def test_folder_layout_is_small_and_complete(tiny_folder):
    subs = sorted(p.name for p in tiny_folder.iterdir())
    expected = ["unet", "motion_adapter", "controlnet", "vae", "text_encoder", "tokenizer", "scheduler"]
    assert subs == sorted(expected + ["image_encoder", "ip_adapter"])
    assert (tiny_folder / "tokenizer" / "vocab.json").is_file() and (tiny_folder / "tokenizer" / "merges.txt").is_file()
    size = sum(p.stat().st_size for p in tiny_folder.rglob("*") if p.is_file())
    assert size < 5e6, f"tiny model folder is {size / 1e6:.1f} MB"
    assert check_model_folder(tiny_folder) is True  # IP-Adapter pair present -> used


def test_info(gen, tiny_folder):
    info = gen.info
    assert (info.resolution, info.frames_per_call, info.overlap, info.deterministic) == (R, 16, 4, True)
    assert str(tiny_folder.resolve()) in info.weights and "sha256:" in info.weights and "ip_adapter" in info.weights


@pytest.mark.parametrize("num_frames, windows", [(1, [1]), (8, [8]), (24, [16, 16])])
def test_shapes_ranges_and_windows(gen, monkeypatch, num_frames, windows):
    seen = []
    inner = gen._generate_window

    def spy(request):
        out = inner(request)
        seen.append((request.num_frames, tuple(out.frames.shape)))
        return out

    monkeypatch.setattr(gen, "_generate_window", spy)
    out = gen.generate(_request(num_frames))
    assert [n for n, _ in seen] == windows
    assert all(shape == (n, 3, R, R) for n, shape in seen)
    frames = out.frames
    assert frames.shape == (num_frames, 3, R, R) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 1e-3  # not a constant image


def test_inputs_at_other_sizes_are_resized(gen):
    out = gen.generate(_request(8, init=True, strength=0.5, size=48))
    assert out.frames.shape == (8, 3, R, R)
    assert out.extras == {"mode": "refresh", "denoise_steps": 1, "reference": "ip_adapter"}


@pytest.mark.parametrize("init, strength", [(False, 1.0), (True, 0.5)])
def test_seed_determinism(gen, init, strength):
    a = gen.generate(_request(init=init, strength=strength, seed=5)).frames
    b = gen.generate(_request(init=init, strength=strength, seed=5)).frames
    c = gen.generate(_request(init=init, strength=strength, seed=6)).frames
    assert torch.equal(a, b)
    assert _diff(a, c) > 1e-3


def test_strength_zero_returns_vae_roundtrip(gen):
    req = _request(init=True, strength=0.0)
    out = gen.generate(req)
    assert out.extras["mode"] == "vae_roundtrip"
    torch.testing.assert_close(out.frames, gen.vae_roundtrip(req.init_frames), rtol=0, atol=1e-6)


def test_small_strength_stays_within_vae_error(gen):
    # 10 steps at strength 0.1: one real denoising step, from the lowest noise level (t = 0).
    g10 = gen.with_settings(num_inference_steps=10)
    req = _request(init=True, strength=0.1)
    out = g10.generate(req)
    assert out.extras == {"mode": "refresh", "denoise_steps": 1, "reference": "ip_adapter"}
    init = req.init_frames
    baseline = gen.vae_roundtrip(init)  # the honest floor: the VAE's own reconstruction
    vae_error = _diff(baseline, init)
    full = g10.generate(_request(init=True, strength=1.0)).frames
    # As far from the init frames as the VAE round trip is (not further) ...
    assert _diff(out.frames, init) <= 1.05 * vae_error + 1e-3
    # ... and close to that round trip, far closer than a from-noise result is.
    assert _diff(out.frames, baseline) < 0.25 * _diff(full, baseline)


def test_strength_one_ignores_init_frames(gen):
    base = _request(init=False, strength=1.0, seed=4)
    outs = [gen.generate(base).frames]
    for init_seed in (10, 11):
        outs.append(gen.generate(_request(init=True, strength=1.0, seed=4, init_seed=init_seed)).frames)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # ... while a refresh does depend on them.
    a = gen.generate(_request(init=True, strength=0.5, init_seed=10)).frames
    b = gen.generate(_request(init=True, strength=0.5, init_seed=11)).frames
    assert _diff(a, b) > 1e-3


def test_landmarks_act_only_through_controlnet(tiny_folder):
    g = AnimateDiffControlNetGenerator.from_folder(tiny_folder, settings=SETTINGS)  # own ControlNet to edit

    def pair():
        a = g.generate(_request(lm_seed=1, seed=7)).frames
        b = g.generate(_request(lm_seed=2, seed=7)).frames
        return a, b

    a, b = pair()
    assert _diff(a, b) > 1e-3  # random ("trained") ControlNet output convs: landmarks steer
    zero_controlnet(g.pipeline.controlnet, zero=True)
    a, b = pair()
    assert torch.equal(a, b)  # zero output convs: ControlNet adds exact zeros
    zero_controlnet(g.pipeline.controlnet, zero=False, seed=3)
    a, b = pair()
    assert _diff(a, b) > 1e-3


def test_reference_conditioning(gen, tiny_folder):
    a = gen.generate(_request(ref_seed=3)).frames
    b = gen.generate(_request(ref_seed=4)).frames
    assert _diff(a, b) > 1e-4  # IP-Adapter: the reference steers the result
    plain = AnimateDiffControlNetGenerator.from_folder(tiny_folder, settings=SETTINGS, reference="none")
    assert "reference unused" in plain.info.weights
    a = plain.generate(_request(ref_seed=3))
    b = plain.generate(_request(ref_seed=4))
    assert a.extras["reference"] == "none"
    assert torch.equal(a.frames, b.frames)


def test_save_load_roundtrip_is_exact(tiny_folder):
    in_memory = AnimateDiffControlNetGenerator.from_components(tiny_components(seed=0, resolution=R), settings=SETTINGS)
    loaded = AnimateDiffControlNetGenerator.from_folder(tiny_folder, settings=SETTINGS)
    for req in (_request(init=True, strength=0.5), _request()):
        assert torch.equal(in_memory.generate(req).frames, loaded.generate(req).frames)


def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(ModelFolderError) as err:
        AnimateDiffControlNetGenerator.from_folder(tmp_path / "nowhere")
    msg = str(err.value)
    assert "does not exist" in msg
    for sub in ("unet/", "motion_adapter/", "controlnet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/"):
        assert sub in msg


def _copy(tiny_folder, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_folder, dst)
    return dst


def test_missing_component_is_named(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path)
    shutil.rmtree(folder / "controlnet")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError) as err:
        AnimateDiffControlNetGenerator.from_folder(folder)
    missing = str(err.value).split("missing: ")[1].split(".\n")[0]
    assert missing == "controlnet/, vae/diffusion_pytorch_model*.safetensors"


def test_half_an_ip_adapter_pair_is_an_error(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path)
    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(ModelFolderError, match="missing: image_encoder/"):
        check_model_folder(folder, "auto")
    assert check_model_folder(folder, "none") is False
    shutil.rmtree(folder / "ip_adapter")
    assert check_model_folder(folder, "auto") is False
    with pytest.raises(ModelFolderError, match="image_encoder/, ip_adapter/"):
        check_model_folder(folder, "ip_adapter")


def test_unreadable_component_is_named(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path)
    (folder / "text_encoder" / "config.json").write_text("{ not json")
    with pytest.raises(ModelFolderError, match="component 'text_encoder'"):
        AnimateDiffControlNetGenerator.from_folder(folder)


def test_zero_controlnet_build_option_gives_exact_zero_residuals():
    controlnet = tiny_components(seed=0, resolution=R, zero_controlnet_output=True, with_ip_adapter=False)["controlnet"]
    sample, text, cond = torch.randn(2, 4, R // 8, R // 8), torch.randn(2, 77, 32), _landmarks(2, seed=1)

    def residuals():
        with torch.no_grad():
            down, mid = controlnet(sample, 500, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
        return (*down, mid)

    assert all(torch.count_nonzero(r) == 0 for r in residuals())
    zero_controlnet(controlnet, zero=False)
    assert all(r.abs().mean() > 0 for r in residuals())


def test_ddim_inversion_round_trip_returns_the_renders(gen):
    """Refresh start ``ddim_inversion``: inverting the renders with diffusers' DDIMInverseScheduler
    and denoising with no guidance comes back to the renders (up to the VAE and the inversion's
    one-step approximation); SDEdit's noised start at the same strength does not."""
    settings = dict(num_inference_steps=10, guidance_scale=1.0)
    inv = gen.with_settings(refresh_start="ddim_inversion", **settings)
    sde = gen.with_settings(refresh_start="sdedit", **settings)
    req = _request(init=True, strength=0.5)
    baseline = gen.vae_roundtrip(req.init_frames)
    out = inv.generate(req)
    assert out.extras["mode"] == "refresh (ddim inversion)" and out.extras["denoise_steps"] == 5
    err_inv = _diff(out.frames, baseline)
    err_sde = _diff(sde.generate(req).frames, baseline)
    assert err_inv < 0.03, err_inv  # measured 0.016 on the tiny model (SDEdit: 0.12)
    assert err_inv < 0.25 * err_sde, (err_inv, err_sde)
    # deterministic: no noise is drawn on the inversion path
    again = inv.generate(_request(init=True, strength=0.5, seed=99)).frames
    torch.testing.assert_close(again, out.frames, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="refresh_start"):
        gen.with_settings(refresh_start="magic").generate(req)
