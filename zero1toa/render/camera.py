"""Pinhole cameras in the conventions every part of the project shares.

World space is the head's space, in metres: +x towards the subject's left (image right in a
frontal view), +y up, +z out of the face (towards a frontal camera). FLAME uses the same axes.

Cameras follow OpenCV (and gsplat): ``viewmat`` maps world to camera coordinates with camera
+x right, +y down, +z forward; ``K`` is in pixels with the pixel centre convention of 3DGS
(pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, its centre at ``j + 0.5``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Cameras:
    """A batch of C pinhole cameras sharing one image size."""

    viewmats: Tensor  # [C, 4, 4] world -> camera
    Ks: Tensor  # [C, 3, 3] intrinsics, pixels
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.dim() == 2:
            self.viewmats = self.viewmats[None]
        if self.Ks.dim() == 2:
            self.Ks = self.Ks[None]
        if self.viewmats.shape[-2:] != (4, 4) or self.Ks.shape[-2:] != (3, 3):
            raise ValueError(f"bad camera shapes: viewmats {tuple(self.viewmats.shape)}, Ks {tuple(self.Ks.shape)}")
        if self.viewmats.shape[0] != self.Ks.shape[0]:
            raise ValueError("viewmats and Ks must hold the same number of cameras")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(self.viewmats[index], self.Ks[index], self.width, self.height)

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    def centers(self) -> Tensor:
        """Camera centres in world space: [C, 3]."""
        R = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None])[..., 0]

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendering at another resolution (intrinsics scaled)."""
        sx, sy = width / self.width, height / self.height
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= sx
        Ks[:, 1, :] *= sy
        return Cameras(self.viewmats.clone(), Ks, width, height)

    @staticmethod
    def cat(items: list["Cameras"]) -> "Cameras":
        if not items:
            raise ValueError("no cameras to concatenate")
        w, h = items[0].width, items[0].height
        if any((c.width, c.height) != (w, h) for c in items):
            raise ValueError("cameras with different image sizes cannot be batched")
        return Cameras(torch.cat([c.viewmats for c in items]), torch.cat([c.Ks for c in items]), w, h)

    def to_dict(self) -> dict:
        return {
            "viewmats": self.viewmats.detach().cpu().tolist(),
            "Ks": self.Ks.detach().cpu().tolist(),
            "width": self.width,
            "height": self.height,
        }

    @staticmethod
    def from_dict(data: dict) -> "Cameras":
        return Cameras(
            torch.tensor(data["viewmats"], dtype=torch.float32),
            torch.tensor(data["Ks"], dtype=torch.float32),
            int(data["width"]),
            int(data["height"]),
        )


def intrinsics(focal_px: float, width: int, height: int, cx: float | None = None, cy: float | None = None) -> Tensor:
    """A [3, 3] pinhole matrix with square pixels; principal point at the image centre by default."""
    cx = width / 2.0 if cx is None else cx
    cy = height / 2.0 if cy is None else cy
    return torch.tensor([[focal_px, 0.0, cx], [0.0, focal_px, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def focal_from_fov(fov_deg: float, size: int) -> float:
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World->camera [4, 4] for an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upwards in the image (default +y).
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32)
    up = torch.tensor([0.0, 1.0, 0.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:  # looking straight along up: pick any perpendicular
        right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world coords
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def orbit_cameras(
    yaws_deg: Tensor | list[float],
    elevations_deg: Tensor | list[float] | float,
    distance: float,
    target: Tensor | list[float],
    focal_px: float,
    width: int,
    height: int,
) -> Cameras:
    """Cameras on a sphere around ``target``; yaw 0 / elevation 0 is the frontal view.

    Positive yaw moves the camera towards the subject's left (+x), showing that side of the
    face; positive elevation moves it up.
    """
    yaws = torch.as_tensor(yaws_deg, dtype=torch.float32).reshape(-1)
    elev = torch.as_tensor(elevations_deg, dtype=torch.float32).reshape(-1)
    if elev.numel() == 1:
        elev = elev.expand_as(yaws)
    target = torch.as_tensor(target, dtype=torch.float32)
    yr, er = torch.deg2rad(yaws), torch.deg2rad(elev)
    offsets = torch.stack([torch.sin(yr) * torch.cos(er), torch.sin(er), torch.cos(yr) * torch.cos(er)], -1)
    viewmats = torch.stack([look_at(target + distance * o, target) for o in offsets])
    K = intrinsics(focal_px, width, height)
    return Cameras(viewmats, K.expand(len(yaws), 3, 3).clone(), width, height)


def project_points(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Project world points into every camera.

    points: [N, 3] shared by all cameras, or [C, N, 3] one set per camera.
    Returns (uv [C, N, 2] in pixels, depth [C, N] along the camera's +z).
    """
    if points.dim() == 2:
        points = points[None].expand(len(cameras), -1, -1)
    R = cameras.viewmats[:, :3, :3]
    t = cameras.viewmats[:, :3, 3]
    cam = points @ R.transpose(1, 2) + t[:, None, :]  # [C, N, 3]
    depth = cam[..., 2]
    pix = cam @ cameras.Ks.transpose(1, 2)
    uv = pix[..., :2] / depth[..., None].clamp_min(1e-8)
    return uv, depth


def _rot_y(a: Tensor) -> Tensor:
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_x(a: Tensor) -> Tensor:
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def orbit_from_reference(reference: Cameras, yaws_deg: Tensor | np.ndarray, elevations_deg: Tensor | np.ndarray, target: Tensor, resolution: int | None = None) -> Cameras:
    """Cameras orbiting ``target`` relative to the reference camera (yaw about the head's up axis,
    elevation about its left-right axis). Positive yaw shows the subject's left side."""
    yaws = torch.as_tensor(np.array(yaws_deg, dtype=np.float32))
    elev = torch.as_tensor(np.array(elevations_deg, dtype=np.float32))
    Rw = _rot_x(torch.deg2rad(elev)) @ _rot_y(torch.deg2rad(-yaws))  # [T, 3, 3] world rotation
    M = torch.eye(4).repeat(len(yaws), 1, 1)
    M[:, :3, :3] = Rw
    M[:, :3, 3] = target - (Rw @ target[:, None])[..., 0]
    view = reference.viewmats[0][None] @ M
    cams = Cameras(view, reference.Ks[0][None].expand(len(yaws), 3, 3).clone(), reference.width, reference.height)
    return cams if resolution is None else cams.resized(resolution, resolution)


def clip_cameras(clip, reference: Cameras, target: Tensor, resolution: int) -> Cameras:
    """Cameras of a clip (anything with ``yaws_deg`` and ``elevations_deg`` per frame)."""
    return orbit_from_reference(reference, clip.yaws_deg, clip.elevations_deg, target, resolution)
