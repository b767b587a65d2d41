"""A tiny random AniPortrait model, written in the published weight folder's layout.

Why: no weights can be downloaded where this project is tested, yet the AniPortrait route must
run end to end. This builds the *same classes* the route loads (our reference UNet, denoising UNet
with motion modules and pose guider; diffusers' AutoencoderKL; transformers'
CLIPVisionModelWithProjection) at toy sizes with seeded random weights, and saves them as
AniPortrait's files (``reference_unet.pth`` ..., ``stable-diffusion-v1-5/unet/config.json``,
``sd-vae-ft-mse/``, ``image_encoder/``) plus an ``aniportrait_config.json`` with the toy sizes.
So tests exercise exactly the loading and sampling path of real weights; only the numbers are
meaningless.

Departures from AniPortrait's init, each so that a test can see a condition act: the pose
guider's zero-initialised ``final_proj`` and the motion modules' zero-initialised ``proj_out``
get random weights (:func:`zero_pose_guider` zeroes the former again).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...utils.io import atomic_dir
from ..tiny import tiny_image_encoder, tiny_vae
from .checkpoint import ARCH_FILE, IMAGE_ENCODER_DIR, UNET_CONFIG, VAE_DIR, AniPortraitArch, build_modules, make_arch

TINY_CROSS_DIM = 16  # CLIP projection dim = UNet cross-attention dim

TINY_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 2,
    "block_out_channels": [8, 16, 32, 32],  # (C, 2C, 4C, 4C), as the pose guider needs
    "center_input_sample": False,
    "cross_attention_dim": TINY_CROSS_DIM,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 4,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_OVERRIDES = {
    "motion": {"num_attention_heads": 2, "norm_groups": 4},
    "guider": {"hidden": [4, 4, 8, 8], "heads": 2, "head_dim": 4, "norm_groups": 4},
}


def tiny_arch() -> AniPortraitArch:
    return make_arch(TINY_UNET, TINY_OVERRIDES)


@torch.no_grad()
def zero_pose_guider(guider, zero: bool = True, seed: int = 0, std: float = 0.5) -> None:
    """Set the guider's ``final_proj`` to exactly zero (its AniPortrait init: the landmark images
    then cannot change the result) or to random values (they do). Changed in place."""
    gen = torch.Generator().manual_seed(seed)
    for p in (guider.final_proj.weight, guider.final_proj.bias):
        p.copy_(torch.zeros_like(p) if zero else (torch.randn(p.shape, generator=gen) * std).to(p))


@torch.no_grad()
def _wake(mods: dict, seed: int) -> None:
    """Random weights where AniPortrait initialises to zero (see the module docstring)."""
    zero_pose_guider(mods["pose_guider"], zero=False, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, m in mods["denoising_unet"].named_modules():
        if name.endswith("temporal_transformer.proj_out"):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.2)


def tiny_networks(seed: int = 0, resolution: int = 64) -> tuple[dict, torch.nn.Module, torch.nn.Module, AniPortraitArch]:
    """(reference_unet/denoising_unet/pose_guider, vae, image_encoder, arch) in memory, seeded.

    The same arguments give bit-identical weights; the global torch RNG is left untouched.
    """
    if resolution % 64 != 0 or resolution <= 0:
        raise ValueError(f"tiny AniPortrait resolution must be a positive multiple of 64, got {resolution}")
    arch = tiny_arch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = build_modules(arch)
        _wake(mods, seed + 1)
        vae = tiny_vae(resolution)
        image_encoder = tiny_image_encoder(projection_dim=TINY_CROSS_DIM)
    return mods, vae, image_encoder, arch


def build_tiny_aniportrait(folder: Path, seed: int = 0, resolution: int = 64) -> Path:
    """Build the tiny model and save it in AniPortrait's folder layout (atomically). Returns ``folder``."""
    folder = Path(folder)
    mods, vae, image_encoder, _ = tiny_networks(seed, resolution)
    den = mods["denoising_unet"].state_dict()
    files = {
        "reference_unet": mods["reference_unet"].state_dict(),
        "denoising_unet": {k: v for k, v in den.items() if "motion_modules" not in k},
        "motion_module": {k: v for k, v in den.items() if "motion_modules" in k},
        "pose_guider": mods["pose_guider"].state_dict(),
    }
    with atomic_dir(folder) as tmp:
        for stem, state in files.items():
            torch.save({k: v.contiguous() for k, v in state.items()}, tmp / f"{stem}.pth")
        (tmp / UNET_CONFIG).parent.mkdir(parents=True)
        (tmp / UNET_CONFIG).write_text(json.dumps(TINY_UNET, indent=1) + "\n")
        (tmp / ARCH_FILE).write_text(json.dumps(TINY_OVERRIDES, indent=1) + "\n")
        vae.save_pretrained(tmp / VAE_DIR)
        image_encoder.save_pretrained(tmp / IMAGE_ENCODER_DIR)
    return folder
