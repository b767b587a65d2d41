"""Builders shared by the animate, export, tracker and SDS tests.

- :func:`build_animate_smoke`: a smoke checkpoint (preprocess -> fit_head -> one 5-iteration
  spatial round at 64 px, 1500 Gaussians) of the sample portrait, cached per test session (keyed
  on pytest's base temp folder), so several test modules share one build.
- :func:`synthetic_driving_video`: a driving video with *known* expression and head pose: the
  sample portrait's own rig, textured from the photo by the reprojection generator, rendered
  for given per-frame jaw_open values and head yaws, written as H.264 MP4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def smoke_config(root: Path, name: str = "animate_smoke") -> dict:
    return {
        "run": {"name": name, "root": str(root), "seed": 0, "progress": False},
        "preprocess": {"resolution": 256},
        "generator": {"resolution": 64, "supersample": 1},
        "avatar": {"init": {"num_gaussians": 1500}},
        "stages": {
            "spatial": {"rounds": 1, "clips_per_round": 1, "frames_per_clip": 3},
            "temporal": {"rounds": 0},
            "spatial_iterations": 5,
        },
        "train": {"checkpoint_every": 0, "log_every": 5},
    }


@functools.lru_cache(maxsize=2)
def build_animate_smoke(root: Path, name: str = "animate_smoke") -> Path:
    """The smoke run folder (``<root>/<name>``) with ``spatial/round_1/avatar``."""
    from evaluate_fixtures import build_run

    return build_run(Path(root), name, smoke_config(Path(root), name))


def synthetic_driving_video(
    run_dir: Path,
    out: Path,
    jaw_open: np.ndarray,  # [T]
    yaw_deg: np.ndarray,  # [T] head rotation about its up axis (positive: turns to its left)
    resolution: int = 256,
    fps: float = 12.0,
) -> Path:
    """Render the run's head rig, textured from its photo, with known jaw_open and yaw -> MP4."""
    import torch

    from zero1toa.animate.animate import VideoSink
    from zero1toa.generate.base import GenerationRequest
    from zero1toa.generate.reprojection import ReprojectionConfig, ReprojectionGenerator
    from zero1toa.head.base import HeadPose
    from zero1toa.runfolder import load_reference
    from zero1toa.render.camera import Cameras

    head, ref = load_reference(Path(run_dir))
    T = len(jaw_open)
    gen = ReprojectionGenerator(
        head, ref.image, ref.camera, ref.mask, face_labels=getattr(head, "face_labels", None),
        config=ReprojectionConfig(resolution=resolution, supersample=2),
    )  # fmt: skip
    expr = torch.zeros(T, head.expression_dim)
    expr[:, head.expression_names.index("jaw_open")] = torch.as_tensor(np.asarray(jaw_open), dtype=torch.float32)
    pose = HeadPose.neutral(T)
    pose.rotation[:, 1] = torch.deg2rad(torch.as_tensor(np.asarray(yaw_deg), dtype=torch.float32))
    cam = ref.camera.resized(resolution, resolution)
    cams = Cameras(cam.viewmats.expand(T, 4, 4).clone(), cam.Ks.expand(T, 3, 3).clone(), resolution, resolution)
    request = GenerationRequest(
        reference=ref.image, landmark_maps=torch.zeros(T, 3, resolution, resolution), cameras=cams, expressions=expr, poses=pose
    )
    frames = gen.generate(request).frames
    arr = (frames.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    sink = VideoSink(Path(out), fps)
    sink.append(arr)
    return sink.close()


def decode(path: Path) -> np.ndarray:
    """All frames of a video/GIF -> [F, H, W, 3] uint8."""
    import imageio.v2 as imageio

    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(Path(path), memtest=False)])
