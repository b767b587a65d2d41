"""Build the configured generator (the only place that knows all backends)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..env import project_root
from .base import VideoGenerator

log = logging.getLogger("zero1toa.generate")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but CUDA is not available (CPU torch build or no GPU)")
    return name


def _dtype(name: str, device: str) -> torch.dtype | None:
    if name == "auto":
        return torch.float16 if device == "cuda" else None
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def tiny_model_dir(seed: int = 0, resolution: int = 64) -> Path:
    """A tiny random AnimateDiff+ControlNet folder, built once per (seed, resolution) and cached."""
    from .tiny import build_tiny_animatediff

    folder = project_root() / ".cache" / f"tiny-animatediff-s{seed}-r{resolution}"
    if not (folder / "unet").exists():
        build_tiny_animatediff(folder, seed=seed, resolution=resolution)
    return folder


def tiny_aniportrait_dir(seed: int = 0, resolution: int = 64) -> Path:
    """A tiny random AniPortrait folder (AniPortrait's layout), built once per (seed, resolution) and cached."""
    from .aniportrait.tiny import build_tiny_aniportrait

    folder = project_root() / ".cache" / f"tiny-aniportrait-s{seed}-r{resolution}"
    if not (folder / "pose_guider.pth").exists():
        build_tiny_aniportrait(folder, seed=seed, resolution=resolution)
    return folder


def build_generator(cfg, head, reference, seed: int = 0) -> VideoGenerator:
    """``cfg``: config.GeneratorConfig; ``reference``: symgen.round.Reference."""
    if cfg.kind == "reprojection":
        from .reprojection import ReprojectionConfig, ReprojectionGenerator

        labels = getattr(head, "face_labels", None)
        return ReprojectionGenerator(
            head,
            reference.image,
            reference.camera,
            reference.mask,
            reference_expression=reference.expression,
            face_labels=labels,
            config=ReprojectionConfig(resolution=cfg.resolution, supersample=cfg.supersample, completion_weight=cfg.completion_weight),
            completion=getattr(reference, "completion", None),
        )
    if cfg.kind == "simulated":  # the ground-truth benchmark's instrument (never a model)
        from ..bench.simulated import build_simulated

        return build_simulated(cfg, head, reference)
    if cfg.kind in ("animatediff", "tiny"):
        from .diffusion import AnimateDiffControlNetGenerator, DiffusionSettings

        device = resolve_device(cfg.device)
        folder = Path(cfg.model_dir) if cfg.kind == "animatediff" else tiny_model_dir(seed, cfg.resolution)
        settings = DiffusionSettings(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative_prompt,
            num_inference_steps=cfg.num_inference_steps if cfg.kind == "animatediff" else min(cfg.num_inference_steps, 2),
            guidance_scale=cfg.guidance_scale if cfg.kind == "animatediff" else 1.0,
            controlnet_conditioning_scale=cfg.controlnet_conditioning_scale,
            ip_adapter_scale=cfg.ip_adapter_scale,
            refresh_start=cfg.refresh_start,
        )
        return AnimateDiffControlNetGenerator.from_folder(
            folder,
            device=device,
            dtype=_dtype(cfg.dtype, device),
            cpu_offload=cfg.cpu_offload,
            resolution=cfg.resolution,
            settings=settings,
        )
    if cfg.kind in ("aniportrait", "aniportrait-tiny"):
        from .aniportrait.generator import AniPortraitGenerator, AniPortraitSettings

        if cfg.cpu_offload:
            raise ValueError("generator.cpu_offload is not supported by generator=aniportrait (its UNets run every step)")
        device = resolve_device(cfg.device)
        tiny = cfg.kind == "aniportrait-tiny"
        folder = tiny_aniportrait_dir(seed, cfg.resolution) if tiny else Path(cfg.model_dir)
        settings = AniPortraitSettings(
            num_inference_steps=min(cfg.num_inference_steps, 2) if tiny else cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
            refresh_start=cfg.refresh_start,
        )
        return AniPortraitGenerator.from_folder(folder, device=device, dtype=_dtype(cfg.dtype, device), resolution=cfg.resolution, settings=settings)
    raise ValueError(f"unknown generator kind {cfg.kind!r}")
