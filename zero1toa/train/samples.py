"""What the trainer draws its frames from: decoded samples with cameras and head parameters."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SampleTensors:
    """Training samples (frames exactly as stored: 8-bit quantised when they come from a dataset)."""

    frames: Tensor  # [N, 3, H, W]
    masks: Tensor  # [N, 1, H, W]
    viewmats: Tensor  # [N, 4, 4]
    Ks: Tensor  # [N, 3, 3]
    expressions: Tensor  # [N, E]
    jaws: Tensor  # [N, 3]
    resolution: int
    weights: Tensor | None = None  # [N] sampling probabilities (None: uniform)
