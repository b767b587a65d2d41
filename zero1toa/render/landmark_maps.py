"""Landmark maps: the conditioning images of landmark-driven portrait video generators.

A map draws a head model's 468-point face-mesh landmarks (and iris points when present),
projected by a camera, as coloured contours on black: face outline, brows, eyes with pupils,
nose, outer and inner lips, one colour per part ("expression-aware" style of Follow-Your-Emoji /
the MediaPipe-face ControlNet annotator). Landmarks hidden behind the head (the far eye in a
side view) are dropped, using the head mesh's z-buffer, so maps of side views look like what a
face-mesh detector would report.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..head import topology as T
from .camera import Cameras, project_points
from .mesh_raster import rasterize_mesh

#: Part -> RGB colour (0-255). Distinct hues so a generator can tell the parts apart.
PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "face_oval": (230, 230, 230),
    "left_eyebrow": (255, 200, 0),
    "right_eyebrow": (0, 200, 255),
    "left_eye": (0, 255, 60),
    "right_eye": (255, 40, 40),
    "nose": (200, 100, 255),
    "lips_outer": (255, 80, 160),
    "lips_inner": (255, 180, 80),
}
PUPIL_COLOUR = (255, 255, 255)

_OUTER_LIPS = {61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409}


def _part_edges() -> dict[str, list[tuple[int, int]]]:
    topo = T.facemesh_topology()
    parts: dict[str, list[tuple[int, int]]] = {}
    for name in ("face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose"):
        parts[name] = [tuple(e) for e in topo.parts[name]]
    lips = [tuple(e) for e in topo.parts["lips"]]
    parts["lips_outer"] = [e for e in lips if e[0] in _OUTER_LIPS and e[1] in _OUTER_LIPS]
    parts["lips_inner"] = [e for e in lips if not (e[0] in _OUTER_LIPS and e[1] in _OUTER_LIPS)]
    return parts


def landmark_visibility(
    landmarks: Tensor,
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    tolerance: float = 0.004,
) -> Tensor:
    """Which landmarks [C, L, 3] are unoccluded by the mesh (vertices [C, V, 3]) -> [C, L] bool."""
    frags = rasterize_mesh(vertices, faces, cameras)
    uv, depth = project_points(landmarks, cameras)
    C, H, W = frags.depth.shape
    px = uv[..., 0].floor().long()
    py = uv[..., 1].floor().long()
    inside = (px >= 0) & (px < W) & (py >= 0) & (py < H) & (depth > 0)
    zbuf = frags.depth[torch.arange(C)[:, None], py.clamp(0, H - 1), px.clamp(0, W - 1)]
    return inside & (depth <= zbuf + tolerance)


def draw_landmark_maps(
    landmarks: Tensor,
    landmark_ids: Tensor,
    cameras: Cameras,
    visibility: Tensor | None = None,
    thickness: int | None = None,
) -> Tensor:
    """Draw one map per camera.

    landmarks: [C, L, 3] world positions (rows named by ``landmark_ids`` [L] in the 478 order).
    visibility: optional [C, L] bool (see :func:`landmark_visibility`).
    Returns [C, 3, H, W] float in [0, 1].
    """
    import cv2

    C, H, W = len(cameras), cameras.height, cameras.width
    uv, depth = project_points(landmarks, cameras)
    uv = uv.detach().cpu().numpy()
    vis = (depth > 0).cpu().numpy() if visibility is None else (visibility & (depth > 0)).cpu().numpy()
    row_of = {int(i): r for r, i in enumerate(landmark_ids.tolist())}
    th = thickness or max(1, round(min(H, W) / 200))
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = 1 << shift
    parts = _part_edges()
    out = np.zeros((C, H, W, 3), np.uint8)
    for c in range(C):
        img = out[c]
        for part, edges in parts.items():
            colour = PART_COLOURS[part]
            for a, b in edges:
                ra, rb = row_of.get(a), row_of.get(b)
                if ra is None or rb is None or not (vis[c, ra] and vis[c, rb]):
                    continue
                p0 = tuple(int(round(v * scale)) for v in uv[c, ra])
                p1 = tuple(int(round(v * scale)) for v in uv[c, rb])
                cv2.line(img, p0, p1, colour, th, cv2.LINE_AA, shift)
        for centre in (T.IRIS_CENTER_RIGHT, T.IRIS_CENTER_LEFT):
            rc = row_of.get(centre)
            if rc is None or not vis[c, rc]:
                continue
            ring = [row_of[i] for i in range(centre + 1, centre + 5) if i in row_of]
            radius = float(np.mean([np.linalg.norm(uv[c, r] - uv[c, rc]) for r in ring])) if ring else 2.0 * th
            cv2.circle(img, tuple(int(round(v * scale)) for v in uv[c, rc]), max(1, int(round(radius * 0.55 * scale))), PUPIL_COLOUR, -1, cv2.LINE_AA, shift)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def head_landmark_maps(head, vertices: Tensor, cameras: Cameras, occlusion: bool = True) -> Tensor:
    """Landmark maps of animated head vertices [C, V, 3] seen by ``cameras`` -> [C, 3, H, W]."""
    lmk = head.landmarks(vertices)
    vis = landmark_visibility(lmk, vertices, head.faces, cameras) if occlusion else None
    return draw_landmark_maps(lmk, head.landmark_embedding.indices, cameras, vis)
