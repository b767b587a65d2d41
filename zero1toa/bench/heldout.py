"""Held-out metrics: an avatar against the truth subject, where the photo never looked.

For a run whose photo was rendered from a truth subject, the avatar is compared with the truth on
what no training frame showed exactly:

(a) **views**: yaw -180..180 every ``yaw_step_deg`` x elevations (default -20/0/+20) at the
    photo's expression; PSNR and SSIM inside the union of the two silhouettes (so a missing or
    extra piece of head costs, the shared background does not), split into pixels the photo saw
    (``psnr_heldout_seen``) and the rest (``psnr_heldout_unseen``: sides, back, under the chin),
    and restricted to ``|yaw| <= 90`` (``psnr_heldout_front``: the range the spatial schedule
    trains on, at angles and elevations it did not use);
(b) **expressions**: combinations and magnitudes beyond the temporal stage's range (which mixes at
    most two presets up to magnitude ``magnitude_end`` = 1.2), at three views;
(c) **sharpness ratio**: high-frequency energy (squared Laplacian of the luminance) of the avatar's
    renders over the truth's, inside the union masks of the held-out views: 1 is as detailed as the
    truth, below 1 blurrier (over-smoothing, the SDS failure the paper describes), above 1 noisier.

PSNRs are pooled: the mean squared error over all selected pixels of all views, then one PSNR,
so a view with few pixels does not dominate. The avatar is placed into the truth's frame by the
landmark similarity of :func:`~.truth.align_heads` (a standard align-then-compare protocol; the
residual is reported as ``heldout_alignment_rms_mm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar_frames
from ..evaluate import metrics as M
from ..head.base import HeadModel, HeadPose
from .truth import TruthSubject, align_heads, pipeline_cameras

#: Held-out expressions: (label, [(preset, magnitude), ...]); every one has three presets or a
#: magnitude above the temporal stage's 1.2, so no training clip used it.
HELDOUT_EXPRESSIONS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("jaw_open+blink 1.35", (("jaw_open", 1.35), ("blink", 1.35))),
    ("smile+surprise+blink 0.8", (("smile", 0.8), ("surprise", 0.8), ("blink", 0.8))),
    ("pucker+frown 1.4", (("pucker", 1.4), ("frown", 1.4))),
    ("stretch+jaw_open+frown 0.9", (("stretch", 0.9), ("jaw_open", 0.9), ("frown", 0.9))),
    ("surprise 1.5", (("surprise", 1.5),)),
)

HELDOUT_KEYS = (
    "psnr_heldout_views",
    "psnr_heldout_front",
    "psnr_heldout_seen",
    "psnr_heldout_unseen",
    "ssim_heldout_views",
    "sharpness_ratio",
    "psnr_heldout_expressions",
    "ssim_heldout_expressions",
    "heldout_alignment_rms_mm",
)


@dataclass
class HeldoutSpec:
    resolution: int = 256
    yaw_step_deg: float = 15.0
    elevations_deg: list[float] = field(default_factory=lambda: [-20.0, 0.0, 20.0])
    expression_yaws_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0])
    background: float = 1.0

    def view_grid(self) -> tuple[np.ndarray, np.ndarray]:
        yaws = np.arange(-180.0, 180.0 + 1e-6, self.yaw_step_deg)
        Y, E = np.meshgrid(yaws, np.asarray(self.elevations_deg, np.float64), indexing="xy")
        return Y.reshape(-1), E.reshape(-1)


def preset_mix(head: HeadModel, parts: tuple[tuple[str, float], ...]) -> tuple[Tensor, Tensor]:
    e = torch.zeros(head.expression_dim)
    j = torch.zeros(3)
    for name, mag in parts:
        de, dj = head.expression_preset(name, mag)
        e, j = e + de.float(), j + dj.float()
    return e, j


class AvatarVsTruth:
    """Renders the same cameras and expressions of an avatar and of the truth."""

    def __init__(self, gaussians: BoundGaussians, head: HeadModel, reference_expression: Tensor, reference_jaw: Tensor, truth: TruthSubject, background: float = 1.0) -> None:
        self.gaussians, self.head, self.truth, self.background = gaussians, head, truth, background
        self.ref_e, self.ref_j = reference_expression.float(), reference_jaw.float()
        self.alignment = align_heads(head, self.ref_e, self.ref_j, truth)

    def render(self, yaws, elevations, resolution: int, delta_e: Tensor, delta_j: Tensor) -> dict[str, Tensor]:
        """Avatar and truth at the same views, expression = photo's + delta (each head's own)."""
        cams_t = self.truth.cameras(yaws, elevations, resolution)
        n = len(cams_t)
        cams_p = pipeline_cameras(cams_t, self.alignment)
        pose = HeadPose.neutral(n)
        pose.jaw = (self.ref_j + delta_j)[None].expand(n, -1).clone()
        device = self.gaussians.params["means"].device
        rgb, alpha = render_avatar_frames(self.gaussians, self.head, cams_p.to(device), (self.ref_e + delta_e)[None].expand(n, -1), pose, self.background)
        tr = self.truth.render(cams_t, (self.truth.expression + delta_e)[None].expand(n, -1), (self.truth.jaw + delta_j)[None].expand(n, -1), background=self.background)
        return {"avatar": rgb.cpu(), "avatar_alpha": alpha.cpu(), "truth": tr.rgb, "truth_alpha": tr.alpha, "seen": tr.seen}


def pooled_psnr(a: Tensor, b: Tensor, mask: Tensor) -> float | None:
    """PSNR of the squared error over every selected pixel of every view (None: no pixel)."""
    return M.psnr(a, b, mask.float()) if bool(mask.any()) else None


def masked_ssim(a: Tensor, b: Tensor, mask: Tensor) -> float | None:
    """SSIM averaged over the selected pixels (None: no pixel)."""
    return M.ssim(a, b, mask.float()) if bool(mask.any()) else None


def high_frequency_energy(rgb: Tensor, mask: Tensor) -> float:
    """Sum of the squared Laplacian of the luminance inside ``mask`` (eroded by the kernel)."""
    lum = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    lap = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), k)
    inner = -F.max_pool2d(-mask.float(), 3, stride=1, padding=1)  # erode: silhouette edges excluded
    return float((lap**2 * inner).sum())


def silhouette_union(r: dict[str, Tensor]) -> Tensor:
    """Pixels covered by the truth or the avatar (what the held-out PSNRs compare)."""
    return (r["truth_alpha"] > 0.5) | (r["avatar_alpha"] > 0.5)


def heldout_metrics(scene: AvatarVsTruth, spec: HeldoutSpec) -> tuple[dict, dict, dict, dict[str, Tensor]]:
    """(values, reasons, details, renders of the view grid) for one avatar against the truth."""
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    zero_e, zero_j = torch.zeros(scene.head.expression_dim), torch.zeros(3)
    yaws, elevs = spec.view_grid()
    r = scene.render(yaws, elevs, spec.resolution, zero_e, zero_j)
    union = silhouette_union(r)
    seen = union & (r["seen"] > 0.5)
    unseen = union & ~seen
    values["psnr_heldout_views"] = pooled_psnr(r["avatar"], r["truth"], union)
    # the views the progressive schedule reaches (|yaw| <= 90): held-out angles and elevations,
    # but not the back of the head, which no training clip shows
    front = torch.from_numpy(np.abs(yaws) <= 90.0)[:, None, None, None]
    values["psnr_heldout_front"] = pooled_psnr(r["avatar"], r["truth"], union & front)
    values["psnr_heldout_seen"] = pooled_psnr(r["avatar"], r["truth"], seen)
    values["psnr_heldout_unseen"] = pooled_psnr(r["avatar"], r["truth"], unseen)
    values["ssim_heldout_views"] = masked_ssim(r["avatar"], r["truth"], union)
    hf_t = high_frequency_energy(r["truth"], union)
    values["sharpness_ratio"] = high_frequency_energy(r["avatar"], union) / hf_t if hf_t > 0 else None
    per_view = []
    for i, (y, e) in enumerate(zip(yaws, elevs)):
        u = union[i : i + 1]
        per_view.append({"yaw": float(y), "elevation": float(e), "psnr": _round(pooled_psnr(r["avatar"][i : i + 1], r["truth"][i : i + 1], u)), "seen_fraction": round(float(seen[i].sum()) / max(1.0, float(u.sum())), 4)})

    expr_rows, renders, ssim_parts = [], [], []
    ey = np.asarray(spec.expression_yaws_deg, np.float64)
    for label, parts in HELDOUT_EXPRESSIONS:
        de, dj = preset_mix(scene.head, parts)
        rx = scene.render(ey, np.zeros_like(ey), spec.resolution, de, dj)
        ux = silhouette_union(rx)
        ssim_parts.append(masked_ssim(rx["avatar"], rx["truth"], ux))
        expr_rows.append({"expression": label, "psnr": _round(pooled_psnr(rx["avatar"], rx["truth"], ux)), "ssim": _round(ssim_parts[-1])})
        renders.append((rx["avatar"], rx["truth"], ux))
    avatar_x, truth_x, union_x = (torch.cat(t) for t in zip(*renders))
    values["psnr_heldout_expressions"] = pooled_psnr(avatar_x, truth_x, union_x)
    good = [s for s in ssim_parts if s is not None]
    values["ssim_heldout_expressions"] = float(np.mean(good)) if good else None
    values["heldout_alignment_rms_mm"] = scene.alignment.rms_m * 1000.0
    for k in HELDOUT_KEYS:
        if values.get(k) is None:
            reasons[k] = "no pixel selected (empty silhouettes)"
    details = {
        "truth_subject": scene.truth.digest(),
        "resolution": spec.resolution,
        "views": {"yaws_deg": [float(y) for y in np.unique(yaws)], "elevations_deg": list(spec.elevations_deg), "per_view": per_view},
        "expressions": {"views_yaw_deg": [float(y) for y in ey], "per_expression": expr_rows},
        "alignment": {"scale": scene.alignment.scale, "rms_mm": round(scene.alignment.rms_m * 1000, 4)},
        "pixels": {"union": int(union.sum()), "seen": int(seen.sum()), "unseen": int(unseen.sum())},
        "meaning": "PSNR pooled over the union of avatar and truth silhouettes; seen = pixels the reference photo saw; sharpness = Laplacian energy avatar / truth",
    }
    return values, reasons, details, {"yaws": torch.from_numpy(yaws), "elevations": torch.from_numpy(elevs), **r}


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def comparison_sheet(scene: AvatarVsTruth, yaws: list[float], resolution: int) -> np.ndarray:
    """Two rows (truth, avatar) at the given yaws, photo's expression: uint8 image."""
    from ..render.video import contact_sheet, to_uint8_frames

    zero_e, zero_j = torch.zeros(scene.head.expression_dim), torch.zeros(3)
    r = scene.render(np.asarray(yaws, np.float64), np.zeros(len(yaws)), resolution, zero_e, zero_j)
    return contact_sheet([list(to_uint8_frames(r["truth"])), list(to_uint8_frames(r["avatar"]))], ["truth", "avatar"], [f"yaw {y:+.0f}" for y in yaws])
