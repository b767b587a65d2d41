"""The SDS baseline's mechanism for a generator that returns images (no score to distil).

Score distillation draws, at every optimisation step, a fresh noisy version of the current render
at a random noise level, asks the model where it should go, and uses that answer once. With an
image generator (the ground-truth benchmark's simulated one) the same mechanism is: every step,
render one frame of the round's clips, let the generator refine it at a random ``strength`` drawn
from the SDS timestep range, and take one reconstruction step towards that target. Nothing is
cached; the next step draws again. This is the gradient score distillation follows, and it lets
the benchmark compare SDS with SymGEN's cached, refreshed dataset on the same generator.

:class:`FreshTargets` is a data source of the reconstruction trainer (one sample, replaced every
step), so losses, densification, checkpoints and resume are the trainer's own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar_frames
from ..generate.base import GenerationRequest, VideoGenerator
from ..head.base import HeadModel, HeadPose
from ..render.camera import Cameras, clip_cameras
from ..render.landmark_maps import head_landmark_maps
from .samples import SampleTensors
from ..utils.io import digest_obj


class FreshTargets:
    """One fresh target per step from ``generator`` (see the module docstring)."""

    def __init__(
        self,
        head: HeadModel,
        reference_image: Tensor,  # [3, S, S]
        generator: VideoGenerator,
        cameras: Cameras,  # [N] every frame of the round's clips, at the generator's resolution
        expressions: Tensor,  # [N, E]
        jaws: Tensor,  # [N, 3]
        strength_range: tuple[float, float],
        seed: int,
        background: float = 1.0,
    ) -> None:
        if len(cameras) == 0:
            raise ValueError("fresh targets need at least one frame to draw from")
        lo, hi = strength_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"the strength range must satisfy 0 <= low <= high <= 1, got {strength_range}")
        self.head, self.reference, self.generator = head, reference_image, generator
        self.cameras, self.expressions, self.jaws = cameras, expressions.float(), jaws.float()
        self.lo, self.hi, self.seed, self.background = lo, hi, int(seed), background
        self.rng = torch.Generator().manual_seed(self.seed)
        self.tensors: SampleTensors | None = None
        self.draws = 0

    def batch(self, step: int, gaussians: BoundGaussians) -> SampleTensors:
        i = int(torch.randint(0, len(self.cameras), (1,), generator=self.rng))
        strength = self.lo + (self.hi - self.lo) * float(torch.rand(1, generator=self.rng))
        cam = self.cameras[i]
        expr = self.expressions[i : i + 1]
        pose = HeadPose.neutral(1)
        pose.jaw = self.jaws[i : i + 1].clone()
        with torch.no_grad():
            init, alpha = render_avatar_frames(gaussians, self.head, cam, expr, pose, self.background)
            maps = head_landmark_maps(self.head, self.head.animate(expr, pose), cam, style=self.generator.info.landmark_style)
            request = GenerationRequest(
                reference=self.reference, landmark_maps=maps, init_frames=init.cpu(), init_alphas=alpha.cpu(), strength=strength,
                seed=int(digest_obj([self.seed, "fresh", step])[:8], 16), cameras=cam, expressions=expr, poses=pose,
            )  # fmt: skip
            out = self.generator.generate(request)
        masks = out.masks if out.masks is not None else alpha.cpu()
        self.tensors = SampleTensors(out.frames, masks, cam.viewmats.clone(), cam.Ks.clone(), expr.clone(), self.jaws[i : i + 1].clone(), cam.width)
        self.draws += 1
        return self.tensors

    def state(self) -> dict:
        return {"rng": self.rng.get_state(), "draws": self.draws}

    def load_state(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
        self.draws = int(state["draws"])


def clip_frames(clips: list, reference, resolution: int) -> tuple[Cameras, Tensor, Tensor]:
    """Every frame of ``clips`` as (cameras [N], expressions [N, E], jaws [N, 3])."""
    cams = Cameras.cat([clip_cameras(c, reference.camera, reference.target, resolution) for c in clips])
    expr = torch.cat([torch.from_numpy(c.expressions).float() for c in clips])
    jaws = torch.cat([torch.from_numpy(c.jaws).float() for c in clips])
    return cams, expr, jaws
