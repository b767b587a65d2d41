"""SymGEN's generator on AniPortrait's published weights: reference portrait + landmark images -> video.

The paper distils from a portrait animation video model conditioned on the reference image and
on face-mesh landmark renders; AniPortrait is the public model with exactly that conditioning.
This backend loads its checkpoint files (:mod:`.checkpoint`) into our modules and samples as its
pipeline does (:mod:`.sampling`), with SymGEN's refresh on top:

- **from noise** (``init_frames`` None or ``strength >= 1``): every step from Gaussian latents
  drawn from the request's seed. With AniPortrait's zero-terminal-SNR schedule the first step is
  t = 999, where no signal is left, so this is also what a strength-1 refresh means.
- **refresh** (``0 < strength < 1``): of ``num_inference_steps``, the last
  ``int(num_inference_steps * strength)`` are run, starting from the renders' latents noised to
  that level (``refresh_start="sdedit"``) or DDIM-inverted to it (``"ddim_inversion"``).
- **no step** (that count is 0, e.g. strength 0): the init frames through the VAE (posterior mean,
  decode): what the refresh tends to as the noise goes to zero. :meth:`vae_roundtrip` exposes it.

Clips longer than a window are handled inside one call: overlapping windows of
``context_frames`` (16) frames, ``context_overlap`` (4) shared, averaged at every step.
Landmark images are drawn in AniPortrait's own style (``landmark_style="aniportrait"``, see
:func:`zero1toa.render.landmark_maps.draw_aniportrait_maps`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..base import GenerationRequest, GenerationResult, GeneratorInfo, VideoGenerator
from ..model_folder import config_digest
from .checkpoint import IMAGE_ENCODER_DIR, VAE_DIR, AniPortraitArch, check_folder, folder_arch, load_networks
from .reference_attn import ReferenceLink
from .sampling import Networks, decode_latents, denoise, encode_latents, invert, prepare

log = logging.getLogger(__name__)


@dataclass
class AniPortraitSettings:
    """Sampling settings; defaults are AniPortrait's ``scripts/pose2vid.py`` ones."""

    num_inference_steps: int = 25
    guidance_scale: float = 3.5  # classifier-free guidance; <= 1 turns it off (half the compute)
    eta: float = 0.0  # DDIM eta
    refresh_start: str = "sdedit"  # sdedit | ddim_inversion (see the module docstring)
    context_frames: int = 16  # window the motion modules see
    context_overlap: int = 4
    decode_chunk_size: int = 8  # frames per VAE call
    # The pose guider as AniPortrait's scripts run it: BatchNorm with the window's own statistics
    # (the guider is never put in eval mode), on uint8-valued images mapped by 2x - 1 (diffusers
    # 0.24 does not divide numpy images by 255). batch statistics make the value scale immaterial
    # except at the image border. False / 1.0: stored running statistics on [-1, 1] images.
    pose_batch_stats: bool = True
    pose_value_scale: float = 255.0


def _default_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


class AniPortraitGenerator(VideoGenerator):
    """Build with :meth:`from_folder` (a weight folder) or :meth:`from_networks` (modules in memory)."""

    def __init__(self, net: Networks, arch: AniPortraitArch, resolution: int, settings: AniPortraitSettings | None = None, weights: str = "unknown"):
        self.net, self.arch = net, arch
        self.settings = settings or AniPortraitSettings()
        factor = 8 * 2 ** (len(arch.unet["block_out_channels"]) - 1)  # VAE x8, then the UNet's downsamplings
        if resolution % factor != 0:
            raise ValueError(f"resolution {resolution} must be a multiple of {factor} (VAE factor x UNet downsampling)")
        if self.settings.context_frames > arch.motion.max_len:
            raise ValueError(f"context_frames {self.settings.context_frames} exceeds the motion modules' {arch.motion.max_len} positions")
        self.info = GeneratorInfo(
            name="aniportrait",
            resolution=resolution,
            frames_per_call=self.settings.context_frames,
            overlap=self.settings.context_overlap,
            deterministic=True,
            weights=weights,
            landmark_style="aniportrait",
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_folder(
        cls,
        path: Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        *,
        resolution: int = 512,
        settings: AniPortraitSettings | None = None,
    ) -> "AniPortraitGenerator":
        """Load AniPortrait's weight folder (layout: :mod:`.checkpoint`); nothing is downloaded.

        ``dtype`` defaults to float16 on CUDA (AniPortrait's ``weight_dtype: fp16``), float32 elsewhere.
        """
        from diffusers import AutoencoderKL
        from transformers import CLIPVisionModelWithProjection

        path = Path(path)
        check_folder(path)
        arch = folder_arch(path)
        mods = load_networks(path, arch)

        def load(sub: str, loader):
            try:
                return loader.from_pretrained(path / sub, local_files_only=True)
            except Exception as e:
                from ..model_folder import ModelFolderError

                raise ModelFolderError(f"could not load {sub!r} ({loader.__name__}) from {path / sub}: {e}") from e

        vae = load(VAE_DIR, AutoencoderKL)
        image_encoder = load(IMAGE_ENCODER_DIR, CLIPVisionModelWithProjection)
        weights = f"{path.resolve()} (AniPortrait; configs sha256:{config_digest(path)[:16]})"
        return cls.from_networks(mods, vae, image_encoder, arch, device=device, dtype=dtype, resolution=resolution, settings=settings, weights=weights)

    @classmethod
    def from_networks(
        cls,
        mods: dict[str, torch.nn.Module],
        vae: torch.nn.Module,
        image_encoder: torch.nn.Module,
        arch: AniPortraitArch,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        *,
        resolution: int = 512,
        settings: AniPortraitSettings | None = None,
        weights: str = "in-memory networks",
    ) -> "AniPortraitGenerator":
        """Assemble from modules in memory: ``mods`` = reference_unet, denoising_unet, pose_guider."""
        from diffusers import DDIMScheduler

        from ..diffusion import _quiet_diffusers

        _quiet_diffusers()  # diffusers' empty "kept in float32: []" warning on every .to(dtype)
        device = torch.device(device)
        dtype = _default_dtype(device, dtype)
        parts = [mods["reference_unet"], mods["denoising_unet"], mods["pose_guider"], vae, image_encoder]
        for m in parts:
            m.to(device=device, dtype=dtype).eval().requires_grad_(False)
        link = ReferenceLink(mods["reference_unet"], mods["denoising_unet"])
        net = Networks(vae, image_encoder, mods["reference_unet"], mods["denoising_unet"], mods["pose_guider"], DDIMScheduler(**arch.scheduler), link, device, dtype)
        return cls(net, arch, resolution, settings, weights)

    def with_settings(self, **changes: Any) -> "AniPortraitGenerator":
        """A generator sharing these networks (no reload) with some settings changed."""
        return type(self)(self.net, self.arch, self.info.resolution, replace(self.settings, **changes), self.info.weights)

    @property
    def device(self) -> torch.device:
        return self.net.device

    # ------------------------------------------------------------------ helpers
    def vae_roundtrip(self, frames: Tensor) -> Tensor:
        """[F, 3, H, W] in [0, 1] -> the frames through the VAE at the generator's size: strength 0's result."""
        chunk = self.settings.decode_chunk_size
        return decode_latents(self.net, encode_latents(self.net, frames, self.info.resolution, chunk), chunk)

    def denoise_steps(self, strength: float) -> int:
        n = self.settings.num_inference_steps
        return min(int(n * strength), n)

    # ------------------------------------------------------------------ generation
    def _generate_window(self, request: GenerationRequest) -> GenerationResult:
        return self._run(request)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Any number of frames in one call: windows are averaged at every step (not cross-faded after)."""
        self._validate(request)
        return self._run(request)

    @torch.no_grad()
    def _run(self, request: GenerationRequest) -> GenerationResult:
        net, s, R = self.net, self.settings, self.info.resolution
        if s.refresh_start not in ("sdedit", "ddim_inversion"):
            raise ValueError(f"refresh_start must be sdedit or ddim_inversion, got {s.refresh_start!r}")
        from_noise = request.init_frames is None or request.strength >= 1.0
        steps = s.num_inference_steps if from_noise else self.denoise_steps(request.strength)
        if steps == 0:
            frames = self.vae_roundtrip(request.init_frames)
            return GenerationResult(frames, None, {"mode": "vae_roundtrip", "denoise_steps": 0, "reference": "reference_unet+clip"})
        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        try:
            cond = prepare(net, request.reference.cpu(), request.landmark_maps.cpu(), R, s.context_frames, s.context_overlap, s.pose_value_scale, s.pose_batch_stats)
            sched = net.scheduler
            sched.set_timesteps(s.num_inference_steps, device=net.device)
            timesteps = sched.timesteps[s.num_inference_steps - steps :]
            F_ = request.num_frames
            shape = (1, 4, F_, R // 8, R // 8)
            if from_noise:
                noise = torch.randn(shape, generator=generator, dtype=torch.float32)
                latents = (noise * sched.init_noise_sigma).to(net.device, net.dtype)
                mode = "noise"
            else:
                init = encode_latents(net, request.init_frames.cpu(), R, s.decode_chunk_size)
                if s.refresh_start == "sdedit":
                    noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(net.device, net.dtype)
                    latents = sched.add_noise(init, noise, timesteps[:1])
                    mode = "refresh"
                else:
                    latents = invert(net, cond, init, timesteps)
                    mode = "refresh (ddim inversion)"
            latents = denoise(net, cond, latents, timesteps, s.guidance_scale, s.eta, generator if s.eta > 0 else None)
        finally:
            net.link.clear()
        frames = decode_latents(net, latents, s.decode_chunk_size)
        extras = {"mode": mode, "denoise_steps": steps, "reference": "reference_unet+clip", "windows": len(cond.windows)}
        return GenerationResult(frames, None, extras)
