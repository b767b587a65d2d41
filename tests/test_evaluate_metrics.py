"""Metric functions on constructed inputs whose answers are known by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()
sys.path.insert(0, str(Path(__file__).parent))
import evaluate_fixtures as fx  # noqa: E402

from zero1toa.evaluate import clip_score as C  # noqa: E402
from zero1toa.evaluate import metrics as M  # noqa: E402

# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_of_known_mse():
    a = torch.zeros(3, 16, 16)
    b = torch.full((3, 16, 16), 0.1)  # MSE 0.01 -> 20 dB
    assert M.mse(a, b) == pytest.approx(0.01, rel=1e-6)
    assert M.psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(a, torch.full_like(a, 0.01)) == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(M.psnr(b, b))


def test_masked_psnr_ignores_pixels_outside_the_mask():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 20, generator=gen)
    b = a + 0.1  # MSE 0.01 everywhere ...
    b[:, :, 10:] = torch.rand(3, 20, 10, generator=gen)  # ... except garbage on the right half
    mask = torch.zeros(20, 20)
    mask[:, :10] = 1
    assert M.psnr(a, b, mask) == pytest.approx(20.0, abs=1e-3)
    assert M.psnr(a, b) < 15.0  # unmasked, the garbage counts
    with pytest.raises(ValueError, match="no pixels"):
        M.psnr(a, b, torch.zeros(20, 20))


def test_ssim_identical_is_one_and_noise_lowers_it():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(3, 32, 32, generator=gen)
    assert M.ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-5)
    noisy = (a + 0.2 * torch.randn(3, 32, 32, generator=gen)).clamp(0, 1)
    assert M.ssim(a, noisy) < 0.9
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    assert M.ssim(a, a.clone(), mask) == pytest.approx(1.0, abs=1e-5)


def test_area_downsample_averages_blocks():
    img = torch.arange(16.0).reshape(1, 4, 4)
    out = M.area_downsample(img, 2)
    assert torch.allclose(out[0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


# ----------------------------------------------------------------------------- video


def test_temporal_change_of_constant_and_linear_ramp():
    still = torch.full((6, 3, 8, 8), 0.4)
    assert M.temporal_change(still) == 0.0
    assert M.temporal_jitter(still) == 0.0
    slope = 0.02
    ramp = torch.stack([torch.full((3, 8, 8), 0.1 + slope * t) for t in range(10)])
    assert M.temporal_change(ramp) == pytest.approx(slope, rel=1e-5)
    assert M.frame_changes(ramp).shape == (9,)
    assert M.temporal_jitter(ramp) == pytest.approx(0.0, abs=1e-4)
    flicker = torch.stack([torch.full((3, 8, 8), 0.5 + (0.1 if t % 2 else -0.1)) for t in range(10)])
    assert M.temporal_change(flicker) == pytest.approx(0.2, rel=1e-5)
    assert M.temporal_jitter(flicker) == pytest.approx(2.0, rel=1e-5)


def test_determinism_difference():
    a = torch.rand(2, 3, 4, 4)
    assert M.max_abs_difference(a, a.clone()) == 0.0
    b = a.clone()
    b[1, 2, 3, 3] += 0.25
    assert M.max_abs_difference(a, b) == pytest.approx(0.25, rel=1e-5)


# ----------------------------------------------------------------------------- landmarks


def _eye_points() -> np.ndarray:
    gen = np.random.default_rng(0)
    pts = gen.uniform(0, 100, size=(468, 2))
    pts[M.RIGHT_EYE_OUTER] = [30.0, 40.0]
    pts[M.LEFT_EYE_OUTER] = [70.0, 40.0]  # inter-ocular distance 40
    return pts


def test_landmark_error_identical_and_shifted():
    pts = _eye_points()
    assert M.normalised_landmark_error(pts, pts.copy(), M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER) == 0.0
    shifted = pts + np.array([3.0, 4.0])  # every point 5 px away
    assert M.normalised_landmark_error(shifted, pts, M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER) == pytest.approx(5.0 / 40.0)
    assert M.interocular_distance(pts, M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER) == pytest.approx(40.0)


def test_lip_gap_normalised_by_eye_distance():
    pts = _eye_points()
    pts[M.UPPER_LIP_INNER] = [50.0, 70.0]
    pts[M.LOWER_LIP_INNER] = [50.0, 80.0]
    assert M.lip_gap(pts, M.UPPER_LIP_INNER, M.LOWER_LIP_INNER, M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER) == pytest.approx(10.0 / 40.0)


def test_detection_rate_on_portrait_and_blank():
    from zero1toa.sample import sample_portrait

    rate, flags = M.detection_rate([sample_portrait(), np.full((256, 256, 3), 255, np.uint8)])
    assert flags == [True, False]
    assert rate == 0.5


# ----------------------------------------------------------------------------- CLIP preprocessing


def test_clip_preprocess_constant_image_is_normalised_exactly():
    img = torch.empty(1, 3, 50, 70)
    img[0, 0], img[0, 1], img[0, 2] = 0.2, 0.5, 0.9
    out = C.clip_preprocess(img, 32, C.OPENAI_CLIP_MEAN, C.OPENAI_CLIP_STD)
    assert out.shape == (1, 3, 32, 32)
    for c, v in enumerate((0.2, 0.5, 0.9)):
        want = (v - C.OPENAI_CLIP_MEAN[c]) / C.OPENAI_CLIP_STD[c]
        assert torch.allclose(out[0, c], torch.full((32, 32), want), atol=1e-5)


def test_clip_preprocess_resize_and_crop_of_a_ramp():
    """A horizontal intensity ramp v(j) = a + b j, 64 x 96 -> shortest side 32 (48 wide) ->
    centre crop columns 8..40. Bicubic with antialiasing reproduces linear functions away from
    the borders, so output column j' holds v at input position (j' + 0.5) * 2 - 0.5."""
    a, b = 0.1, 0.008
    cols = a + b * torch.arange(96.0)
    img = cols[None, None, None, :].expand(1, 3, 64, 96).clone()
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    out = C.clip_preprocess(img, 32, mean, std)
    assert out.shape == (1, 3, 32, 32)
    jp = torch.arange(8, 40, dtype=torch.float32)  # columns kept by the crop (of 48)
    expected = a + b * ((jp + 0.5) * 2.0 - 0.5)
    for c in range(3):
        got = out[0, c] * std[c] + mean[c]
        assert torch.allclose(got, expected[None].expand(32, 32), atol=1e-5)


def test_clip_preprocess_crops_the_centre_without_resizing():
    img = torch.rand(1, 3, 48, 32)  # shortest side already 32: crop rows 8..40
    out = C.clip_preprocess(img, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert torch.equal(out, img[:, :, 8:40, :])


def test_read_preprocessing_formats(tmp_path):
    got = C.read_preprocessing(tmp_path, 224)
    assert got["mean"] == C.OPENAI_CLIP_MEAN and got["crop"] == 224 and got["resize"] == 224
    (tmp_path / "preprocessor_config.json").write_text('{"crop_size": 224, "size": 256, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.2, 0.2, 0.2]}')
    got = C.read_preprocessing(tmp_path, 224)
    assert got["mean"] == (0.5, 0.5, 0.5) and got["std"] == (0.2, 0.2, 0.2) and got["resize"] == 256 and got["crop"] == 224


def test_display_names():
    assert [C.display_name(k) for k in ("vit_l_14", "vit_b_16", "vit_b_32", "vit_h_14", "rn50")] == ["ViT-L/14", "ViT-B/16", "ViT-B/32", "ViT-H/14", "rn50"]


# ----------------------------------------------------------------------------- CLIP score


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return fx.build_tiny_clip(tmp_path_factory.getbasetemp() / "tiny_clip_custom_norm", mean=(0.4, 0.5, 0.6), std=(0.3, 0.2, 0.25))


def _features(out) -> torch.Tensor:
    return getattr(out, "pooler_output", out)  # transformers 5 returns a model output, 4 a tensor


def test_clip_score_equals_hand_computation(tiny_clip):
    from transformers import CLIPModel, CLIPTokenizer

    gen = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 32, 32, generator=gen)  # already the model's input size: only normalisation
    caption = "a photo of a person's head"
    backbone = C.ClipBackbone.load("vit_b_32", tiny_clip)
    scores = backbone.text_image_scores(images, caption)
    ident = backbone.image_image_scores(images[0], images)

    model = CLIPModel.from_pretrained(str(tiny_clip), local_files_only=True).eval()
    tok = CLIPTokenizer.from_pretrained(str(tiny_clip), local_files_only=True)
    mean = torch.tensor([0.4, 0.5, 0.6])[None, :, None, None]
    std = torch.tensor([0.3, 0.2, 0.25])[None, :, None, None]
    with torch.no_grad():
        img_f = _features(model.get_image_features(pixel_values=(images - mean) / std))
        txt_f = _features(model.get_text_features(**tok([caption], return_tensors="pt")))
    img_f = img_f / img_f.norm(dim=-1, keepdim=True)
    txt_f = txt_f / txt_f.norm(dim=-1, keepdim=True)
    assert torch.allclose(scores, img_f @ txt_f[0], atol=1e-5)
    assert torch.allclose(ident, img_f @ img_f[0], atol=1e-5)
    assert ident[0] == pytest.approx(1.0, abs=1e-5)
    assert len(set(np.round(scores.numpy(), 5))) > 1  # different images, different scores


def test_clip_metrics_reports_missing_weights_and_uses_local_ones(tiny_clip):
    gen = torch.Generator().manual_seed(4)
    renders = torch.rand(3, 3, 40, 40, generator=gen)
    reference = torch.rand(3, 64, 64, generator=gen)
    values, reasons, details = C.clip_metrics(renders, reference, "a photo", {"vit_l_14": None, "vit_b_32": str(tiny_clip), "vit_b_16": "/nonexistent/clip"}, labels=["a", "b", "c"])
    assert values["clip_score_vit_l_14"] is None and values["clip_identity_vit_l_14"] is None
    assert "no local weights for ViT-L/14" in reasons["clip_score_vit_l_14"]
    assert "evaluate.clip_models.vit_l_14=" in reasons["clip_score_vit_l_14"]
    assert values["clip_score_vit_b_16"] is None and "/nonexistent/clip" in reasons["clip_score_vit_b_16"]
    backbone = C.ClipBackbone.load("vit_b_32", tiny_clip)
    assert values["clip_score_vit_b_32"] == pytest.approx(float(backbone.text_image_scores(renders, "a photo").mean()), abs=1e-6)
    assert values["clip_identity_vit_b_32"] == pytest.approx(float(backbone.image_image_scores(reference, renders).mean()), abs=1e-6)
    assert "clip_score_vit_b_32" not in reasons and "clip_identity_vit_b_32" not in reasons
    assert set(details["vit_b_32"]["per_render_text"]) == {"a", "b", "c"}
    assert details["vit_b_32"]["backbone"] == "ViT-B/32"


def test_clip_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        C.clip_preprocess(torch.rand(1, 1, 32, 32), 32, C.OPENAI_CLIP_MEAN, C.OPENAI_CLIP_STD)
