"""The AniPortrait denoising loop: reference encoding, pose features, overlapping windows, DDIM.

What one generation does (learnt from AniPortrait's ``src/pipelines/pipeline_pose2vid_long.py``):

1. the reference portrait is CLIP-encoded (``image_embeds`` [1, 1, D]: the UNets' only
   cross-attention context) and VAE-encoded; the reference UNet runs once on its latent at t = 0
   and its self-attention inputs are recorded (:mod:`.reference_attn`);
2. the landmark images go through the pose guider, one context window at a time;
3. every DDIM step predicts each overlapping window of ``context_frames`` frames with the
   denoising UNet and averages the predictions of frames that several windows cover, then takes
   one scheduler step on the whole clip. (AniPortrait's windows wrap around from the last frame to
   the first, for looping videos; ours do not, since our clips sweep from one view to another.)
   Classifier-free guidance: the unconditional branch gets zero CLIP embeddings and no reference
   attention, as AniPortrait's.

SymGEN's refresh enters through the starting latent: pure noise (from scratch), the renders'
latents noised to the strength's level (SDEdit), or the renders DDIM-inverted to that level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import window_starts

# OpenAI CLIP pixel statistics (CLIPImageProcessor's defaults, which AniPortrait's pipeline uses).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Networks:
    """The loaded parts of an AniPortrait model, on one device and dtype."""

    vae: nn.Module  # diffusers AutoencoderKL
    image_encoder: nn.Module  # transformers CLIPVisionModelWithProjection
    reference_unet: nn.Module
    denoising_unet: nn.Module  # DenoisingUNet3D
    pose_guider: nn.Module
    scheduler: object  # diffusers DDIMScheduler
    link: object  # ReferenceLink between the two UNets
    device: torch.device
    dtype: torch.dtype


@dataclass
class Condition:
    """What stays fixed through the steps of one request."""

    context: Tensor  # [1, 1, D] CLIP image embeds
    windows: list[list[int]]  # frame indices of each context window
    pose_features: list[list[Tensor]]  # per window: the guider's five [1, C_k, f, h_k, w_k]


def resize(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """[N, C, H, W] -> [N, C, size, size] (antialiased; a no-op at the right size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False)


@torch.no_grad()
def encode_latents(net: Networks, frames: Tensor, resolution: int, chunk: int = 8) -> Tensor:
    """[F, 3, H, W] in [0, 1] -> scaled latents [1, 4, F, h, w] (posterior mean, as AniPortrait's reference)."""
    vae = net.vae
    x = resize(frames.float().clamp(0, 1), resolution) * 2 - 1
    lat = [vae.encode(x[i : i + chunk].to(net.device, vae.dtype)).latent_dist.mean for i in range(0, x.shape[0], chunk)]
    lat = torch.cat(lat) * vae.config.scaling_factor  # [F, 4, h, w]
    return lat.permute(1, 0, 2, 3)[None].to(net.dtype)


@torch.no_grad()
def decode_latents(net: Networks, latents: Tensor, chunk: int = 8) -> Tensor:
    """[1, 4, F, h, w] -> frames [F, 3, H, W] in [0, 1] (float32, CPU), a chunk of frames at a time."""
    vae = net.vae
    z = (latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor).to(vae.dtype)
    out = [vae.decode(z[i : i + chunk]).sample.float().cpu() for i in range(0, z.shape[0], chunk)]
    return (torch.cat(out) / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def clip_embeds(net: Networks, reference: Tensor) -> Tensor:
    """[3, H, W] in [0, 1] -> [1, 1, D]. AniPortrait squashes the reference to the encoder's square
    input (``ref_image.resize((224, 224))``), then CLIP-normalises it."""
    size = net.image_encoder.config.image_size
    x = resize(reference[None].float().clamp(0, 1), size, mode="bicubic").clamp(0, 1)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return net.image_encoder(pixel_values=x.to(net.device, net.image_encoder.dtype)).image_embeds[:, None].to(net.dtype)


@torch.no_grad()
def prepare(net: Networks, reference: Tensor, landmark_maps: Tensor, resolution: int, context_frames: int, overlap: int, pose_value_scale: float, pose_batch_stats: bool) -> Condition:
    """Encode the reference (CLIP embeds, reference attention banks) and the pose windows."""
    context = clip_embeds(net, reference)
    ref_latent = encode_latents(net, reference[None], resolution)[:, :, 0]  # [1, 4, h, w]
    t0 = torch.zeros((), dtype=torch.long, device=net.device)
    net.link.record(lambda: net.reference_unet(ref_latent, t0, encoder_hidden_states=context, return_dict=False))
    # AniPortrait's scripts feed the guider uint8 landmark images that diffusers 0.24's VaeImageProcessor
    # does not divide by 255, then maps to 2x - 1: pose_value_scale=255 reproduces those values.
    maps = resize(landmark_maps.float().clamp(0, 1), resolution)  # [F, 3, R, R]
    pose = (maps * pose_value_scale * 2 - 1).permute(1, 0, 2, 3)[None]  # [1, 3, F, R, R]
    n = maps.shape[0]
    windows = [list(range(s, min(s + context_frames, n))) for s in window_starts(n, context_frames, overlap)]
    guider_dtype = next(net.pose_guider.parameters()).dtype
    feats = [net.pose_guider(pose[:, :, w].to(net.device, guider_dtype), batch_stats=pose_batch_stats) for w in windows]
    return Condition(context, windows, [[f.to(net.dtype) for f in fs] for fs in feats])


def _prediction(net: Networks, cond: Condition, latents: Tensor, t: Tensor, guidance_scale: float) -> Tensor:
    """The model output for every frame of ``latents`` [1, 4, F, h, w]: windows averaged, CFG applied."""
    cfg = guidance_scale > 1.0
    out = torch.zeros_like(latents, dtype=torch.float32)
    count = torch.zeros(latents.shape[2], device=latents.device)
    for win, feats in zip(cond.windows, cond.pose_features):
        x = net.scheduler.scale_model_input(latents[:, :, win], t)
        ctx = cond.context
        if cfg:  # rows [unconditional; conditional]: zero embeds and no reference for the first
            x = torch.cat([x, x])
            ctx = torch.cat([torch.zeros_like(ctx), ctx])
            feats = [torch.cat([f, f]) for f in feats]
            net.link.set_rows(len(win))
        else:
            net.link.set_rows(0)
        pred = net.denoising_unet(x, t, ctx, feats).float()
        if cfg:
            uncond, text = pred.chunk(2)
            pred = uncond + guidance_scale * (text - uncond)
        out[:, :, win] += pred
        count[win] += 1
    net.link.set_rows(0)
    return (out / count.view(1, 1, -1, 1, 1)).to(latents.dtype)


@torch.no_grad()
def denoise(net: Networks, cond: Condition, latents: Tensor, timesteps: Tensor, guidance_scale: float, eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Run ``timesteps`` (descending) of DDIM from ``latents`` [1, 4, F, h, w]."""
    for t in timesteps:
        pred = _prediction(net, cond, latents, t, guidance_scale)
        latents = net.scheduler.step(pred, t, latents, eta=eta, generator=generator).prev_sample
    return latents


def _split(model_output: Tensor, x: Tensor, alpha: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x0, eps) of a sample ``x`` at noise level ``alpha`` (= alphas_cumprod) from the model output."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "v_prediction":
        return a * x - s * model_output, a * model_output + s * x
    if prediction_type == "epsilon":
        return (x - s * model_output) / a, model_output
    raise ValueError(f"DDIM inversion supports epsilon and v_prediction models, not {prediction_type!r}")


@torch.no_grad()
def invert(net: Networks, cond: Condition, latents: Tensor, timesteps: Tensor) -> Tensor:
    """DDIM-invert clean ``latents`` up through ``timesteps`` (the descending ones a refresh will run).

    The deterministic DDIM update run backwards, under the same pose and reference, without
    guidance: from the clean level (alpha = 1, where the last denoising step lands) to each of
    the refresh's timesteps in turn, so the returned latent sits where its first step starts.
    """
    sched = net.scheduler
    alphas = sched.alphas_cumprod.to(latents.device, torch.float32)
    kind = sched.config.prediction_type
    x = latents.float()
    a_cur = torch.ones((), device=latents.device)  # set_alpha_to_one: the clean end of the schedule
    for t in timesteps.flip(0):
        out = _prediction(net, cond, x.to(latents.dtype), t, guidance_scale=1.0).float()
        x0, eps = _split(out, x, a_cur, kind)
        a_cur = alphas[int(t)]
        x = a_cur.sqrt() * x0 + (1 - a_cur).sqrt() * eps
    return x.to(latents.dtype)
