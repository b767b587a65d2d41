"""The body of the built-in rig: neck, upper torso, and backdrop patches for what the rig misses.

The crop shows the neck and shoulders, so the rig continues below the chin: elliptic rings
stacked down a vertical body axis, their widths read off the foreground mask row by row. The
neck rings blend from the neck joint to the root, so turning the head twists the neck and
leaves the shoulders in place. Whatever of the mask the finished mesh still misses (a collar,
hair beyond the skull) gets a backdrop patch just behind its neighbouring surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..render.camera import Cameras
from . import topology as T
from .rig_mesh import NECK, NUM_JOINTS, PART_NAMES, ROOT, RigMesh, ring_strip


@dataclass
class BodyAxis:
    """The neck/torso's axis: through the point under the chin, along the photo's vertical.

    The body hangs along the camera's image-up direction rather than the head's own up: a
    slightly pitched or rolled head sits on an upright body, and the mask's rows then measure
    the body's width where it really is.
    """

    origin: np.ndarray  # [3] on the axis, at chin height
    up: np.ndarray  # [3]
    right: np.ndarray  # [3]
    forward: np.ndarray  # [3]

    def point(self, h: float, x: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        """The point(s) at height h along the axis, x to the right and z forward of it."""
        return self.origin + h * self.up + np.multiply.outer(x, self.right) + np.multiply.outer(z, self.forward)


@dataclass
class Body:
    """What the neck and torso builder leaves for the joints and the diagnostics."""

    axis: BodyAxis
    neck_half_width: float  # metres, at the first ring below the chin
    shoulder_half_width: float  # metres, at the lowest ring


def add_neck_and_torso(
    mesh: RigMesh, face: np.ndarray, W: float, camera: Cameras, mask: np.ndarray | None, segments: int
) -> Body:
    """Stack the rings (``segments`` vertices each) down the body axis, widths fitted to the mask."""
    axis = _body_axis(face, W, camera)
    levels = _body_levels(face, W, camera, mask, camera.width, axis)
    ang = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    prev = prev_w = None
    for h, x_left, x_right, hz, wn in levels:
        xc, hx = 0.5 * (x_left + x_right), 0.5 * (x_right - x_left)
        weights = np.zeros(NUM_JOINTS)
        weights[NECK], weights[ROOT] = wn, 1 - wn
        idx = mesh.add(axis.point(h, xc + hx * np.sin(ang), hz * np.cos(ang)), weights)
        if prev is not None:
            mesh.add_faces(ring_strip(prev, idx), "neck" if wn > 0 or prev_w > 0 else "torso")
        prev, prev_w = idx, wn
    return Body(axis, 0.5 * (levels[1][2] - levels[1][1]), 0.5 * (levels[-1][2] - levels[-1][1]))


def add_backdrop(
    V: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray,
    camera: Cameras,
    mask: np.ndarray,
    cell_px: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Cover the mask pixels the rig misses (a collar behind the neck, hair beyond the skull).

    A grid of small quads over the uncovered mask pixels, each vertex placed 1 cm behind the
    nearest covered surface and skinned like it, so the patch hides behind what it extends and
    moves with it. Seen from the side such patches are edge-on; the generator's silhouette
    carving trims what overshoots the mask.
    """
    import cv2

    from ..render.mesh_raster import rasterize_mesh

    S = mask.shape[0]
    frags = rasterize_mesh(torch.from_numpy(V).float(), torch.from_numpy(faces), camera)
    covered = frags.mask[0].numpy()
    missing = (mask > 0.5) & ~covered
    if missing.sum() < 4:
        return V, faces, weights, labels, 0
    g = cell_px or max(2, S // 96)
    n = -(-S // g)  # cells per side; cell (y, x) is the quad over pixels [y g, (y + 1) g) x [x g, (x + 1) g)
    ny, nx = n + 1, n + 1

    def any_in_cell(px: np.ndarray) -> np.ndarray:
        pad = n * g - S
        return np.pad(px, ((0, pad), (0, pad))).reshape(n, g, n, g).any(axis=(1, 3))

    # Active cells: any missing pixel inside (dilated by one cell so patches tuck under the
    # mesh). Pooled exactly over each quad's pixels: an area-averaged 8-bit resize used to round
    # cells with a thin sliver of missing pixels to zero, leaving gaps along the silhouette.
    cells = any_in_cell(missing)
    cells = cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    cells &= any_in_cell(mask > 0.5)
    if not cells.any():
        return V, faces, weights, labels, 0
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    node_used = np.zeros((ny, nx), dtype=bool)
    cy, cx = np.nonzero(cells)
    for dy in (0, 1):
        for dx in (0, 1):
            node_used[cy + dy, cx + dx] = True
    ys, xs = np.nonzero(node_used)
    px = np.clip(xs * g, 0, S - 1)
    py = np.clip(ys * g, 0, S - 1)
    near_y, near_x = iy[py, px], ix[py, px]
    depth = frags.depth[0].numpy()[near_y, near_x] + 0.01
    tri = frags.face_ids[0].numpy()[near_y, near_x]
    K = camera.Ks[0].double().numpy()
    R = camera.viewmats[0, :3, :3].double().numpy()
    t = camera.viewmats[0, :3, 3].double().numpy()
    cam_pts = np.stack([(xs * g - K[0, 2]) * depth / K[0, 0], (ys * g - K[1, 2]) * depth / K[1, 1], depth], -1)
    world = (cam_pts - t) @ R  # R^T (c - t)
    node_index = -np.ones((ny, nx), dtype=np.int64)
    node_index[ys, xs] = len(V) + np.arange(len(ys))
    new_faces = []
    for y, x in zip(cy, cx):
        a, b, c, d = node_index[y, x], node_index[y, x + 1], node_index[y + 1, x], node_index[y + 1, x + 1]
        new_faces += [[a, c, b], [b, c, d]]
    new_weights = weights[faces[tri, 0]]
    V = np.concatenate([V, world])
    faces = np.concatenate([faces, np.array(new_faces, dtype=np.int64)])
    weights = np.concatenate([weights, new_weights])
    labels = np.concatenate([labels, np.full(len(new_faces), PART_NAMES.index("backdrop"))])
    return V, faces, weights, labels, int(missing.sum())


def _body_axis(face: np.ndarray, W: float, camera: Cameras) -> BodyAxis:
    """The axis 0.55 W behind the chin, along the reference camera's image axes (see BodyAxis)."""
    R = camera.viewmats[0, :3, :3].double().numpy()
    origin = np.array([0.0, face[T.CHIN, 1], face[T.CHIN, 2] - 0.55 * W])
    return BodyAxis(origin, -R[1], R[0], -R[2])


def _body_levels(
    face: np.ndarray, W: float, camera: Cameras, mask: np.ndarray | None, size: int, axis: BodyAxis
) -> list[tuple[float, float, float, float, float]]:
    """Neck/torso rings as (height along the axis, x_left, x_right, half-depth, neck weight).

    Below the chin each ring's left/right extent follows the mask's row at that height, so the
    bust covers what the photo shows (collars, shoulders); without a mask, average proportions.
    Heights are relative to the axis origin (chin level), negative downwards.
    """
    K = camera.Ks[0].double().numpy()
    R = camera.viewmats[0, :3, :3].double().numpy()
    t = camera.viewmats[0, :3, 3].double().numpy()

    def to_image(p: np.ndarray) -> tuple[float, float, float]:
        c = R @ p + t
        return K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2], c[2]

    # lowest height still inside the image, plus a margin so the ring's sides leave the frame too
    h_bottom = -0.9 * W
    while to_image(axis.point(h_bottom, 0.0, 0.0))[1] < size and h_bottom > -12 * W:
        h_bottom -= 0.1 * W
    h_bottom -= 0.4 * W
    hs = [0.35 * W, -0.05 * W]
    h = -0.25 * W
    while h > h_bottom:
        hs.append(h)
        h -= 0.15 * W
    hs.append(h_bottom)
    levels = []
    for h in hs:
        depth_t = float(np.clip((-0.3 * W - h) / (0.5 * W), 0.0, 1.0))
        hz = (0.33 + 0.32 * depth_t) * W
        wn = 1.0 if h >= -0.05 * W else float(np.clip((h + 0.6 * W) / (0.55 * W), 0.0, 1.0))
        default_half = 0.37 * W + (0.88 * W) * depth_t
        xl, xr = -default_half, default_half
        if mask is not None and h < -0.2 * W:
            u, v, depth = to_image(axis.point(h, 0.0, 0.0))
            run = _mask_run(mask, v, u) if v < size else None
            if run is not None:
                m_per_px = depth / K[0, 0]
                pad = 0.005 * size  # a hair wider than the mask; the generator carves the excess
                xl = float(np.clip((run[0] - pad - u) * m_per_px, -2.5 * W, -0.28 * W))
                xr = float(np.clip((run[1] + 1 + pad - u) * m_per_px, 0.28 * W, 2.5 * W))
            elif levels:
                xl, xr = levels[-1][1], levels[-1][2]
        levels.append([h, xl, xr, hz, wn])
    arr = np.array(levels)
    raw = arr.copy()
    for k in range(3, len(arr) - 1):  # smooth fitted extents (the neck's first rings stay fixed)
        arr[k, 1:3] = 0.25 * arr[k - 1, 1:3] + 0.5 * raw[k, 1:3] + 0.25 * raw[k + 1, 1:3]
    return [tuple(map(float, row)) for row in arr]


def _mask_run(mask: np.ndarray, row: float, col: float, max_gap: int | None = None) -> tuple[int, int] | None:
    """Column extent of the mask run on ``row`` containing (or nearest to) ``col``.

    Gaps narrower than ``max_gap`` (default 1/20 of the width: a badge, a logo) are bridged.
    """
    r = int(np.clip(round(row), 0, mask.shape[0] - 1))
    line = mask[r] > 0.5
    if not line.any():
        return None
    gap = max(1, mask.shape[1] // 20) if max_gap is None else max_gap
    c = int(np.clip(round(col), 0, mask.shape[1] - 1))
    cols = np.nonzero(line)[0]
    c = int(cols[np.argmin(np.abs(cols - c))])
    k = int(np.searchsorted(cols, c))
    left = right = k
    while left > 0 and cols[left] - cols[left - 1] <= gap:
        left -= 1
    while right < len(cols) - 1 and cols[right + 1] - cols[right] <= gap:
        right += 1
    return int(cols[left]), int(cols[right])
