"""The skull of the built-in rig: a closed back of the head, sized against the photo's mask.

Rings are swept from the face outline around an ellipsoid to a pole at the back of the head.
The ellipsoid starts from anatomical proportions of the face width and is then fitted to the
foreground mask's silhouette above the mouth, and extruded per image-plane angle where hair
reaches beyond it (a one-view visual hull), so hair volume is covered rather than cut off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..render.camera import Cameras, project_points
from . import topology as T
from .rig_mesh import NECK, RigMesh, jaw_blend_weights, joint_weights, normalize, project_np, ring_strip, slerp, smoothstep


@dataclass
class Skull:
    """The ellipsoid the back of the head is swept around."""

    center: np.ndarray  # [3]
    radii: np.ndarray  # [3]


def add_skull(
    mesh: RigMesh,
    face: np.ndarray,
    W: float,
    camera: Cameras,
    face_jaw: np.ndarray,
    mask: np.ndarray | None,
    rings: int,
    fit_to_mask: bool,
) -> tuple[Skull, dict]:
    """Sweep ``rings`` rings from the face outline to the back pole; returns the skull and diagnostics.

    face: [468, 3] canonical face; face_jaw: [468] the face's jaw weights. The first rings
    inherit the outline's jaw share (fading out over the first 30 % of the sweep), so the jaw
    line does not tear from the cheeks when the mouth opens.
    """
    skull, diag = _fit_skull(face, W, camera, mask, fit_to_mask)
    oval = list(T.facemesh_topology().loops["face_oval"])
    oval_pts = face[oval]
    u0 = normalize(oval_pts - skull.center)
    r0 = np.linalg.norm(oval_pts - skull.center, axis=1)
    gain = None
    if mask is not None and fit_to_mask:
        gain, gain_start = _silhouette_gain(skull, camera, mask)
        diag["skull_gain_max"] = float(gain.max())
        diag["skull_gain_min"] = float(gain.min())
    back = np.array([0.0, 0.15, -1.0])
    back = back / np.linalg.norm(back)
    oval_jaw = face_jaw[oval]
    prev = oval
    for ring in range(1, rings + 1):
        tt = ring / (rings + 1)
        d = normalize(slerp(u0, back, tt))
        a = smoothstep(0.0, 0.35, np.array(tt))
        r = (1 - a) * r0 + a * _ellipsoid_radius(d, skull.radii)
        pts = skull.center + d * r[:, None]
        if gain is not None:
            a_gain = smoothstep(0.0, 0.2, np.array(tt))
            pts = (1 - a_gain) * pts + a_gain * _apply_gain(pts, skull, camera, gain, gain_start)
        idx = mesh.add(pts, jaw_blend_weights(oval_jaw * (1.0 - smoothstep(0.0, 0.3, np.array(tt)))))
        mesh.add_faces(ring_strip(prev, idx), "skull")
        prev = idx
    pole = mesh.add(skull.center + back * _ellipsoid_radius(back[None], skull.radii)[:, None], joint_weights(NECK))[0]
    mesh.add_faces([[prev[i], pole, prev[(i + 1) % len(prev)]] for i in range(len(prev))], "skull")
    return skull, diag


def _fit_skull(face: np.ndarray, W: float, camera: Cameras, mask: np.ndarray | None, fit: bool) -> tuple[Skull, dict]:
    """Ellipsoid for the skull + hair: anatomical defaults, then sized against the mask."""
    y_top = face[T.FOREHEAD_TOP, 1]
    base = Skull(
        center=np.array([0.0, 0.45 * y_top, -0.12 * W]),
        radii=np.array([0.55 * W, 0.75 * y_top + 0.15 * W, 0.70 * W]),
    )
    diag = {"skull_fit": "anatomical default"}
    if mask is None or not fit:
        return base, diag
    import cv2

    size = min(mask.shape[0], 128)  # silhouettes are compared at low resolution (speed)
    m = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0.5
    camera = camera.resized(size, size)
    # Compare silhouettes only above the mouth: below it the neck and torso take over.
    uv, _ = project_points(torch.from_numpy(face).float(), camera)
    mouth_row = int(np.clip(uv[0, T.UPPER_LIP_INNER, 1].item(), 0, size - 1))
    region = np.zeros_like(m)
    region[:mouth_row] = True
    face_hull = _silhouette(face, camera, size)
    best, best_iou = base, -1.0
    for sx in (0.9, 1.0, 1.1, 1.2, 1.3):
        for sy in (0.85, 1.0, 1.15, 1.3, 1.45, 1.6):
            for dy in (-0.1 * W, 0.0, 0.1 * W):
                cand = Skull(base.center + np.array([0.0, dy, 0.0]), base.radii * np.array([sx, sy, 0.5 * (sx + sy)]))
                sil = (_silhouette(_skull_points(cand), camera, size) | face_hull) & region
                inter = (sil & m & region).sum()
                union = ((sil | m) & region).sum()
                iou = inter / max(union, 1)
                if iou > best_iou:
                    best, best_iou = cand, iou
    diag = {"skull_fit": "mask silhouette", "skull_iou_above_mouth": float(best_iou)}
    return best, diag


def _silhouette_gain(
    skull: Skull, camera: Cameras, mask: np.ndarray, bins: int = 72, margin: float = 1.0
) -> tuple[np.ndarray, float]:
    """Per image-plane angle, how far the mask reaches beyond the skull ellipsoid's outline.

    ``margin`` makes the skull slightly larger than the mask: the embedded generator carves the
    excess away (silhouette carving), which is exact, whereas a too-small mesh loses hair.

    Returns (gain [bins], angle of bin 0). gain > 1 where hair sticks out of the ellipsoid. The
    skull is then extruded by that gain along every depth: a one-view visual hull for hair.
    """
    size = mask.shape[0]
    m = mask > 0.5
    centre_uv, _ = project_points(torch.from_numpy(skull.center[None]).float(), camera)
    cu, cv = centre_uv[0, 0].tolist()
    pts = _skull_points(skull, 2000)
    uv, _ = project_points(torch.from_numpy(pts).float(), camera)
    rel = uv[0].numpy() - [cu, cv]
    ang = np.arctan2(-rel[:, 1], rel[:, 0])  # image up = +angle
    rad = np.linalg.norm(rel, axis=1)
    gain = np.ones(bins)
    step = 2 * math.pi / bins
    for b in range(bins):
        a = -math.pi + (b + 0.5) * step
        sel = np.abs(np.angle(np.exp(1j * (ang - a)))) < step
        ell = rad[sel].max() if sel.any() else None
        if not ell:
            continue
        du, dv = math.cos(a), -math.sin(a)
        r = 0.0
        # march out while inside the mask (allow 2-pixel gaps)
        gap = 0
        last_inside = 0.0
        while r < 2.5 * ell:
            u, v = int(round(cu + du * r)), int(round(cv + dv * r))
            if not (0 <= u < size and 0 <= v < size):
                break
            if m[v, u]:
                last_inside, gap = r, 0
            else:
                gap += 1
                if gap > 2 and r > 0.5 * ell:
                    break
            r += 1.0
        gain[b] = last_inside / ell
    # Only the upper half is the skull's business (below, the neck and torso take over).
    centres = -math.pi + (np.arange(bins) + 0.5) * step
    gain = np.where(np.sin(centres) > -0.6, np.clip(gain, 0.85, 1.6), 1.0)
    kernel = np.array([1, 2, 3, 2, 1], dtype=np.float64)
    kernel /= kernel.sum()
    padded = np.concatenate([gain[-2:], gain, gain[:2]])
    gain = np.convolve(padded, kernel, mode="valid") * margin
    return gain, -math.pi + 0.5 * step


def _apply_gain(points: np.ndarray, skull: Skull, camera: Cameras, gain: np.ndarray, start: float) -> np.ndarray:
    """Scale points' offsets from the skull centre by the silhouette gain of their image angle."""
    R = camera.viewmats[0, :3, :3].double().numpy()
    rel = points - skull.center
    cam_rel = rel @ R.T  # camera axes: x right, y down
    ang = np.arctan2(-cam_rel[:, 1], cam_rel[:, 0])
    bins = len(gain)
    pos = (ang - start) / (2 * math.pi) * bins
    i0 = np.floor(pos).astype(int) % bins
    frac = pos - np.floor(pos)
    g = (1 - frac) * gain[i0] + frac * gain[(i0 + 1) % bins]
    # scale only the image-plane component (depth keeps the ellipsoid's)
    lateral = cam_rel.copy()
    lateral[:, 2] = 0
    cam_new = cam_rel + lateral * (g[:, None] - 1)
    return skull.center + cam_new @ R


def _ellipsoid_radius(dirs: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(((dirs / radii) ** 2).sum(-1))


def _skull_points(skull: Skull, n: int = 400) -> np.ndarray:
    """Points on the ellipsoid's surface (Fibonacci sphere), for silhouette tests."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5**0.5) * k
    d = np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], -1)
    return skull.center + d * skull.radii


def _silhouette(points_world: np.ndarray, camera: Cameras, size: int) -> np.ndarray:
    import cv2

    hull = cv2.convexHull(project_np(points_world, camera).astype(np.float32))
    img = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(img, np.round(hull).astype(np.int32), 1)
    return img.astype(bool)
