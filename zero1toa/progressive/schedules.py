"""Progressive learning: what each round asks the generator for (Zero-1-to-A, Sec. "simple to complex").

1. **Spatial Consistency Learning**: expression fixed at the portrait's own; each clip is a smooth
   camera sweep from the frontal view towards a side view. The largest yaw a clip may reach grows
   round by round (front first, sides later), so the avatar learns 3D appearance view-consistently
   before it must be consistent far from the photo.
2. **Temporal Consistency Learning**: views fixed per clip (near frontal, inside the range the
   spatial stage reached); expressions move along smooth trajectories whose magnitude grows
   round by round from relaxed to exaggerated (magnitude 1 is a strong expression, beyond is
   exaggerated), covering jaw, mouth corners, lips, eyes and brows. The last rounds may replay
   user-supplied expression sequences (the paper's "real sequences"; none can be downloaded here).

Clips are plain data (angles and expression vectors); :func:`clip_cameras` turns them into
cameras that orbit the head *relative to the reference camera*, so yaw 0 / elevation 0 is the
photo's own view. Everything is seeded: the same (config, round, seed) gives the same clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..head import topology as T
from ..head.base import HeadModel, HeadPose


@dataclass
class SpatialConfig:
    """Spatial Consistency Learning. Paper: ~20 clips, each a sweep from the front to a random
    side view, larger yaw unlocked as training proceeds (exact ranges are not given)."""

    rounds: int = 3  # max yaw 35 -> 62 -> 90 deg
    clips_per_round: int = 6
    frames_per_clip: int = 8
    max_clips: int = 20  # the dataset keeps at most this many spatial clips (oldest dropped)
    yaw_start_deg: float = 35.0  # largest |yaw| reachable in the first round
    yaw_end_deg: float = 90.0  # largest |yaw| reachable in the last round (side views)
    min_yaw_fraction: float = 0.4  # a sweep ends at least this fraction of the round's max yaw
    elevation_deg: tuple[float, float] = (-10.0, 20.0)  # end elevation range of a sweep


@dataclass
class TemporalConfig:
    """Temporal Consistency Learning. Paper: synthetic mild expressions first, real expression
    sequences later; views fixed (near frontal)."""

    rounds: int = 2
    clips_per_round: int = 6
    frames_per_clip: int = 8
    max_clips: int = 20
    view_yaw_deg: float = 30.0  # each clip's fixed view lies within +- this yaw
    view_elevation_deg: tuple[float, float] = (-5.0, 10.0)
    magnitude_start: float = 0.5  # relaxed
    magnitude_end: float = 1.2  # exaggerated (beyond the named shapes' unit strength)
    sequences: list[str] = field(default_factory=list)  # user expression files (CSV/NPZ) for late rounds
    sequence_rounds_from: int = -1  # round index (0-based) from which sequences are used; -1: last round only


@dataclass
class Clip:
    """One pseudo-ground-truth video: per-frame view angles and head parameters."""

    clip_id: str
    stage: str  # "spatial" | "temporal"
    round_index: int
    yaws_deg: np.ndarray  # [T]
    elevations_deg: np.ndarray  # [T]
    expressions: np.ndarray  # [T, E]
    jaws: np.ndarray  # [T, 3] axis-angle
    source: str = "synthetic"

    @property
    def num_frames(self) -> int:
        return len(self.yaws_deg)

    def poses(self) -> HeadPose:
        p = HeadPose.neutral(self.num_frames)
        p.jaw = torch.from_numpy(self.jaws).float()
        return p


def clip_id(stage: str, round_index: int, index: int) -> str:
    """The id of a schedule clip (what datasets and refresh logs name it by)."""
    return f"{stage}-r{round_index}-c{index}"


def _ease(t: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 (zero velocity at both ends): sweeps start and stop gently."""
    return t * t * (3 - 2 * t)


def round_fraction(round_index: int, rounds: int) -> float:
    return 0.0 if rounds <= 1 else round_index / (rounds - 1)


def spatial_max_yaw(cfg: SpatialConfig, round_index: int) -> float:
    f = round_fraction(round_index, cfg.rounds)
    return cfg.yaw_start_deg + f * (cfg.yaw_end_deg - cfg.yaw_start_deg)


def spatial_clips(
    cfg: SpatialConfig, round_index: int, reference_expression: np.ndarray, reference_jaw: np.ndarray, seed: int
) -> list[Clip]:
    """The new sweeps of a spatial round: front -> (random side within this round's yaw range)."""
    rng = np.random.default_rng([seed, 1, round_index])
    ymax = spatial_max_yaw(cfg, round_index)
    T_ = cfg.frames_per_clip
    t = _ease(np.linspace(0.0, 1.0, T_))
    clips = []
    for c in range(cfg.clips_per_round):
        side = 1.0 if c % 2 == 0 else -1.0  # alternate sides so both halves of the head are covered
        yaw_end = side * rng.uniform(cfg.min_yaw_fraction * ymax, ymax)
        elev_end = rng.uniform(*cfg.elevation_deg)
        clips.append(
            Clip(
                clip_id=clip_id("spatial", round_index, c),
                stage="spatial",
                round_index=round_index,
                yaws_deg=yaw_end * t,
                elevations_deg=elev_end * t,
                expressions=np.tile(reference_expression, (T_, 1)).astype(np.float32),
                jaws=np.tile(reference_jaw, (T_, 1)).astype(np.float32),
            )
        )
    return clips


#: Expression targets the temporal stage combines (all heads implement these presets).
TEMPORAL_PRESETS = ("jaw_open", "smile", "frown", "pucker", "blink", "surprise")


def temporal_magnitude(cfg: TemporalConfig, round_index: int) -> float:
    f = round_fraction(round_index, cfg.rounds)
    return cfg.magnitude_start + f * (cfg.magnitude_end - cfg.magnitude_start)


def _random_target(head: HeadModel, magnitude: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random expression of about ``magnitude``: one or two presets mixed (plus a named
    coefficient for heads with named bases, e.g. a single-eye blink or a brow frown)."""
    E = head.expression_dim
    expr = np.zeros(E, dtype=np.float32)
    jaw = np.zeros(3, dtype=np.float32)
    k = rng.integers(1, 3)
    for name in rng.choice(TEMPORAL_PRESETS, size=k, replace=False):
        e, j = head.expression_preset(str(name), float(magnitude * rng.uniform(0.6, 1.0)))
        expr += e.numpy()
        jaw += j.numpy()
    names = head.expression_names
    if names and rng.random() < 0.5:
        i = int(rng.integers(len(names)))
        expr[i] += magnitude * rng.uniform(0.3, 0.8)
    return expr, jaw


def temporal_clips(
    cfg: TemporalConfig,
    round_index: int,
    head: HeadModel,
    reference_expression: np.ndarray,
    reference_jaw: np.ndarray,
    seed: int,
) -> list[Clip]:
    """The new clips of a temporal round: fixed view, expression keyframes blended smoothly."""
    rng = np.random.default_rng([seed, 2, round_index])
    mag = temporal_magnitude(cfg, round_index)
    T_ = cfg.frames_per_clip
    use_sequences = bool(cfg.sequences) and round_index >= (cfg.rounds - 1 if cfg.sequence_rounds_from < 0 else cfg.sequence_rounds_from)
    clips = []
    for c in range(cfg.clips_per_round):
        yaw = rng.uniform(-cfg.view_yaw_deg, cfg.view_yaw_deg)
        elev = rng.uniform(*cfg.view_elevation_deg)
        if use_sequences:
            expr, jaw, source = _sequence_window(cfg.sequences[c % len(cfg.sequences)], head, T_, rng)
        else:
            # keyframes: the portrait's expression -> target A -> target B, eased in between
            a_e, a_j = _random_target(head, mag, rng)
            b_e, b_j = _random_target(head, mag, rng)
            keys_e = np.stack([reference_expression, reference_expression + a_e, reference_expression + b_e])
            keys_j = np.stack([reference_jaw, reference_jaw + a_j, reference_jaw + b_j])
            pos = np.linspace(0, 2, T_)
            i0 = np.minimum(np.floor(pos).astype(int), 1)
            w = _ease(pos - i0)[:, None]
            expr = (1 - w) * keys_e[i0] + w * keys_e[i0 + 1]
            jaw = (1 - w) * keys_j[i0] + w * keys_j[i0 + 1]
            source = "synthetic"
        clips.append(
            Clip(
                clip_id=clip_id("temporal", round_index, c),
                stage="temporal",
                round_index=round_index,
                yaws_deg=np.full(T_, yaw),
                elevations_deg=np.full(T_, elev),
                expressions=expr.astype(np.float32),
                jaws=jaw.astype(np.float32),
                source=source,
            )
        )
    return clips


def _sequence_window(path: str, head: HeadModel, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    from .sequences import load_expression_sequence

    seq = load_expression_sequence(Path(path), head)
    n = len(seq.expressions)
    start = int(rng.integers(0, max(1, n - frames + 1)))
    idx = np.clip(np.arange(start, start + frames), 0, n - 1)
    return seq.expressions[idx], seq.jaws[idx], f"sequence:{Path(path).name}"


def orbit_target(head: HeadModel) -> Tensor:
    """Point the cameras orbit: midway between the face outline's ear points (head centre line)."""
    with torch.no_grad():
        v = head.neutral_vertices()[None]
        lmk = head.landmarks(v)[0]
    ids = head.landmark_embedding.indices.tolist()
    if T.CHEEK_LEFT in ids and T.CHEEK_RIGHT in ids:
        return 0.5 * (lmk[ids.index(T.CHEEK_LEFT)] + lmk[ids.index(T.CHEEK_RIGHT)])
    return lmk.mean(0)


# Camera math lives with the cameras (render/camera.py); re-exported here, where clips are made.
from ..render.camera import clip_cameras, orbit_from_reference  # noqa: E402,F401


def describe_schedule(spatial: SpatialConfig, temporal: TemporalConfig) -> list[dict]:
    """The documented ranges, round by round (printed by ``zero1toa schedule`` and tested)."""
    rows = []
    for r in range(spatial.rounds):
        rows.append({"stage": "spatial", "round": r + 1, "max_yaw_deg": spatial_max_yaw(spatial, r), "expression": "reference"})
    for r in range(temporal.rounds):
        rows.append(
            {
                "stage": "temporal",
                "round": r + 1,
                "view_yaw_deg": temporal.view_yaw_deg,
                "expression_magnitude": temporal_magnitude(temporal, r),
            }
        )
    return rows


def expression_angle_check(clips: list[Clip]) -> dict:
    """Summary used by tests/CLI: observed yaw and expression ranges of some clips."""
    yaws = np.concatenate([c.yaws_deg for c in clips])
    ex = np.concatenate([c.expressions for c in clips])
    return {
        "yaw_min": float(yaws.min()),
        "yaw_max": float(yaws.max()),
        "expression_abs_max": float(np.abs(ex).max()) if ex.size else 0.0,
        "frames": int(sum(c.num_frames for c in clips)),
        "first_frame_yaw_abs_max": float(max(abs(c.yaws_deg[0]) for c in clips)),
    }
