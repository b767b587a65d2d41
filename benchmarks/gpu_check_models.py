"""Full-size random-weight generators for ``benchmarks/gpu_check.py`` (and their toy twins for --dry-run).

Why random weights: the cost of a generation (seconds, peak memory) depends on the architecture,
the resolution, the frame count and the step count, not on the weights' values, and no weights can
be downloaded where this project runs. So both diffusion routes are built at their real sizes,
directly on the target device (no CPU initialisation of ~3 billion parameters), cast to float16,
and timed on one 16-frame 512 px request. Their frames are noise; only the timings mean anything.

- AnimateDiff + ControlNet route: SD-1.5 UNet, the AnimateDiff v1.5-v2 MotionAdapter (diffusers'
  defaults), a ControlNet of the UNet, SD's VAE, SD-1.5's CLIP ViT-L/14 text encoder, the ViT-H/14
  image encoder of h94/IP-Adapter and random IP-Adapter weights.
- AniPortrait route: our full-size modules (``full_size_arch``, the manifest's shapes), SD's VAE,
  the CLIP ViT-L/14 image encoder (lambdalabs/sd-image-variations-diffusers' ``image_encoder``).
"""

from __future__ import annotations

import torch

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)


def _sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**SD_VAE)


def _vision(hidden: int, layers: int, heads: int, mlp: int, projection: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads, image_size=224, patch_size=14, projection_dim=projection)
    return CLIPVisionModelWithProjection(cfg).eval()


def animatediff_full(device: str, dtype: torch.dtype, steps: int, guidance: float):
    """The AnimateDiff + ControlNet (+ IP-Adapter) generator at full size, random weights."""
    from diffusers import ControlNetModel, DDIMScheduler, MotionAdapter, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from zero1toa.generate.aniportrait.checkpoint import sd15_unet_config
    from zero1toa.generate.aniportrait.unet3d import build_sd_unet
    from zero1toa.generate.diffusion import AnimateDiffControlNetGenerator, DiffusionSettings, split_ip_adapter_state
    from zero1toa.generate.tiny import _ip_adapter_state, tiny_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = build_sd_unet(sd15_unet_config())
        adapter = MotionAdapter()  # block widths 320..1280, 2 layers, mid block, 32 positions
        parts = {
            "unet": unet,
            "motion_adapter": adapter,
            "controlnet": ControlNetModel.from_unet(unet),
            "vae": _sd_vae(),
            "text_encoder": CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)).eval(),
            "image_encoder": _vision(1280, 32, 16, 5120, 1024),
        }
        layout = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
        parts["tokenizer"] = tiny_clip_tokenizer()  # token ids only: any CLIP vocabulary costs the same
        parts["scheduler"] = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, steps_offset=1)
        with torch.device("cpu"):  # its seeded CPU generator draws on the CPU
            flat = _ip_adapter_state(layout, 1024, seed=1)
        parts["ip_adapter"] = split_ip_adapter_state({k: v.to(device) for k, v in flat.items()})
        del layout
        settings = DiffusionSettings(num_inference_steps=steps, guidance_scale=guidance)
        # inside the device context: the motion UNet the pipeline folds together is built there too
        return AnimateDiffControlNetGenerator.from_components(parts, device=device, dtype=dtype, resolution=512, settings=settings, weights="random (full size)")


def aniportrait_full(device: str, dtype: torch.dtype, steps: int, guidance: float):
    """The AniPortrait generator at full size (the published files' shapes), random weights."""
    from zero1toa.generate.aniportrait.checkpoint import build_modules, full_size_arch
    from zero1toa.generate.aniportrait.generator import AniPortraitGenerator, AniPortraitSettings

    torch.manual_seed(0)
    arch = full_size_arch()
    with torch.device(device):
        mods = build_modules(arch)
        vae = _sd_vae()
        image_encoder = _vision(1024, 24, 16, 4096, 768)
    settings = AniPortraitSettings(num_inference_steps=steps, guidance_scale=guidance)
    return AniPortraitGenerator.from_networks(mods, vae, image_encoder, arch, device=device, dtype=dtype, resolution=512, settings=settings, weights="random (full size)")


def animatediff_toy(steps: int):
    from zero1toa.generate.diffusion import AnimateDiffControlNetGenerator, DiffusionSettings
    from zero1toa.generate.tiny import tiny_components

    return AnimateDiffControlNetGenerator.from_components(tiny_components(0, 64), resolution=64, settings=DiffusionSettings(num_inference_steps=steps, guidance_scale=1.0), weights="tiny random")


def aniportrait_toy(steps: int):
    from zero1toa.generate.aniportrait.generator import AniPortraitGenerator, AniPortraitSettings
    from zero1toa.generate.aniportrait.tiny import tiny_networks

    mods, vae, image_encoder, arch = tiny_networks(0, 64)
    return AniPortraitGenerator.from_networks(mods, vae, image_encoder, arch, resolution=64, settings=AniPortraitSettings(num_inference_steps=steps, guidance_scale=1.0), weights="tiny random")


def parameter_count(generator) -> int:
    """Parameters of every network a generator holds (either route)."""
    if hasattr(generator, "net"):
        n = generator.net
        mods = [n.vae, n.image_encoder, n.reference_unet, n.denoising_unet, n.pose_guider]
    else:
        p = generator.pipeline
        mods = [p.vae, p.unet, p.controlnet, p.text_encoder, getattr(p, "image_encoder", None)]
    return sum(t.numel() for m in mods if m is not None for t in m.parameters())
