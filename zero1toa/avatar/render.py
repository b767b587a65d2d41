"""Render the avatar: animate the head, place the bound Gaussians, rasterize.

One function used by training (with gradients), SymGEN refreshes, evaluation and export, so
all of them see exactly the same image for the same (camera, expression, pose).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..head.base import HeadModel, HeadPose
from ..render.camera import Cameras
from ..render.rasterize import rasterize
from .gaussians import BoundGaussians, triangle_frames


@dataclass
class AvatarRender:
    rgb: Tensor  # [F, 3, H, W]
    alpha: Tensor  # [F, 1, H, W]
    metas: list[dict]  # per frame, for densification


def render_avatar(
    gaussians: BoundGaussians,
    head: HeadModel,
    cameras: Cameras,
    expressions: Tensor,
    poses: HeadPose,
    background: float = 1.0,
    backend: str = "auto",
) -> AvatarRender:
    """Render F frames (one camera, expression [F, E] and pose each)."""
    Fn = len(cameras)
    if expressions.shape[0] != Fn or len(poses) != Fn:
        raise ValueError(f"{Fn} cameras but {expressions.shape[0]} expressions and {len(poses)} poses")
    device = gaussians.params["means"].device
    with torch.no_grad():
        verts = head.animate(expressions.float().cpu(), poses.to("cpu")).to(device)
    frames = triangle_frames(verts, head.faces.to(device))
    rgbs, alphas, metas = [], [], []
    bg = torch.full((1, 3), float(background), device=device)
    for i in range(Fn):
        g = gaussians.to_world(frames, i)
        out = rasterize(
            g.means, g.quats, g.scales, g.opacities, g.colors,
            cameras.viewmats[i : i + 1].to(device), cameras.Ks[i : i + 1].to(device),
            cameras.width, cameras.height, sh_degree=g.sh_degree, backgrounds=bg,
            render_mode="RGB", backend=backend,
        )  # fmt: skip
        rgbs.append(out.rgb[0].permute(2, 0, 1))
        alphas.append(out.alpha[0].permute(2, 0, 1))
        metas.append(out.meta)
    return AvatarRender(torch.stack(rgbs).clamp(0, 1), torch.stack(alphas), metas)


@torch.no_grad()
def render_avatar_frames(
    gaussians: BoundGaussians,
    head: HeadModel,
    cameras: Cameras,
    expressions: Tensor,
    poses: HeadPose,
    background: float = 1.0,
    chunk: int = 8,
) -> tuple[Tensor, Tensor]:
    """No-grad rendering of many frames -> (rgb [F, 3, H, W], alpha [F, 1, H, W])."""
    rgbs, alphas = [], []
    for s in range(0, len(cameras), chunk):
        sl = slice(s, s + chunk)
        out = render_avatar(gaussians, head, cameras[sl], expressions[sl], poses[sl], background)
        rgbs.append(out.rgb)
        alphas.append(out.alpha)
    return torch.cat(rgbs), torch.cat(alphas)
