"""Loss terms: LPIPS loads from a local file (converted from the public layout), regularisers bite only off the mesh."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from zero1toa.train.losses import LPIPS, AvatarLoss, LossConfig

ROOT = Path(__file__).resolve().parents[1]


def _random_public_weights(tmp: Path) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)
    vgg, cin = {}, 3
    for idx, c in zip(LPIPS.CONV_IDX, LPIPS.CHANNELS):
        vgg[f"features.{idx}.weight"] = torch.randn(c, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        vgg[f"features.{idx}.bias"] = torch.zeros(c)
        cin = c
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    lin = {f"lin{k}.model.1.weight": torch.rand(1, LPIPS.CHANNELS[t - 1], 1, 1, generator=g) for k, t in enumerate(LPIPS.TAPS)}
    torch.save(vgg, tmp / "vgg16.pth")
    torch.save(lin, tmp / "vgg.pth")
    return tmp / "vgg16.pth", tmp / "vgg.pth"


def test_lpips_from_converted_file(tmp_path):
    spec = importlib.util.spec_from_file_location("convert_lpips", ROOT / "scripts" / "convert_lpips.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.convert(*_random_public_weights(tmp_path), tmp_path / "lpips.safetensors")
    model = LPIPS.from_file(out)
    x = torch.rand(1, 3, 48, 48)
    assert model(x, x).item() == pytest.approx(0.0, abs=1e-7)
    y = torch.rand(1, 3, 48, 48)
    assert model(x, y).item() > 0
    loss = AvatarLoss(LossConfig(lpips_weights=str(out)))
    assert "lpips" in loss.active_terms and not loss.inactive_terms
    with pytest.raises(FileNotFoundError, match="LPIPS weights"):
        LPIPS.from_file(tmp_path / "missing.safetensors")


def test_regularisers_are_zero_on_the_mesh_and_positive_off_it():
    loss = AvatarLoss(LossConfig(ssim=0.0))
    img = torch.rand(1, 3, 16, 16)
    a = torch.ones(1, 1, 16, 16)
    on = {"means": torch.tensor([[0.3, -0.2, 0.0]]), "scales": torch.log(torch.full((1, 3), 0.3))}
    off = {"means": torch.tensor([[0.3, -0.2, 2.0]]), "scales": torch.log(torch.full((1, 3), 2.0))}
    _, p_on = loss(img, a, img, a, on)
    _, p_off = loss(img, a, img, a, off)
    assert p_on["position"] == 0.0 and p_on["scale"] == 0.0 and p_on["l1"] == 0.0
    assert p_off["position"] == pytest.approx(1.5) and p_off["scale"] == pytest.approx(1.4, rel=1e-5)
