"""Derive the key/shape manifest of AniPortrait's published checkpoint files from AniPortrait's OWN code.

Why: our AniPortrait route (zero1toa/generate/aniportrait_*.py) rebuilds AniPortrait's networks in
our own modules. Whether they load the published ``*.pth`` files can only be checked without the
weights if we know, independently of our code, which keys and shapes those files hold. This script
builds AniPortrait's model classes (its ``src/models``) at full size on the meta device (no memory,
no weights) and writes ``{file: {key: shape}}``; ``tests/test_aniportrait_manifest.py`` then checks
that our modules produce exactly those keys and shapes.

Which keys each file holds follows how AniPortrait's training scripts save them:
- ``reference_unet.pth``: ``train_stage_1.py`` saves the whole reference ``UNet2DConditionModel``
  (``src/models/unet_2d_condition.py``, SD-1.5's unet config); inference loads it strictly.
- ``denoising_unet.pth``: ``train_stage_1.py`` saves the whole ``UNet3DConditionModel``
  (``src/models/unet_3d.py``) built by ``from_pretrained_2d`` with
  ``{"use_motion_module": False, "unet_use_temporal_attention": False}``: no motion modules.
- ``motion_module.pth``: ``train_stage_2.py``'s ``save_checkpoint`` keeps the keys containing
  ``"motion_module"`` of the ``UNet3DConditionModel`` built with
  ``configs/inference/inference_v2.yaml``'s ``unet_additional_kwargs`` (what inference loads it into).
- ``pose_guider.pth``: the whole ``PoseGuider(noise_latent_channels=320, use_ca=True)``
  (``src/models/pose_guider.py``), as ``scripts/pose2vid.py`` builds it and loads it strictly.

It must run OUTSIDE this repository's venv, against AniPortrait's source and the diffusers it pins
(0.24.0). How it was run for the committed ``zero1toa/data/aniportrait_manifest.json``::

    python3.11 -m venv /tmp/anienv
    /tmp/anienv/bin/pip install torch==2.13.0 diffusers==0.24.0 "huggingface_hub<0.26" einops==0.4.1 omegaconf
    # AniPortrait's src/ and configs/ at commit 7f6593fd971c95b65f603c15ef8ce2c3fc7f5404 in /tmp/aniportrait_src
    /tmp/anienv/bin/python scripts/derive_aniportrait_manifest.py --aniportrait /tmp/aniportrait_src \
        --commit 7f6593fd971c95b65f603c15ef8ce2c3fc7f5404 --out zero1toa/data/aniportrait_manifest.json

(torch 2.0.1, which AniPortrait pins, is not on this machine's package index as a CPU wheel; the
model classes only need ``torch.nn`` layers, whose state-dict names are the same in 2.13.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SD15_UNET_CONFIG = HERE.parent / "zero1toa" / "data" / "sd15_unet_config.json"


def _shapes(state: dict) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aniportrait", type=Path, required=True, help="folder holding AniPortrait's src/ and configs/")
    ap.add_argument("--commit", required=True, help="the AniPortrait commit that folder was taken from (recorded)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    root = args.aniportrait.resolve()
    sys.path.insert(0, str(root))
    import diffusers
    import torch
    from omegaconf import OmegaConf

    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel

    sd15 = json.loads(SD15_UNET_CONFIG.read_text())
    infer = OmegaConf.load(root / "configs" / "inference" / "inference_v2.yaml")
    unet_kwargs = OmegaConf.to_container(infer.unet_additional_kwargs)

    def unet3d_config() -> dict:
        # exactly what UNet3DConditionModel.from_pretrained_2d does to the SD-1.5 unet config
        cfg = dict(sd15)
        cfg["_class_name"] = UNet3DConditionModel.__name__
        cfg["down_block_types"] = ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]
        cfg["up_block_types"] = ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3
        cfg["mid_block_type"] = "UNetMidBlock3DCrossAttn"
        return cfg

    files: dict[str, dict[str, list[int]]] = {}
    with torch.device("meta"):
        reference = UNet2DConditionModel.from_config(dict(sd15))
        files["reference_unet.pth"] = _shapes(reference.state_dict())
        del reference
        stage1 = UNet3DConditionModel.from_config(unet3d_config(), use_motion_module=False, unet_use_temporal_attention=False)
        files["denoising_unet.pth"] = _shapes(stage1.state_dict())
        del stage1
        full = UNet3DConditionModel.from_config(unet3d_config(), **unet_kwargs)
        files["motion_module.pth"] = {k: v for k, v in _shapes(full.state_dict()).items() if "motion_module" in k}
        del full
        guider = PoseGuider(noise_latent_channels=320, use_ca=True)
        files["pose_guider.pth"] = _shapes(guider.state_dict())

    manifest = {
        "what": "state-dict keys and shapes of AniPortrait's published checkpoint files, from AniPortrait's own model classes",
        "provenance": {
            "aniportrait_repository": "https://github.com/Zejun-Yang/AniPortrait",
            "aniportrait_commit": args.commit,
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "sd15_unet_config_sha256": hashlib.sha256(SD15_UNET_CONFIG.read_bytes()).hexdigest(),
            "unet_additional_kwargs": unet_kwargs,
            "script": "scripts/derive_aniportrait_manifest.py",
        },
        "counts": {name: len(keys) for name, keys in files.items()},
        "files": files,
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, args.out)
    print({name: len(keys) for name, keys in files.items()})


if __name__ == "__main__":
    main()
