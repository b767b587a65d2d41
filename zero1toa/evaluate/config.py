"""Settings of the evaluation (composed into the run's config by zero1toa.config)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvaluateConfig:
    resolution: int = 512  # render size for metrics and videos
    caption: str = "a photo of a person's head"
    # CLIP backbones of the paper's Table 1 (ViT-L/14, ViT-B/16, ViT-B/32): local transformers
    # folders; null = unavailable (the metric is reported as null with the reason).
    clip_models: dict[str, str | None] = field(default_factory=lambda: {"vit_l_14": None, "vit_b_16": None, "vit_b_32": None})
    clip_views_yaw_deg: list[float] = field(default_factory=lambda: [-60.0, -30.0, 0.0, 30.0, 60.0])
    clip_expressions: list[str] = field(default_factory=lambda: ["neutral", "smile", "jaw_open", "surprise"])
    fps_resolution: int = 512
    fps_repeats: int = 5
    fps_warmup: int = 2
    # face detection rate over this view sweep (the quality bar asks for a face at +-45 deg)
    sweep_yaw_deg: list[float] = field(default_factory=lambda: [-90.0, -60.0, -45.0, -30.0, 0.0, 30.0, 45.0, 60.0, 90.0])
    expression_sequence: str = "talk"  # driving preset for expression accuracy
    expression_frames: int = 16  # frames of that preset rendered and landmarked
    face_analysis_size: int = 256  # renders are upscaled (integer factor) to at least this before face detection/mesh
    stability_frames: int = 24  # frames of the slow ramps (neutral -> smile, small camera yaw) for temporal stability
    stability_yaw_deg: float = 10.0  # the camera ramp's total yaw
    device: str = "auto"  # auto | cpu | cuda: where evaluation renders (FPS is measured there)
    # Identity: dlib face-recognition distance between the photo and renders at these yaws.
    identity_yaw_deg: list[float] = field(default_factory=lambda: [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0])
    identity_size: int = 512  # renders for face recognition are made at this size
    # Held-out metrics against a truth subject (the ground-truth benchmark); null: not a benchmark run.
    truth_dir: str | None = None
    heldout_yaw_step_deg: float = 15.0  # held-out views: yaw -180..180 at this step ...
    heldout_elevations_deg: list[float] = field(default_factory=lambda: [-20.0, 0.0, 20.0])  # ... x these elevations
    heldout_expression_yaws_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0])
    video_frames: int = 48
    video_fps: int = 24
