"""Convert public LPIPS-VGG weights into the single safetensors file zero1toa's LPIPS loads.

    python scripts/convert_lpips.py VGG16.pth LPIPS_VGG.pth out.safetensors

- VGG16.pth: torchvision's ImageNet VGG-16 state dict (``vgg16-397923af.pth``); only its
  ``features.*`` convolutions are kept.
- LPIPS_VGG.pth: the LPIPS v0.1 linear heads for VGG (``lpips/weights/v0.1/vgg.pth``, keys
  ``lin{k}.model.1.weight``).
Both are read with ``torch.load(weights_only=True)`` (no code runs). Then set
``train.loss.lpips_weights=out.safetensors``. Nothing is downloaded by this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def convert(vgg_path: Path, lpips_path: Path, out: Path) -> Path:
    from safetensors.torch import save_file

    from zero1toa.train.losses import LPIPS

    vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
    lin = torch.load(lpips_path, map_location="cpu", weights_only=True)
    tensors = {}
    for idx in LPIPS.CONV_IDX:
        for part in ("weight", "bias"):
            key = f"features.{idx}.{part}"
            if key not in vgg:
                raise KeyError(f"{vgg_path} has no {key}: not a torchvision VGG-16 state dict")
            tensors[key] = vgg[key].float().contiguous()
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        if key not in lin:
            raise KeyError(f"{lpips_path} has no {key}: not LPIPS v0.1 VGG heads")
        tensors[f"lin{k}"] = lin[key].float().contiguous()
    LPIPS().load_state_dict(tensors, strict=False)  # shape check
    save_file(tensors, str(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("vgg", type=Path)
    p.add_argument("lpips", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    print(f"wrote {convert(a.vgg, a.lpips, a.out)}")


if __name__ == "__main__":
    main()
