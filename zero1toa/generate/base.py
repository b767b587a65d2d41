"""The interface of pseudo ground-truth video generators.

SymGEN asks a generator for frames: given the reference portrait, one landmark map per target
frame, and (when refreshing) the avatar's current renders of those frames, return a video of
pseudo ground truth. Diffusion backends look only at images; the embedded weight-free backend
also uses the scene description (cameras, expressions, poses) to render the textured head, so
a request carries both and each backend takes what it needs.

Long requests are cut into overlapping windows of the backend's ``frames_per_call`` and the
overlaps are cross-faded, so a 60-frame request works with a 16-frame model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..head.base import HeadPose
from ..render.camera import Cameras


@dataclass
class GeneratorInfo:
    name: str
    resolution: int  # square frames, pixels
    frames_per_call: int  # window length the backend works on
    overlap: int  # frames shared by consecutive windows
    deterministic: bool  # same request + seed -> same frames
    weights: str = "none"  # what weights it uses (for the run's licence/lineage record)
    # how its landmark conditions are drawn (render/landmark_maps.py): "project", or
    # "mediapipe_face" for models trained on the MediaPipe-face annotator's maps
    landmark_style: str = "project"
    # True when the frames are the requested head geometry rendered (the embedded generator): their
    # landmarks are right by construction, so SymGEN's landmark re-extraction skips them
    geometry_exact: bool = False


@dataclass
class GenerationRequest:
    reference: Tensor  # [3, H, W] in [0, 1]
    landmark_maps: Tensor  # [F, 3, H, W] in [0, 1]
    init_frames: Tensor | None = None  # [F, 3, H, W] avatar renders, or None (from noise)
    strength: float = 1.0  # 0 keeps init_frames, 1 ignores them
    seed: int = 0
    # Scene description of the same F frames, for generators that render.
    cameras: Cameras | None = None
    expressions: Tensor | None = None  # [F, E]
    poses: HeadPose | None = None  # F frames
    init_alphas: Tensor | None = None  # [F, 1, H, W] avatar render alpha

    @property
    def num_frames(self) -> int:
        return self.landmark_maps.shape[0]

    def window(self, start: int, stop: int) -> "GenerationRequest":
        def cut(x):
            return None if x is None else x[start:stop]

        return replace(
            self,
            landmark_maps=self.landmark_maps[start:stop],
            init_frames=cut(self.init_frames),
            init_alphas=cut(self.init_alphas),
            cameras=None if self.cameras is None else self.cameras[start:stop],
            expressions=cut(self.expressions),
            poses=None if self.poses is None else self.poses[start:stop],
        )


@dataclass
class GenerationResult:
    frames: Tensor  # [F, 3, H, W] in [0, 1]
    masks: Tensor | None = None  # [F, 1, H, W] foreground, when the backend knows it
    extras: dict = field(default_factory=dict)


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """Start indices of overlapping windows covering ``num_frames`` (last one flush with the end)."""
    if num_frames <= window:
        return [0]
    step = max(1, window - overlap)
    starts = list(range(0, num_frames - window + 1, step))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


class VideoGenerator(ABC):
    """Base class: windowing and validation around a backend's ``_generate_window``."""

    info: GeneratorInfo

    @abstractmethod
    def _generate_window(self, request: GenerationRequest) -> GenerationResult:
        """Generate at most ``info.frames_per_call`` frames."""

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self._validate(request)
        F = request.num_frames
        window, overlap = self.info.frames_per_call, self.info.overlap
        starts = window_starts(F, window, overlap)
        if len(starts) == 1:
            return self._generate_window(request.window(0, F) if F > window else request)
        frames = torch.zeros_like(request.landmark_maps, dtype=torch.float32)
        weight = torch.zeros(F, 1, 1, 1)
        masks, have_masks = None, True
        for k, start in enumerate(starts):
            stop = min(start + window, F)
            sub = request.window(start, stop)
            sub.seed = request.seed + k
            out = self._generate_window(sub)
            n = stop - start
            # Cross-fade: a ramp over the overlapped frames at both ends of the window.
            w = torch.ones(n)
            if k > 0:
                ramp = min(overlap, n)
                w[:ramp] = torch.linspace(1, ramp, ramp) / (ramp + 1)
            if k < len(starts) - 1:
                ramp = min(overlap, n)
                w[n - ramp :] = torch.minimum(w[n - ramp :], torch.linspace(ramp, 1, ramp) / (ramp + 1))
            w = w[:, None, None, None]
            frames[start:stop] += out.frames.float() * w
            if out.masks is None:
                have_masks = False
            elif have_masks:
                if masks is None:
                    masks = torch.zeros(F, 1, *frames.shape[-2:])
                masks[start:stop] += out.masks.float() * w
            weight[start:stop] += w
        frames = frames / weight
        masks = masks / weight if (have_masks and masks is not None) else None
        return GenerationResult(frames.clamp(0, 1), masks)

    def _validate(self, request: GenerationRequest) -> None:
        F = request.num_frames
        if request.reference.dim() != 3 or request.reference.shape[0] != 3:
            raise ValueError(f"reference must be [3, H, W], got {tuple(request.reference.shape)}")
        if request.landmark_maps.dim() != 4 or request.landmark_maps.shape[1] != 3:
            raise ValueError(f"landmark_maps must be [F, 3, H, W], got {tuple(request.landmark_maps.shape)}")
        if request.init_frames is not None and request.init_frames.shape != request.landmark_maps.shape:
            raise ValueError(
                f"init_frames {tuple(request.init_frames.shape)} must match landmark_maps {tuple(request.landmark_maps.shape)}"
            )
        if not 0.0 <= request.strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {request.strength}")
        for name in ("expressions",):
            x = getattr(request, name)
            if x is not None and x.shape[0] != F:
                raise ValueError(f"{name} holds {x.shape[0]} frames, landmark_maps {F}")
        if request.cameras is not None and len(request.cameras) != F:
            raise ValueError(f"cameras hold {len(request.cameras)} frames, landmark_maps {F}")
