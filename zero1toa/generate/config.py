"""Settings of the pseudo ground-truth generators (composed into the run's config by zero1toa.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bench.simulated import SimulatorConfig


@dataclass
class GeneratorConfig:
    """Which pseudo ground-truth generator SymGEN uses."""

    kind: str = "reprojection"  # reprojection (embedded, weight-free) | animatediff | tiny | aniportrait | aniportrait-tiny | simulated (benchmark instrument)
    resolution: int = 512  # dataset frame size (the avatar trains on it: train.view_px says how)
    # reprojection: antialiasing factor. 1 at 512 px costs what 2 did at 256 px (2 at 512 px is
    # ~15x slower on CPU: the rasterizer's fragments outgrow the caches); silhouettes the photo
    # saw are soft anyway (the person's matte carves them).
    supersample: int = 1
    completion_weight: float = 1.0  # reprojection: blind pixels from the head's texture atlas (1) or the avatar's render (0)
    model_dir: str | None = None  # animatediff: local folder with the pipeline components; aniportrait: AniPortrait's weight folder
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    controlnet_conditioning_scale: float = 1.0
    ip_adapter_scale: float = 0.7
    prompt: str = "a high quality photo of a person's head, studio lighting"
    negative_prompt: str = "blurry, deformed, low quality"
    cpu_offload: bool = False
    # diffusion backends: how a refresh starts from the avatar's renders, sdedit (noise them to
    # the strength's level) or ddim_inversion (DDIM-invert them to it, the paper's summaries)
    refresh_start: str = "sdedit"
    # simulated: a test instrument for the ground-truth benchmark, never a model. It renders the
    # truth subject in truth_dir and corrupts it at this inconsistency level (0|low|medium|high or
    # a multiplier of the simulator's per-knob magnitudes; see zero1toa/bench/simulated.py).
    truth_dir: str | None = None
    inconsistency: str | float = "medium"
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
