"""Driving sequences: named presets (talk, smile, blink, surprise, turntable) and their frames.

A sequence is per-frame expression [T, E], pose (T frames) and a camera yaw [T] relative to the
reference view (only ``turntable`` moves the camera). Presets are built from the head's named
expression presets, so they work for the built-in rig and (approximately) for FLAME.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..head.base import HeadModel, HeadPose

PRESETS = ("talk", "smile", "blink", "surprise", "turntable", "expressions")


@dataclass
class DriveSequence:
    expressions: torch.Tensor  # [T, E]
    pose: HeadPose  # T frames
    yaws_deg: np.ndarray  # [T] camera yaw relative to the reference view
    name: str

    def __len__(self) -> int:
        return self.expressions.shape[0]


def _preset(head: HeadModel, name: str, magnitude: float) -> tuple[torch.Tensor, torch.Tensor]:
    return head.expression_preset(name, magnitude)


def preset_sequence(name: str, head: HeadModel, frames: int = 48, reference_expression: torch.Tensor | None = None) -> DriveSequence:
    """A named driving sequence of ``frames`` frames."""
    if name not in PRESETS:
        raise KeyError(f"unknown drive preset {name!r}; presets: {', '.join(PRESETS)}")
    T = max(2, int(frames))
    t = np.linspace(0.0, 1.0, T)
    E = head.expression_dim
    base = torch.zeros(E) if reference_expression is None else reference_expression.float()
    expr = base[None].repeat(T, 1)
    jaw = torch.zeros(T, 3)
    yaws = np.zeros(T)

    def add(preset: str, weights: np.ndarray) -> None:
        e, j = _preset(head, preset, 1.0)
        w = torch.from_numpy(weights).float()[:, None]
        expr.add_(w * e[None])
        jaw.add_(w * j[None])

    if name == "talk":
        # syllable-rate jaw motion with a slow smile drift: speech-like, smooth
        add("jaw_open", 0.35 * (1 - np.cos(2 * math.pi * 3.0 * t)) / 2 + 0.05)
        add("smile", 0.25 * np.sin(math.pi * t) ** 2)
        add("pucker", 0.3 * np.clip(np.sin(2 * math.pi * 1.5 * t + 1.0), 0, None))
    elif name == "smile":
        add("smile", np.sin(math.pi * t) ** 2)
    elif name == "blink":
        # two quick blinks
        w = np.exp(-(((t - 0.3) / 0.05) ** 2)) + np.exp(-(((t - 0.7) / 0.05) ** 2))
        add("blink", np.clip(w, 0, 1))
    elif name == "surprise":
        add("surprise", np.sin(math.pi * t) ** 2)
    elif name == "expressions":
        # a tour of every preset, one after another
        names = ("smile", "jaw_open", "frown", "pucker", "blink", "surprise")
        seg = len(names)
        for k, n in enumerate(names):
            local = np.clip(t * seg - k, 0, 1)
            add(n, np.where((t * seg >= k) & (t * seg <= k + 1), np.sin(math.pi * local) ** 2, 0.0))
    elif name == "turntable":
        yaws = 360.0 * t[:-1] if T > 2 else np.array([0.0, 180.0])
        yaws = np.concatenate([yaws, [360.0]])[:T]
    pose = HeadPose.neutral(T)
    pose.jaw = jaw
    return DriveSequence(expr, pose, yaws, name)
