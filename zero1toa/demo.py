"""A pseudo ground-truth video from the portrait with any generator (what ``zero1toa generate`` shows).

The clip turns the camera from the photo's view to the side while the face talks, so one video
shows both what Spatial and Temporal Consistency Learning ask of a generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .animate.drive import preset_sequence
from .progressive.schedules import Clip, clip_cameras
from .render.landmark_maps import head_landmark_maps
from .render.video import contact_sheet, to_uint8_frames, write_png, write_video
from .generate.base import GenerationRequest, VideoGenerator


@dataclass
class DemoOutputs:
    video: Path
    landmarks_video: Path
    contact_sheet: Path
    seconds_per_frame: float


def demo_clip(head, reference, frames: int, max_yaw_deg: float = 60.0) -> Clip:
    seq = preset_sequence("talk", head, frames, reference_expression=reference.expression)
    t = np.linspace(0.0, 1.0, frames)
    yaws = max_yaw_deg * (t * t * (3 - 2 * t))
    return Clip("demo", "demo", 0, yaws, np.zeros(frames), seq.expressions.numpy(), seq.pose.jaw.numpy())


def generate_demo(generator: VideoGenerator, head, reference, out_dir: Path, frames: int = 24, seed: int = 0, fps: int = 12) -> DemoOutputs:
    import time

    out_dir = Path(out_dir)
    R = generator.info.resolution
    clip = demo_clip(head, reference, frames)
    cams = clip_cameras(clip, reference.camera, reference.target, R)
    expr = torch.from_numpy(clip.expressions).float()
    poses = clip.poses()
    with torch.no_grad():
        verts = head.animate(expr, poses)
        maps = head_landmark_maps(head, verts, cams, style=generator.info.landmark_style)
    t0 = time.perf_counter()
    result = generator.generate(
        GenerationRequest(reference=reference.image, landmark_maps=maps, init_frames=None, strength=1.0, seed=seed, cameras=cams, expressions=expr, poses=poses)
    )
    spf = (time.perf_counter() - t0) / frames
    name = generator.info.name
    video = write_video(out_dir / f"{name}.mp4", result.frames, fps)
    lmv = write_video(out_dir / f"{name}_landmarks.mp4", maps, fps)
    # the exact condition images the model was fed, one PNG per frame
    for i, m in enumerate(to_uint8_frames(maps)):
        write_png(out_dir / "conditions" / f"{i:03d}.png", m)
    step = max(1, frames // 8)
    picks = list(range(0, frames, step))[:8]
    gen_u8, map_u8 = to_uint8_frames(result.frames), to_uint8_frames(maps)
    sheet = contact_sheet([[map_u8[i] for i in picks], [gen_u8[i] for i in picks]], ["landmarks", name], [f"f{i}" for i in picks])
    sheet_path = write_png(out_dir / f"{name}_contact_sheet.png", sheet)
    return DemoOutputs(video, lmv, sheet_path, spf)
