"""Pseudo ground truth from AnimateDiff + a landmark ControlNet (diffusers), weights from a local folder.

SymGEN's generator: given the reference portrait, one MediaPipe-face landmark map per frame and,
when refreshing, the avatar's current renders, return a video of pseudo ground truth. This
backend runs diffusers' own ``AnimateDiffVideoToVideoControlNetPipeline``:

- **refresh** (``init_frames`` given, ``0 < strength < 1``): the renders are VAE-encoded, noised
  to the level ``strength`` selects (diffusers' img2img rule: of ``num_inference_steps``, the last
  ``int(num_inference_steps * strength)`` are run), then denoised under the landmark ControlNet
  and the reference. This *is* SymGEN's refresh strength.
- **from noise** (``init_frames`` is None, or ``strength >= 1``): the same pipeline is handed
  pure Gaussian latents (``randn * scheduler.init_noise_sigma``, drawn from the request's seed)
  and runs every step, which is exactly what the text-to-video ``AnimateDiffControlNetPipeline``
  does. (Passing the renders at strength 1 instead would *not* ignore them: diffusers' first
  timestep keeps ``sqrt(alphas_cumprod[t])`` of the signal: 6.8% at t = 999 with SD's
  scaled-linear betas, 4.0% with AnimateDiff's linear ones, and under SD-1.5's "leading"
  spacing the first of 25 steps is t = 961, not 999.) So at strength 1 the result is
  independent of ``init_frames``, bit for bit.
- **no step** (``int(num_inference_steps * strength) == 0``, e.g. strength 0): diffusers would
  run an empty schedule; we return the init frames through the VAE (posterior mean, decode),
  the limit of the refresh as the noise goes to zero. So "strength 0 keeps init_frames" holds
  up to the VAE's reconstruction error, which :meth:`vae_roundtrip` exposes.

**Reference identity.** With ``image_encoder/`` and ``ip_adapter/`` present, the reference goes
through diffusers' IP-Adapter: the weights file is read here (safetensors, the original flat
``image_proj.* / ip_adapter.*`` layout) and handed to ``pipe.load_ip_adapter`` as a state dict;
the reference is resized to the image encoder's input size and CLIP-normalised here (shortest
side, centre crop, OpenAI CLIP mean/std, as ``CLIPImageProcessor`` would) and passed to the
pipeline as a tensor ``ip_adapter_image``, so no image processor runs. The pipeline encodes it
with ``CLIPVisionModelWithProjection`` (``image_embeds``; hidden states for "plus" adapters),
projects it to extra tokens and adds IP-Adapter cross-attention to every spatial cross-attention
layer (motion modules untouched), scaled by ``settings.ip_adapter_scale``; the classifier-free
negative branch gets zero image embeds. Without the pair (``reference="none"``, or ``"auto"``
with both folders absent), the reference is *not used at all*: only the prompt, the landmarks
and (when refreshing) the renders steer the result; ``info.weights`` and each result's
``extras["reference"]`` say so.

**Folder layout** (every component loaded with ``from_pretrained(<folder>/<sub>,
local_files_only=True)``; safetensors only; nothing is downloaded)::

    <folder>/
      unet/            config.json + diffusion_pytorch_model*.safetensors  SD-1.5 UNet2DConditionModel
      motion_adapter/  config.json + diffusion_pytorch_model*.safetensors  AnimateDiff MotionAdapter
      controlnet/      config.json + diffusion_pytorch_model*.safetensors  ControlNetModel (MediaPipe face)
      vae/             config.json + diffusion_pytorch_model*.safetensors  AutoencoderKL
      text_encoder/    config.json + model*.safetensors                    CLIPTextModel
      tokenizer/       vocab.json + merges.txt (or tokenizer.json)         CLIPTokenizer
      scheduler/       scheduler_config.json        (any SD scheduler config; DDIM is built from it)
      image_encoder/   config.json + model*.safetensors      optional: CLIPVisionModelWithProjection
      ip_adapter/      one *.safetensors (IP-Adapter, original flat layout)  optional, with image_encoder/

e.g. SD-1.5's unet/vae/text_encoder/tokenizer/scheduler, guoyww's AnimateDiff motion adapter,
a MediaPipe-face ControlNet in diffusers format, h94/IP-Adapter's ``models/image_encoder`` and
``models/ip-adapter_sd15.safetensors`` (or a face variant). A missing or incomplete folder raises
:class:`ModelFolderError` naming every expected and missing piece.

:func:`zero1toa.generate.tiny.build_tiny_animatediff` writes a tiny random model in this layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import GenerationRequest, GenerationResult, GeneratorInfo, VideoGenerator
from .model_folder import ModelFolderError, check_model_folder, config_digest  # noqa: F401  (the folder layout lives there; re-exported)

log = logging.getLogger(__name__)


class _DropEmptyFp32Warning(logging.Filter):
    """diffusers 0.42.1 warns "modules ... should be kept in float32: []" on *every* ``.to(dtype)``
    (``_keep_in_fp32_modules or []`` is never None), including its own VAE upcast in each
    video-to-video call and ``UNetMotionModel.from_unet2d``. Drop only that empty-list message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def _quiet_diffusers() -> None:
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _DropEmptyFp32Warning) for f in logger.filters):
        logger.addFilter(_DropEmptyFp32Warning())


DEFAULT_PROMPT = (
    "a high quality photo portrait of a person, face, looking at the camera, studio light, plain background"
)
DEFAULT_NEGATIVE_PROMPT = "blurry, low quality, lowres, deformed, ugly, bad anatomy, watermark, text"

# OpenAI CLIP pixel statistics (what CLIPImageProcessor uses for IP-Adapter image encoders).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Schedulers the pipeline declares it supports.
SUPPORTED_SCHEDULERS = (
    "DDIMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
)


@dataclass
class DiffusionSettings:
    """Sampling settings; mutable between calls (e.g. ``gen.settings.num_inference_steps = 10``)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    num_inference_steps: int = 25
    guidance_scale: float = 7.5  # classifier-free guidance; <= 1 turns it off (half the compute)
    controlnet_conditioning_scale: float = 1.0
    ip_adapter_scale: float = 0.7
    eta: float = 0.0  # DDIM eta
    # How a refresh starts from the avatar's renders: "sdedit" noises their latents to the
    # strength's level (diffusers' img2img); "ddim_inversion" runs the scheduler's DDIM inverse
    # (diffusers' DDIMInverseScheduler) under the same conditions up to that level, as the
    # paper's summaries describe, so the denoise starts from the renders' own trajectory.
    refresh_start: str = "sdedit"
    decode_chunk_size: int = 16  # frames per VAE encode/decode call
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to the pipeline call


def _default_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere (half precision on CPU is slow and partly unsupported)."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def split_ip_adapter_state(flat: dict[str, Tensor], strict: bool = True) -> dict[str, dict[str, Tensor]]:
    """Flat ``image_proj.* / ip_adapter.*`` keys (the .safetensors layout) -> diffusers' nested dict.

    diffusers' own loader splits a .safetensors file the same way and ignores other keys;
    ``strict`` makes other keys an error instead.
    """
    nested: dict[str, dict[str, Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in nested and rest:
            nested[head][rest] = value
        elif strict:
            raise ValueError(f"unexpected IP-Adapter key {key!r}: expected 'image_proj.*' or 'ip_adapter.*'")
    return nested


def _read_ip_adapter(folder: Path, weight_name: str | None) -> dict[str, dict[str, Tensor]]:
    """Read an IP-Adapter .safetensors (flat ``image_proj.*``/``ip_adapter.*`` keys) into diffusers' nested dict."""
    from safetensors.torch import load_file

    if weight_name is None:
        names = sorted(p.name for p in folder.glob("*.safetensors"))
        if len(names) != 1:
            raise ModelFolderError(
                f"{folder} holds {len(names)} .safetensors files {names}; pass ip_adapter_weight_name"
            )
        weight_name = names[0]
    file = folder / weight_name
    if not file.is_file():
        raise ModelFolderError(f"IP-Adapter weights {file} not found (component 'ip_adapter')")
    nested = split_ip_adapter_state(load_file(str(file)), strict=False)
    if not nested["image_proj"] or not nested["ip_adapter"]:
        raise ModelFolderError(
            f"{file} is not an IP-Adapter file: expected 'image_proj.*' and 'ip_adapter.*' keys (component 'ip_adapter')"
        )
    return nested


def _resize(x: Tensor, size: int) -> Tensor:
    """[N, C, H, W] -> [N, C, size, size] (antialiased bilinear; a no-op at the right size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class AnimateDiffControlNetGenerator(VideoGenerator):
    """AnimateDiff (SD-1.5 UNet + MotionAdapter) video-to-video with a landmark ControlNet.

    Build with :meth:`from_folder`. ``pipeline`` is the diffusers pipeline (exposed for tests and
    for advanced use, e.g. ``pipeline.controlnet``).
    """

    def __init__(
        self,
        pipeline,
        resolution: int,
        settings: DiffusionSettings | None = None,
        weights: str = "unknown",
        use_ip_adapter: bool = False,
        frames_per_call: int = 16,
        overlap: int = 4,
    ):
        self.pipeline = pipeline
        self.settings = settings or DiffusionSettings()
        self.use_ip_adapter = use_ip_adapter
        factor = pipeline.vae_scale_factor * 2 ** (len(pipeline.unet.config.block_out_channels) - 1)
        if resolution % factor != 0:
            raise ValueError(f"resolution {resolution} must be a multiple of {factor} (VAE factor x UNet downsampling)")
        max_frames = pipeline.unet.config.get("motion_max_seq_length") or frames_per_call
        if frames_per_call > max_frames:
            raise ValueError(f"frames_per_call {frames_per_call} exceeds the motion modules' {max_frames} positions")
        self.info = GeneratorInfo(
            name="animatediff-controlnet",
            resolution=resolution,
            frames_per_call=frames_per_call,
            overlap=overlap,
            deterministic=True,
            weights=weights,
            landmark_style="mediapipe_face",  # the MediaPipe-face ControlNet's training annotator
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_folder(
        cls,
        path: Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cpu_offload: bool = False,
        enable_vae_slicing: bool = True,
        enable_vae_tiling: bool = False,
        *,
        resolution: int | None = None,
        settings: DiffusionSettings | None = None,
        reference: str = "auto",
        scheduler: str = "DDIMScheduler",
        scheduler_overrides: dict[str, Any] | None = None,
        variant: str | None = None,
        ip_adapter_weight_name: str | None = None,
        frames_per_call: int = 16,
        overlap: int = 4,
    ) -> "AnimateDiffControlNetGenerator":
        """Load every component from ``path`` (layout in the module docstring); download nothing.

        ``dtype`` defaults to float16 on CUDA and float32 elsewhere (bfloat16 also works on
        CUDA). ``cpu_offload`` keeps each model on the CPU until it runs (accelerate's model
        offload; the ControlNet stays on the GPU since it runs every step). ``resolution``
        defaults to the UNet's ``sample_size`` x the VAE factor (512 for SD-1.5). ``reference``:
        "auto" | "ip_adapter" | "none" (see :func:`check_model_folder`). ``scheduler`` names a
        diffusers scheduler class built from ``scheduler/scheduler_config.json`` plus
        ``scheduler_overrides`` (e.g. ``{"timestep_spacing": "trailing"}``). ``variant`` picks
        e.g. ``diffusion_pytorch_model.fp16.safetensors``.
        """
        import diffusers
        from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        path = Path(path)
        use_ip = check_model_folder(path, reference)
        _quiet_diffusers()
        device = torch.device(device)
        dtype = _default_dtype(device, dtype)
        if scheduler not in SUPPORTED_SCHEDULERS:
            raise ValueError(f"scheduler {scheduler!r} is not one the pipeline supports: {SUPPORTED_SCHEDULERS}")

        def load(sub: str, loader, **kw):
            try:
                return loader.from_pretrained(path / sub, local_files_only=True, **kw)
            except Exception as e:  # name the component: the libraries' own messages may not
                msg = f"could not load component {sub!r} ({loader.__name__}) from {path / sub}: {e}"
                raise ModelFolderError(msg) from e

        dkw = dict(torch_dtype=dtype, use_safetensors=True, variant=variant)  # diffusers models
        tkw = dict(dtype=dtype, use_safetensors=True, variant=variant)  # transformers models
        parts: dict[str, Any] = {
            "unet": load("unet", UNet2DConditionModel, **dkw),
            "motion_adapter": load("motion_adapter", MotionAdapter, **dkw),
            "controlnet": load("controlnet", ControlNetModel, **dkw),
            "vae": load("vae", AutoencoderKL, **dkw),
            "text_encoder": load("text_encoder", CLIPTextModel, **tkw),
            "tokenizer": load("tokenizer", CLIPTokenizer),
        }
        sched_cls = getattr(diffusers, scheduler)
        try:  # from_config, not from_pretrained: SD-1.5 ships a PNDM config, DDIM reads it fine
            config = sched_cls.load_config(path / "scheduler", local_files_only=True)
            parts["scheduler"] = sched_cls.from_config(config, **(scheduler_overrides or {}))
        except Exception as e:
            msg = f"could not load component 'scheduler' ({scheduler}) from {path / 'scheduler'}: {e}"
            raise ModelFolderError(msg) from e
        if use_ip:
            parts["image_encoder"] = load("image_encoder", CLIPVisionModelWithProjection, **tkw)
            parts["ip_adapter"] = _read_ip_adapter(path / "ip_adapter", ip_adapter_weight_name)

        ref = "ip_adapter" if use_ip else "none (reference unused)"
        if not use_ip:
            why = "reference='none'" if reference == "none" else "no image_encoder/ + ip_adapter/"
            log.warning("%s: %s, so the reference portrait will not be used", path, why)
        return cls.from_components(
            parts,
            device=device,
            dtype=dtype,
            cpu_offload=cpu_offload,
            enable_vae_slicing=enable_vae_slicing,
            enable_vae_tiling=enable_vae_tiling,
            resolution=resolution,
            settings=settings,
            weights=f"{path.resolve()} (configs sha256:{config_digest(path)[:16]}; reference: {ref})",
            frames_per_call=frames_per_call,
            overlap=overlap,
        )

    @classmethod
    def from_components(
        cls,
        parts: dict[str, Any],
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cpu_offload: bool = False,
        enable_vae_slicing: bool = True,
        enable_vae_tiling: bool = False,
        *,
        resolution: int | None = None,
        settings: DiffusionSettings | None = None,
        weights: str = "in-memory components",
        frames_per_call: int = 16,
        overlap: int = 4,
    ) -> "AnimateDiffControlNetGenerator":
        """Assemble the pipeline from components already in memory (what :meth:`from_folder` loads).

        ``parts`` keys: unet (UNet2DConditionModel), motion_adapter, controlnet, vae,
        text_encoder, tokenizer, scheduler; optionally image_encoder with ip_adapter (diffusers'
        nested IP-Adapter state dict) to condition on the reference. The modules are used (and
        cast/moved) in place.
        """
        from diffusers import AnimateDiffVideoToVideoControlNetPipeline, UNetMotionModel

        _quiet_diffusers()
        required = ("unet", "motion_adapter", "controlnet", "vae", "text_encoder", "tokenizer", "scheduler")
        lacking = [k for k in required if parts.get(k) is None]
        if lacking:
            raise ValueError(f"components missing: {lacking}")
        use_ip = parts.get("ip_adapter") is not None
        if use_ip and parts.get("image_encoder") is None:
            raise ValueError("an ip_adapter needs an image_encoder")
        device = torch.device(device)
        dtype = _default_dtype(device, dtype)

        # Fold the motion modules into the UNet ourselves and give the pipeline no adapter: it
        # would otherwise keep the MotionAdapter registered, a second copy of the motion
        # weights that pipe.to(device) moves to the GPU for nothing.
        unet = UNetMotionModel.from_unet2d(parts["unet"], parts["motion_adapter"])  # float32 build, cast back
        pipe = AnimateDiffVideoToVideoControlNetPipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            unet=unet,
            motion_adapter=None,
            controlnet=parts["controlnet"],
            scheduler=parts["scheduler"],
            feature_extractor=None,
            image_encoder=parts.get("image_encoder") if use_ip else None,
        )
        if use_ip:
            try:
                pipe.load_ip_adapter(
                    parts["ip_adapter"], subfolder="", weight_name="ip_adapter", image_encoder_folder=None
                )
            except Exception as e:
                raise ModelFolderError(f"could not load component 'ip_adapter' into the UNet: {e}") from e
        pipe.set_progress_bar_config(disable=True)
        if enable_vae_slicing:
            pipe.vae.enable_slicing()
        if enable_vae_tiling:
            pipe.vae.enable_tiling()
        pipe.to(dtype=dtype)
        if cpu_offload:
            # Models outside model_cpu_offload_seq (text_encoder->image_encoder->unet->vae) get
            # their own offload hook; ControlNet runs every step, so keep it resident instead.
            pipe._exclude_from_cpu_offload = ["controlnet"]
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if resolution is None:
            resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
        return cls(pipe, resolution, settings, weights, use_ip, frames_per_call, overlap)

    # ------------------------------------------------------------------ helpers
    def with_settings(self, **changes: Any) -> "AnimateDiffControlNetGenerator":
        """A generator sharing this one's pipeline (no reload) with some settings changed."""
        return type(self)(
            self.pipeline,
            self.info.resolution,
            replace(self.settings, **changes),
            self.info.weights,
            self.use_ip_adapter,
            self.info.frames_per_call,
            self.info.overlap,
        )

    @property
    def device(self) -> torch.device:
        return self.pipeline._execution_device

    def _reference_pixels(self, reference: Tensor) -> Tensor:
        """[3, H, W] in [0, 1] -> [1, 3, S, S] CLIP-normalised for the image encoder (S its input size)."""
        size = self.pipeline.image_encoder.config.image_size
        x = reference[None].float().clamp(0, 1)
        h, w = x.shape[-2:]
        scale = size / min(h, w)  # shortest side to S, then centre crop, as CLIPImageProcessor
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def vae_roundtrip(self, frames: Tensor) -> Tensor:
        """[F, 3, H, W] in [0, 1] -> the same frames through the VAE (posterior mean), at the generator size.

        This is what "strength 0" returns and the floor on how closely any output can match its
        init frames.
        """
        vae = self.pipeline.vae
        chunk = max(1, self.settings.decode_chunk_size)
        latents = (self.encode_latents(frames)[0].permute(1, 0, 2, 3) / vae.config.scaling_factor).to(vae.dtype)  # [F, C, h, w]
        out = [vae.decode(latents[i : i + chunk]).sample.float().cpu() for i in range(0, latents.shape[0], chunk)]
        return (torch.cat(out) / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_latents(self, frames: Tensor) -> Tensor:
        """[F, 3, H, W] in [0, 1] -> scaled video latents [1, C, F, h, w] (posterior mean)."""
        pipe, R = self.pipeline, self.info.resolution
        vae = pipe.vae
        x = _resize(frames.float(), R) * 2 - 1
        upcast = bool(vae.config.get("force_upcast", False)) and vae.dtype != torch.float32
        model_dtype = vae.dtype
        chunk = max(1, self.settings.decode_chunk_size)
        if upcast:  # as the pipeline does: the SD VAE encoder can overflow in float16
            vae.to(torch.float32)
        lat = torch.cat([vae.encode(x[i : i + chunk].to(self.device, vae.dtype)).latent_dist.mode() for i in range(0, x.shape[0], chunk)])
        if upcast:
            vae.to(model_dtype)
        return (vae.config.scaling_factor * lat).permute(1, 0, 2, 3)[None].to(pipe.dtype)  # [1, C, F, h, w]

    @torch.no_grad()
    def invert(self, frames: Tensor, steps: int, kwargs: dict[str, Any]) -> Tensor:
        """DDIM-invert the renders' latents through the first ``steps`` steps of the schedule.

        The pipeline itself runs the inversion (UNet + ControlNet under the same landmarks, prompt
        and reference, no classifier-free guidance) with diffusers' ``DDIMInverseScheduler`` built
        from the pipeline's scheduler config, truncated to its first ``steps`` timesteps: the
        latent it returns sits exactly at the noise level where a refresh of that many steps
        starts denoising (both schedules share the same timesteps).
        """
        from diffusers import DDIMInverseScheduler

        pipe = self.pipeline
        saved = pipe.scheduler
        forward_cls = type(saved)

        class _FirstSteps(DDIMInverseScheduler):
            """DDIM's inverse step on the forward schedule's own timesteps, reversed and cut to the
            first ``steps`` (so it works for every spacing, "linspace" included)."""

            def set_timesteps(self, num_inference_steps, device=None):  # noqa: ANN001
                fwd = forward_cls.from_config(saved.config)
                fwd.set_timesteps(num_inference_steps, device=device)
                self.num_inference_steps = num_inference_steps
                self.timesteps = fwd.timesteps.flip(0)[:steps].clone()

        pipe.scheduler = _FirstSteps.from_config(saved.config)
        try:
            inv = dict(kwargs, guidance_scale=1.0, negative_prompt=None, latents=self.encode_latents(frames), strength=1.0, output_type="latent", eta=0.0)
            return pipe(**inv).frames
        finally:
            pipe.scheduler = saved

    def denoise_steps(self, strength: float) -> int:
        """How many denoising steps a refresh at ``strength`` runs (diffusers' img2img rule)."""
        n = self.settings.num_inference_steps
        return min(int(n * strength), n)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _generate_window(self, request: GenerationRequest) -> GenerationResult:
        pipe, s, R = self.pipeline, self.settings, self.info.resolution
        landmarks = _resize(request.landmark_maps.float().clamp(0, 1), R).cpu()  # [F, 3, R, R]
        num_frames = landmarks.shape[0]
        ref = "ip_adapter" if self.use_ip_adapter else "none"
        from_noise = request.init_frames is None or request.strength >= 1.0
        if not from_noise and self.denoise_steps(request.strength) == 0:
            frames = self.vae_roundtrip(request.init_frames)
            return GenerationResult(frames, None, {"mode": "vae_roundtrip", "denoise_steps": 0, "reference": ref})

        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        kwargs: dict[str, Any] = dict(
            prompt=s.prompt,
            negative_prompt=s.negative_prompt if s.guidance_scale > 1 else None,
            height=R,
            width=R,
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            conditioning_frames=list(landmarks),  # the pipeline wants a list of F frames
            controlnet_conditioning_scale=float(s.controlnet_conditioning_scale),
            eta=s.eta,
            generator=generator,
            output_type="pt",
            decode_chunk_size=s.decode_chunk_size,
            **s.extra,
        )
        if self.use_ip_adapter:
            pipe.set_ip_adapter_scale(s.ip_adapter_scale)
            kwargs["ip_adapter_image"] = self._reference_pixels(request.reference.cpu())
        if from_noise:
            pipe.scheduler.set_timesteps(s.num_inference_steps)  # init_noise_sigma may depend on it
            latent = R // pipe.vae_scale_factor
            shape = (1, pipe.unet.config.in_channels, num_frames, latent, latent)
            noise = torch.randn(shape, generator=generator, dtype=torch.float32)
            kwargs.update(latents=(noise * pipe.scheduler.init_noise_sigma).to(pipe.dtype), strength=1.0)
            mode, steps = "noise", s.num_inference_steps
        else:
            init = _resize(request.init_frames.float().clamp(0, 1), R).cpu()  # [F, 3, R, R]
            steps = self.denoise_steps(request.strength)
            if s.refresh_start == "ddim_inversion":
                kwargs.update(latents=self.invert(init, steps, kwargs), strength=float(request.strength))
                mode = "refresh (ddim inversion)"
            elif s.refresh_start == "sdedit":
                kwargs.update(video=init, strength=float(request.strength))  # 4-D: len() must be F
                mode = "refresh"
            else:
                raise ValueError(f"refresh_start must be sdedit or ddim_inversion, got {s.refresh_start!r}")
        out = pipe(**kwargs).frames  # [1, F, 3, R, R] in [0, 1]
        frames = out[0].float().cpu().clamp(0, 1)
        return GenerationResult(frames, None, {"mode": mode, "denoise_steps": steps, "reference": ref})
