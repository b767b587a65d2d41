"""The built-in head rig: the portrait's own 468-point face mesh, completed into a closed head.

Why it exists: FLAME may not be redistributed, so a project that must run out of the box needs a
head model made from nothing but the portrait. The face-mesh model already gives a dense,
consistently-ordered surface of the face with relative depth; this module turns it into an
animatable head:

- the face: the 468 landmarks unprojected through the reference camera (so the rig reprojects
  onto the detected landmarks by construction), triangulated with MediaPipe's topology;
- a skull: rings swept from the face outline around an ellipsoid to the back of the head; the
  ellipsoid is sized against the portrait's foreground mask so hair volume is covered;
- eyeballs filling the eye openings (rotating about their centres), a mouth cavity behind the
  lips (opening with the jaw), a neck and an upper torso (the crop shows the shoulders);
- linear blend skinning over FLAME's joints (root, neck, jaw, eyes) with weights derived from
  the landmark layout, and a small named expression basis (jaw open, smile, frown, pucker,
  stretch, blinks, brow raise/frown) built as smooth displacement fields around the relevant
  landmarks, scaled by the face width so the same magnitudes fit every face.

All geometry lives in the canonical head frame of :mod:`zero1toa.render.camera` (metres, +x
subject's left, +y up, +z forward); the face's own rotation in the photo is moved into the
reference camera, so the rig is always upright and frontal at neutral pose.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..render.camera import Cameras, focal_from_fov, intrinsics, project_points
from ..utils.io import atomic_dir, read_json, write_json_atomic
from . import topology as T
from .base import JOINT_NAMES, JOINT_PARENTS, MEDIAPIPE_468, HeadModel, HeadPose, LandmarkEmbedding
from .lbs import axis_angle_to_matrix, linear_blend_skinning, rigid_chain

RIG_KIND = "facemesh-rig"
RIG_VERSION = "1"

EXPRESSION_NAMES: tuple[str, ...] = (
    "jaw_open",
    "smile",
    "frown",
    "lip_pucker",
    "lip_stretch",
    "blink_left",
    "blink_right",
    "brow_raise",
    "brow_frown",
)
#: Jaw rotation (radians) at jaw_open = 1; FLAME's jaw pose reaches about this for a wide open mouth.
JAW_OPEN_RAD = 0.35

#: Semantic label of every triangle (used for initial colours and per-part regularisers).
PART_NAMES: tuple[str, ...] = ("face", "skull", "neck", "torso", "eyeball", "mouth", "backdrop")

_ROOT, _NECK, _JAW, _EYE_L, _EYE_R = range(5)


@dataclass
class RigConfig:
    """How the face mesh is completed into a head. Lengths in metres unless noted."""

    face_width_m: float = 0.15  # distance between landmarks 234 and 454 (face outline at the ears)
    fov_deg: float = 20.0  # reference camera field of view: the face mesh is near weak-perspective
    skull_rings: int = 10  # rings swept from the face outline to the back of the head
    neck_segments: int = 32  # vertices per neck/torso ring
    eyeball_radius_m: float = 0.012
    iris_radius_m: float = 0.0055
    mouth_depth_m: float = 0.028
    fit_skull_to_mask: bool = True


@dataclass
class RigBuild:
    """What :func:`build_facemesh_rig` returns: the rig, the camera of the photo, and diagnostics."""

    rig: "FaceMeshRig"
    camera: Cameras  # the reference view (1 camera) at the crop's resolution
    diagnostics: dict = field(default_factory=dict)


class FaceMeshRig(HeadModel):
    """An animatable head built from one face mesh (see module docstring)."""

    name = RIG_KIND
    version = RIG_VERSION
    licence = "built-in rig: MediaPipe face-mesh topology (Apache-2.0), no third-party assets"

    def __init__(
        self,
        template: Tensor,  # [V, 3]
        faces: Tensor,  # [F, 3]
        skin_weights: Tensor,  # [V, 5]
        joints: Tensor,  # [5, 3]
        blendshapes: Tensor,  # [E, V, 3] (E = len(EXPRESSION_NAMES); jaw_open's is a lip correction)
        face_labels: Tensor,  # [F] index into PART_NAMES
        landmark_embedding: LandmarkEmbedding,
        meta: dict | None = None,
    ) -> None:
        self.template = template.float()
        self.faces = faces.long()
        self.skin_weights = skin_weights.float()
        self.joints = joints.float()
        self.blendshapes = blendshapes.float()
        self.face_labels = face_labels.long()
        self.landmark_embedding = landmark_embedding
        self.meta = dict(meta or {})

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def expression_dim(self) -> int:
        return len(EXPRESSION_NAMES)

    @property
    def expression_names(self) -> list[str]:
        return list(EXPRESSION_NAMES)

    def animate(self, expression: Tensor, pose: HeadPose, shape: Tensor | None = None) -> Tensor:
        if shape is not None and shape.numel() > 0:
            raise ValueError("the built-in rig has no shape space (its identity is the portrait's face mesh)")
        expression = expression.to(self.template)
        B = expression.shape[0]
        if len(pose) != B:
            raise ValueError(f"expression has {B} frames, pose {len(pose)}")
        verts = self.template[None] + torch.einsum("be,evk->bvk", expression, self.blendshapes)
        rotations = pose.joint_rotations().to(self.template).clone()  # [B, 5, 3]
        rotations[:, _JAW, 0] = rotations[:, _JAW, 0] + expression[:, 0] * JAW_OPEN_RAD
        rot_mats = axis_angle_to_matrix(rotations)
        _, transforms = rigid_chain(rot_mats, self.joints[None].expand(B, -1, -1), JOINT_PARENTS)
        verts = linear_blend_skinning(verts, transforms, self.skin_weights)
        return verts + pose.translation.to(verts)[:, None, :]

    def expression_preset(self, name: str, magnitude: float = 1.0) -> tuple[Tensor, Tensor]:
        e = torch.zeros(self.expression_dim)
        idx = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
        combos = {
            "neutral": {},
            "jaw_open": {"jaw_open": 1.0},
            "smile": {"smile": 1.0, "jaw_open": 0.1},
            "frown": {"frown": 1.0, "brow_frown": 0.6},
            "pucker": {"lip_pucker": 1.0},
            "stretch": {"lip_stretch": 1.0},
            "blink": {"blink_left": 1.0, "blink_right": 1.0},
            "surprise": {"brow_raise": 1.0, "jaw_open": 0.7},
        }
        if name in idx:
            combos[name] = {name: 1.0}
        if name not in combos:
            raise KeyError(f"unknown expression preset {name!r}; known: {sorted(combos)}")
        for key, value in combos[name].items():
            e[idx[key]] = value * magnitude
        return e, torch.zeros(3)

    def part_of_faces(self, part: str) -> Tensor:
        return self.face_labels == PART_NAMES.index(part)

    # ---------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        emb = self.landmark_embedding
        tensors = {
            "template": self.template.contiguous(),
            "faces": self.faces.contiguous(),
            "skin_weights": self.skin_weights.contiguous(),
            "joints": self.joints.contiguous(),
            "blendshapes": self.blendshapes.contiguous(),
            "face_labels": self.face_labels.contiguous(),
            "lmk_face_ids": emb.face_ids.long().contiguous(),
            "lmk_barycentric": emb.barycentric.float().contiguous(),
            "lmk_indices": emb.indices.long().contiguous(),
        }
        with atomic_dir(Path(path)) as tmp:
            save_file(tensors, str(tmp / "head.safetensors"))
            write_json_atomic(
                tmp / "head.json",
                {
                    "kind": RIG_KIND,
                    "version": RIG_VERSION,
                    "licence": self.licence,
                    "expression_names": list(EXPRESSION_NAMES),
                    "joint_names": list(JOINT_NAMES),
                    "part_names": list(PART_NAMES),
                    "meta": self.meta,
                },
            )

    @classmethod
    def load(cls, path: Path) -> "FaceMeshRig":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        info = read_json(path / "head.json")
        if info.get("kind") != RIG_KIND:
            raise ValueError(f"{path} holds a {info.get('kind')!r} head, not the built-in rig")
        if info.get("version") != RIG_VERSION:
            raise ValueError(f"{path}: rig version {info.get('version')} is not supported (this code reads {RIG_VERSION})")
        try:
            t = load_file(str(path / "head.safetensors"))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path / 'head.safetensors'} is not a readable safetensors file: {exc}") from exc
        emb = LandmarkEmbedding(t["lmk_face_ids"], t["lmk_barycentric"], t["lmk_indices"], MEDIAPIPE_468)
        return cls(
            t["template"], t["faces"], t["skin_weights"], t["joints"], t["blendshapes"], t["face_labels"], emb, info.get("meta")
        )


# ====================================================================== construction helpers


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors a [N,3] and b [3]."""
    dot = np.clip((a * b).sum(-1, keepdims=True), -0.9999, 0.9999)
    omega = np.arccos(dot)
    so = np.sin(omega)
    return np.sin((1 - t) * omega) / so * a + np.sin(t * omega) / so * b


def _ring_strip(ring_a: list[int], ring_b: list[int]) -> list[list[int]]:
    """Triangles joining two closed rings of equal length, wound a -> b."""
    n = len(ring_a)
    tris = []
    for i in range(n):
        j = (i + 1) % n
        tris.append([ring_a[i], ring_b[i], ring_a[j]])
        tris.append([ring_a[j], ring_b[i], ring_b[j]])
    return tris


def _split_eye_loop(loop: tuple[int, ...], corner_a: int, corner_b: int) -> tuple[list[int], list[int]]:
    """Split a closed eye loop at its two corners into the two lid paths (each corner to corner)."""
    n = len(loop)
    ia, ib = loop.index(corner_a), loop.index(corner_b)
    path1 = [loop[(ia + k) % n] for k in range((ib - ia) % n + 1)]
    path2 = [loop[(ib + k) % n] for k in range((ia - ib) % n + 1)][::-1]
    return path1, path2


def _arc_param(points: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return s / max(s[-1], 1e-12)


def _shepard_field(
    verts: np.ndarray,
    control_pts: np.ndarray,
    control_disp: np.ndarray,
    radius: float,
    envelope: float,
) -> np.ndarray:
    """Smooth displacement field: Gaussian-weighted average of control displacements.

    The average (not a sum) keeps the field exact-ish near dense controls; the envelope makes it
    vanish away from every control, so a local expression stays local.
    """
    d2 = ((verts[:, None, :] - control_pts[None, :, :]) ** 2).sum(-1)  # [V, C]
    w = np.exp(-d2 / radius**2)
    avg = (w[..., None] * control_disp[None]).sum(1) / w.sum(1, keepdims=True).clip(1e-12)
    env = np.exp(-d2.min(1) / envelope**2)
    return avg * env[:, None]


def _laplacian_smooth(values: np.ndarray, faces: np.ndarray, fixed: np.ndarray, iterations: int) -> np.ndarray:
    """Average each free vertex's value with its neighbours' (fixed vertices keep theirs)."""
    V = values.shape[0]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    deg = np.bincount(edges[:, 0], minlength=V).clip(1)
    out = values.copy()
    for _ in range(iterations):
        acc = np.zeros_like(out)
        np.add.at(acc, edges[:, 0], out[edges[:, 1]])
        new = acc / deg[:, None] if out.ndim == 2 else acc / deg
        out = np.where(fixed[:, None] if out.ndim == 2 else fixed, out, new)
    return out


def _canonical_frame(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (columns: head x, y, z in H-space) and origin t of the canonical head frame.

    x from the mirror pairs (subject's right -> left), y from chin to forehead made orthogonal,
    origin at the midpoint of the face outline at the ears (roughly the skull's vertical axis).
    """
    x = _normalize(sum(H[l] - H[r] for l, r in T.SYMMETRIC_PAIRS))
    up = H[T.FOREHEAD_TOP] - H[T.CHIN]
    y = _normalize(up - (up @ x) * x)
    z = np.cross(x, y)
    R = np.stack([x, y, z], axis=1)
    t = 0.5 * (H[T.CHEEK_LEFT] + H[T.CHEEK_RIGHT])
    return R, t


def _ellipsoid_radius(dirs: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(((dirs / radii) ** 2).sum(-1))


@dataclass
class _Skull:
    center: np.ndarray  # [3]
    radii: np.ndarray  # [3]


def _skull_points(skull: _Skull, n: int = 400) -> np.ndarray:
    """Points on the ellipsoid's surface (Fibonacci sphere), for silhouette tests."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5**0.5) * k
    d = np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], -1)
    return skull.center + d * skull.radii


def _project_np(points: np.ndarray, camera: Cameras) -> np.ndarray:
    """[N, 3] world -> [N, 2] pixels in camera 0 (numpy: the rig builder projects small sets often)."""
    R = camera.viewmats[0, :3, :3].double().numpy()
    t = camera.viewmats[0, :3, 3].double().numpy()
    K = camera.Ks[0].double().numpy()
    c = points @ R.T + t
    return np.stack([K[0, 0] * c[:, 0] / c[:, 2] + K[0, 2], K[1, 1] * c[:, 1] / c[:, 2] + K[1, 2]], -1)


def _silhouette(points_world: np.ndarray, camera: Cameras, size: int) -> np.ndarray:
    import cv2

    hull = cv2.convexHull(_project_np(points_world, camera).astype(np.float32))
    img = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(img, np.round(hull).astype(np.int32), 1)
    return img.astype(bool)


def _fit_skull(face: np.ndarray, W: float, camera: Cameras, mask: np.ndarray | None, fit: bool) -> tuple[_Skull, dict]:
    """Ellipsoid for the skull + hair: anatomical defaults, then sized against the mask."""
    y_top = face[T.FOREHEAD_TOP, 1]
    base = _Skull(
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
                cand = _Skull(base.center + np.array([0.0, dy, 0.0]), base.radii * np.array([sx, sy, 0.5 * (sx + sy)]))
                sil = (_silhouette(_skull_points(cand), camera, size) | face_hull) & region
                inter = (sil & m & region).sum()
                union = ((sil | m) & region).sum()
                iou = inter / max(union, 1)
                if iou > best_iou:
                    best, best_iou = cand, iou
    diag = {"skull_fit": "mask silhouette", "skull_iou_above_mouth": float(best_iou)}
    return best, diag


def _silhouette_gain(
    skull: _Skull, camera: Cameras, mask: np.ndarray, bins: int = 72, margin: float = 1.0
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


def _apply_gain(points: np.ndarray, skull: _Skull, camera: Cameras, gain: np.ndarray, start: float) -> np.ndarray:
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


@dataclass
class _BodyAxis:
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
        return self.origin + h * self.up + np.multiply.outer(x, self.right) + np.multiply.outer(z, self.forward)


def _body_axis(face: np.ndarray, W: float, camera: Cameras) -> _BodyAxis:
    R = camera.viewmats[0, :3, :3].double().numpy()
    origin = np.array([0.0, face[T.CHIN, 1], face[T.CHIN, 2] - 0.55 * W])
    return _BodyAxis(origin, -R[1], R[0], -R[2])


def _body_levels(
    face: np.ndarray, W: float, camera: Cameras, mask: np.ndarray | None, size: int, axis: _BodyAxis
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


def build_facemesh_rig(
    landmarks_px: np.ndarray,
    image_size: int,
    iris_px: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    config: RigConfig | None = None,
) -> RigBuild:
    """Build the rig from one face mesh.

    landmarks_px: [468, 3] face-mesh output in the (square) reference image's pixels: x right,
        y down, z relative depth in the same scale (negative towards the camera).
    image_size: side of the reference image in pixels.
    iris_px: optional [10, 3] iris points (468..477 order: right centre + 4, left centre + 4).
    mask: optional [S, S] foreground in [0, 1]; sizes the skull/hair, neck and shoulders.
    Returns the rig, the reference camera (1 camera, ``image_size`` square) and diagnostics.
    """
    cfg = config or RigConfig()
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.shape != (T.NUM_FACEMESH, 3):
        raise ValueError(f"expected [468, 3] face-mesh landmarks, got {lm.shape}")
    S = int(image_size)
    topo = T.facemesh_topology()

    # ---- unproject the landmarks through a long-focal reference camera (metres).
    f = focal_from_fov(cfg.fov_deg, S)
    width_px = np.linalg.norm(lm[T.CHEEK_LEFT] - lm[T.CHEEK_RIGHT])
    if width_px < 4:
        raise ValueError("face-mesh landmarks are degenerate (face width under 4 pixels)")
    k = cfg.face_width_m / width_px  # metres per pixel at the face
    D = f * k  # camera distance that makes one pixel = k metres at the face

    def unproject(p: np.ndarray) -> np.ndarray:
        zc = D + p[:, 2] * k
        return np.stack([(p[:, 0] - S / 2) * zc / f, (p[:, 1] - S / 2) * zc / f, zc], -1)

    cam_pts = unproject(lm)
    flip = np.array([1.0, -1.0, -1.0])  # camera (x right, y down, z fwd) <-> H (x right, y up, z back)
    H = cam_pts * flip
    R, t = _canonical_frame(H)
    face = (H - t) @ R  # canonical head frame [468, 3]
    W = np.linalg.norm(face[T.CHEEK_LEFT] - face[T.CHEEK_RIGHT])

    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.from_numpy(np.diag(flip) @ R).float()
    viewmat[:3, 3] = torch.from_numpy(flip * t).float()
    camera = Cameras(viewmat[None], intrinsics(f, S, S)[None], S, S)

    verts: list[np.ndarray] = [face]
    faces: list[list[int]] = [list(tri) for tri in topo.triangles]
    labels: list[int] = [PART_NAMES.index("face")] * len(faces)
    n_face = len(face)

    # Orient the face mesh outwards (+z).
    fa = np.array(faces)
    normals = np.cross(face[fa[:, 1]] - face[fa[:, 0]], face[fa[:, 2]] - face[fa[:, 0]])
    if normals[:, 2].sum() < 0:
        faces = [[a, c, b] for a, b, c in faces]

    def add(points: np.ndarray) -> list[int]:
        start = sum(len(v) for v in verts)
        verts.append(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        return list(range(start, start + len(verts[-1])))

    # ---- skull: rings from the face outline around the ellipsoid to the back pole.
    skull, diag = _fit_skull(face, W, camera, mask, cfg.fit_skull_to_mask)
    oval = list(topo.loops["face_oval"])
    oval_pts = face[oval]
    u0 = _normalize(oval_pts - skull.center)
    r0 = np.linalg.norm(oval_pts - skull.center, axis=1)
    gain = None
    if mask is not None and cfg.fit_skull_to_mask:
        gain, gain_start = _silhouette_gain(skull, camera, mask)
        diag["skull_gain_max"] = float(gain.max())
        diag["skull_gain_min"] = float(gain.min())
    back = np.array([0.0, 0.15, -1.0])
    back = back / np.linalg.norm(back)
    prev = oval
    skull_rings = []
    for ring in range(1, cfg.skull_rings + 1):
        tt = ring / (cfg.skull_rings + 1)
        d = _normalize(_slerp(u0, back, tt))
        a = _smoothstep(0.0, 0.35, np.array(tt))
        r = (1 - a) * r0 + a * _ellipsoid_radius(d, skull.radii)
        pts = skull.center + d * r[:, None]
        if gain is not None:
            a_gain = _smoothstep(0.0, 0.2, np.array(tt))
            pts = (1 - a_gain) * pts + a_gain * _apply_gain(pts, skull, camera, gain, gain_start)
        idx = add(pts)
        skull_rings.append((idx, tt))
        faces += _ring_strip(prev, idx)
        labels += [PART_NAMES.index("skull")] * (2 * len(idx))
        prev = idx
    pole = add(skull.center + back * _ellipsoid_radius(back[None], skull.radii)[:, None])[0]
    for i in range(len(prev)):
        faces.append([prev[i], pole, prev[(i + 1) % len(prev)]])
        labels.append(PART_NAMES.index("skull"))

    # ---- eyeballs: a spherical cap behind each eye opening (iris ring + centre).
    eye_info = {}
    for side, loop_name, iris_slot, corners in (
        ("left", "left_eye", 5, (T.EYE_OUTER_LEFT, T.EYE_INNER_LEFT)),
        ("right", "right_eye", 0, (T.EYE_OUTER_RIGHT, T.EYE_INNER_RIGHT)),
    ):
        loop = list(topo.loops[loop_name])
        rim = face[loop]
        if iris_px is not None:
            ic = (unproject(np.asarray(iris_px, dtype=np.float64)[iris_slot : iris_slot + 1]) * flip - t) @ R
            centre_xy = ic[0, :2]
        else:
            centre_xy = rim[:, :2].mean(0)
        front_z = rim[:, 2].max()
        apex = np.array([centre_xy[0], centre_xy[1], front_z - 0.0005])
        eye_centre = apex - np.array([0.0, 0.0, cfg.eyeball_radius_m])
        ang = np.linspace(0, 2 * math.pi, 8, endpoint=False)
        ring_pts = apex + cfg.iris_radius_m * np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], -1)
        # Put the iris ring on the eyeball sphere.
        ring_pts = eye_centre + _normalize(ring_pts - eye_centre) * cfg.eyeball_radius_m
        ring_idx = add(ring_pts)
        centre_idx = add(apex[None])[0]
        # Join the 16-vertex rim to the 8-vertex ring: each ring vertex fans to its nearest rim arc.
        rim_ang = np.arctan2(rim[:, 1] - centre_xy[1], rim[:, 0] - centre_xy[0])
        ring_ang = ang
        nearest = [int(np.argmin(np.abs(np.angle(np.exp(1j * (ring_ang - a)))))) for a in rim_ang]
        for i in range(len(loop)):
            j = (i + 1) % len(loop)
            faces.append([loop[i], ring_idx[nearest[i]], loop[j]])
            labels.append(PART_NAMES.index("eyeball"))
            if nearest[i] != nearest[j]:
                faces.append([loop[j], ring_idx[nearest[i]], ring_idx[nearest[j]]])
                labels.append(PART_NAMES.index("eyeball"))
        for i in range(8):
            faces.append([ring_idx[i], centre_idx, ring_idx[(i + 1) % 8]])
            labels.append(PART_NAMES.index("eyeball"))
        eye_info[side] = {"centre": eye_centre, "ring": ring_idx, "apex": centre_idx, "loop": loop}

    # ---- mouth cavity: two shrinking rings behind the inner lips and a back vertex.
    mouth_loop = list(topo.loops["mouth"])
    lips = face[mouth_loop]
    mouth_centre = lips.mean(0)
    bag_rings = []
    prev = mouth_loop
    for depth_frac, shrink in ((0.35, 0.85), (0.75, 0.55)):
        pts = mouth_centre + (lips - mouth_centre) * shrink - np.array([0.0, 0.0, depth_frac * cfg.mouth_depth_m])
        idx = add(pts)
        faces += _ring_strip(prev, idx)
        labels += [PART_NAMES.index("mouth")] * (2 * len(idx))
        bag_rings.append(idx)
        prev = idx
    mouth_back = add((mouth_centre - np.array([0.0, 0.0, cfg.mouth_depth_m]))[None])[0]
    for i in range(len(prev)):
        faces.append([prev[i], mouth_back, prev[(i + 1) % len(prev)]])
        labels.append(PART_NAMES.index("mouth"))

    # ---- neck and torso: elliptic rings stacked down the body axis, widths fitted to the mask.
    axis = _body_axis(face, W, camera)
    levels = _body_levels(face, W, camera, mask, S, axis)
    ang = np.linspace(0, 2 * math.pi, cfg.neck_segments, endpoint=False)
    neck_rings = []
    prev = prev_w = None
    for h, x_left, x_right, hz, wn in levels:
        xc, hx = 0.5 * (x_left + x_right), 0.5 * (x_right - x_left)
        idx = add(axis.point(h, xc + hx * np.sin(ang), hz * np.cos(ang)))
        neck_rings.append((idx, wn))
        if prev is not None:
            tris = _ring_strip(prev, idx)
            faces += tris
            part = "neck" if wn > 0 or prev_w > 0 else "torso"
            labels += [PART_NAMES.index(part)] * len(tris)
        prev, prev_w = idx, wn
    neck_half = 0.5 * (levels[1][2] - levels[1][1])
    shoulder_half = 0.5 * (levels[-1][2] - levels[-1][1])

    V = np.concatenate(verts)
    Fa = _orient_outwards(
        V,
        np.array(faces, dtype=np.int64),
        np.array(labels),
        skull.center,
        {side: info["centre"] for side, info in eye_info.items()},
        axis,
    )

    # ---- joints.
    jaw_joint = np.array([0.0, face[T.CHEEK_LEFT, 1] * 0.5 + face[T.CHEEK_RIGHT, 1] * 0.5 - 0.08 * W, -0.05 * W])
    neck_joint = axis.point(0.2 * W, 0.0, 0.0)
    root_joint = axis.point(-0.45 * W, 0.0, 0.0)
    joints = np.stack([root_joint, neck_joint, jaw_joint, eye_info["left"]["centre"], eye_info["right"]["centre"]])

    # ---- skinning weights.
    weights = np.zeros((len(V), 5))
    weights[:, _NECK] = 1.0
    jaw_w = _face_jaw_weights(face, Fa[: len(topo.triangles)], W)
    weights[:n_face, _JAW] = jaw_w
    weights[:n_face, _NECK] = 1.0 - jaw_w
    oval_jaw = jaw_w[oval]
    for idx, tt in skull_rings:
        w = oval_jaw * (1.0 - _smoothstep(0.0, 0.3, np.array(tt)))
        weights[idx, _JAW] = w
        weights[idx, _NECK] = 1 - w
    for side, joint in (("left", _EYE_L), ("right", _EYE_R)):
        for vi in eye_info[side]["ring"] + [eye_info[side]["apex"]]:
            weights[vi] = 0.0
            weights[vi, joint] = 1.0
    lip_jaw = jaw_w[mouth_loop]
    for idx in bag_rings:
        weights[idx, _JAW] = lip_jaw
        weights[idx, _NECK] = 1 - lip_jaw
    weights[mouth_back] = 0.0
    weights[mouth_back, _JAW] = 0.5
    weights[mouth_back, _NECK] = 0.5
    for idx, wn in neck_rings:
        weights[idx] = 0.0
        weights[idx, _NECK] = wn
        weights[idx, _ROOT] = 1 - wn

    # ---- backdrop: the mask's remaining uncovered pixels get a surface behind their neighbours.
    if mask is not None:
        V, Fa, weights, labels_arr, backdrop_px = _add_backdrop(V, Fa, weights, np.array(labels), camera, mask)
        labels = labels_arr.tolist()
        diag["backdrop_pixels"] = backdrop_px

    # ---- expression blendshapes.
    blend = _expression_blendshapes(V, face, W, eye_info, mouth_loop, bag_rings, n_face)

    # ---- landmark embedding: every face-mesh landmark is a vertex; iris points sit on the eyeballs.
    vert_to_face = np.full(len(V), -1)
    vert_slot = np.zeros(len(V), dtype=np.int64)
    for fi, tri in enumerate(Fa):
        for slot, v in enumerate(tri):
            if vert_to_face[v] < 0:
                vert_to_face[v] = fi
                vert_slot[v] = slot
    lmk_vertices = list(range(n_face))
    lmk_indices = list(range(n_face))
    for side, base in (("right", T.IRIS_CENTER_RIGHT), ("left", T.IRIS_CENTER_LEFT)):
        ring = eye_info[side]["ring"]
        lmk_vertices += [eye_info[side]["apex"], ring[0], ring[2], ring[4], ring[6]]
        lmk_indices += list(range(base, base + 5))
    face_ids = torch.tensor(vert_to_face[lmk_vertices], dtype=torch.long)
    bary = torch.zeros(len(lmk_vertices), 3)
    bary[torch.arange(len(lmk_vertices)), torch.from_numpy(vert_slot[lmk_vertices])] = 1.0
    embedding = LandmarkEmbedding(face_ids, bary, torch.tensor(lmk_indices, dtype=torch.long), MEDIAPIPE_468)

    meta = {
        "config": asdict(cfg),
        "face_width_m": float(W),
        "camera_distance_m": float(D),
        "skull_centre": skull.center.tolist(),
        "skull_radii": skull.radii.tolist(),
        "neck_half_width_m": neck_half,
        "shoulder_half_width_m": shoulder_half,
        **diag,
    }
    rig = FaceMeshRig(
        torch.from_numpy(V).float(),
        torch.from_numpy(Fa),
        torch.from_numpy(weights).float(),
        torch.from_numpy(joints).float(),
        torch.from_numpy(blend).float(),
        torch.tensor(labels, dtype=torch.long),
        embedding,
        meta,
    )
    return RigBuild(rig, camera, {**diag, "num_vertices": len(V), "num_faces": len(Fa)})


def _orient_outwards(
    V: np.ndarray, faces: np.ndarray, labels: np.ndarray, skull_centre: np.ndarray, eye_centres: dict, axis: "_BodyAxis"
) -> np.ndarray:
    """Wind every added triangle so its normal points out of the head (the face is already +z)."""
    tri = V[faces]
    centroid = tri.mean(1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out_dir = np.zeros_like(centroid)
    part = np.array(PART_NAMES)[labels]
    out_dir[part == "skull"] = centroid[part == "skull"] - skull_centre
    for name in ("neck", "torso"):
        sel = part == name
        rel = centroid[sel] - axis.origin
        out_dir[sel] = rel - (rel @ axis.up)[:, None] * axis.up
    sel = part == "eyeball"
    for i in np.nonzero(sel)[0]:
        c = min(eye_centres.values(), key=lambda e: np.linalg.norm(centroid[i] - e))
        out_dir[i] = centroid[i] - c
    out_dir[part == "mouth"] = [0.0, 0.0, 1.0]
    out_dir[part == "face"] = normal[part == "face"]  # keep
    flip = (normal * out_dir).sum(-1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _add_backdrop(
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
    ny, nx = S // g + 1, S // g + 1
    # active cells: any missing pixel inside (dilated by one cell so patches tuck under the mesh)
    cells = cv2.resize(missing.astype(np.uint8), (nx - 1, ny - 1), interpolation=cv2.INTER_AREA) > 0
    cells = cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    cells &= cv2.resize((mask > 0.5).astype(np.uint8), (nx - 1, ny - 1), interpolation=cv2.INTER_AREA) > 0
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


def _face_jaw_weights(face: np.ndarray, face_tris: np.ndarray, W: float) -> np.ndarray:
    """How much each face vertex follows the jaw: lower lip 1, upper lip 0, smooth elsewhere."""
    topo = T.facemesh_topology()
    mouth = list(topo.loops["mouth"])
    upper_inner, lower_inner = _split_eye_loop(tuple(mouth), 78, 308)
    if T.UPPER_LIP_INNER not in upper_inner:
        upper_inner, lower_inner = lower_inner, upper_inner
    lips = topo.part_vertices("lips")
    outer_lower = [146, 91, 181, 84, 17, 314, 405, 321, 375]
    outer_upper = [185, 40, 39, 37, 0, 267, 269, 270, 409]
    corners = [61, 291, 78, 308]
    y_corner = 0.5 * (face[61, 1] + face[291, 1])
    y_centre = 0.5 * (face[13, 1] + face[14, 1])
    x_corner = 0.5 * abs(face[291, 0] - face[61, 0])
    x = face[:, 0]
    rel = np.clip(1 - (x / max(x_corner, 1e-6)) ** 2, 0, 1)
    y_line = y_corner + (y_centre - y_corner) * rel
    h = max(y_line.max() - face[T.CHIN, 1], 1e-6)
    s = (y_line - face[:, 1]) / h
    w = _smoothstep(0.0, 0.35, s) * (1 - _smoothstep(0.6, 1.0, np.abs(x) / (0.5 * W)))
    fixed = np.zeros(len(face), dtype=bool)
    for v in lower_inner + outer_lower:
        w[v], fixed[v] = 1.0, True
    for v in upper_inner + outer_upper:
        w[v], fixed[v] = 0.0, True
    for v in corners:
        w[v], fixed[v] = 0.5, True
    # Vertices far above the mouth never move with the jaw.
    above = face[:, 1] > y_corner + 0.1 * W
    w[above], fixed[above] = 0.0, True
    del lips
    return np.clip(_laplacian_smooth(w, face_tris, fixed, iterations=8), 0, 1)


def _expression_blendshapes(
    V: np.ndarray,
    face: np.ndarray,
    W: float,
    eye_info: dict,
    mouth_loop: list[int],
    bag_rings: list[list[int]],
    n_face: int,
) -> np.ndarray:
    """Displacement fields [E, V, 3] for EXPRESSION_NAMES (in metres at magnitude 1)."""
    topo = T.facemesh_topology()
    E = len(EXPRESSION_NAMES)
    out = np.zeros((E, len(V), 3))
    fv = face  # face vertices only; added parts inherit below

    def field(ctrl: list[int], disp: np.ndarray, radius: float, envelope: float) -> np.ndarray:
        d = np.zeros((len(V), 3))
        d[:n_face] = _shepard_field(fv, fv[ctrl], disp, radius * W, envelope * W)
        d[ctrl] = disp
        return d

    upper_lip_outer = [185, 40, 39, 37, 0, 267, 269, 270, 409]
    lower_lip_outer = [146, 91, 181, 84, 17, 314, 405, 321, 375]
    upper_lip_inner = [191, 80, 81, 82, 13, 312, 311, 310, 415]
    lower_lip_inner = [95, 88, 178, 87, 14, 317, 402, 318, 324]
    lip_centre = [0, 13, 14, 17]
    right_c, left_c = [61, 78], [291, 308]
    mouth_c = face[lip_centre].mean(0)

    # jaw_open (index 0): the jaw joint does the work; relax the lips slightly forward.
    ctrl = lower_lip_outer + upper_lip_outer
    out[0] = field(ctrl, np.tile([0.0, 0.0, 0.01 * W], (len(ctrl), 1)), 0.08, 0.12)

    # smile: corners up, out and back; cheeks lift a little; lip centre pinned.
    ctrl = right_c + left_c + lip_centre + [50, 280]
    disp = np.array(
        [[-0.06, 0.07, -0.03]] * 2 + [[0.06, 0.07, -0.03]] * 2 + [[0.0, 0.0, 0.0]] * 4 + [[0.0, 0.025, 0.0]] * 2
    ) * W
    out[1] = field(ctrl, disp, 0.1, 0.22)

    # frown: corners down and slightly in.
    disp = np.array([[0.01, -0.06, 0.0]] * 2 + [[-0.01, -0.06, 0.0]] * 2 + [[0.0, 0.0, 0.0]] * 4 + [[0.0, 0.0, 0.0]] * 2) * W
    out[2] = field(ctrl, disp, 0.1, 0.22)

    # lip_pucker: lips gather towards the centre and push forward.
    ctrl = upper_lip_outer + lower_lip_outer + upper_lip_inner + lower_lip_inner + right_c + left_c
    pts = fv[ctrl]
    disp = np.zeros((len(ctrl), 3))
    disp[:, 0] = -0.4 * (pts[:, 0] - mouth_c[0])
    disp[:, 2] = 0.07 * W
    out[3] = field(ctrl, disp, 0.06, 0.15)

    # lip_stretch: corners out and slightly down, centre pinned.
    ctrl = right_c + left_c + lip_centre
    disp = np.array([[-0.08, -0.01, -0.01]] * 2 + [[0.08, -0.01, -0.01]] * 2 + [[0.0, 0.0, 0.0]] * 4) * W
    out[4] = field(ctrl, disp, 0.1, 0.2)

    # blinks: the upper lid slides onto the lower lid; eyeball pushed back under the closed lid.
    for slot, side, corners in ((5, "left", (263, 362)), (6, "right", (33, 133))):
        loop = tuple(eye_info[side]["loop"])
        path1, path2 = _split_eye_loop(loop, *corners)
        upper, lower = (path1, path2) if fv[path1, 1].mean() > fv[path2, 1].mean() else (path2, path1)
        s_up, s_lo = _arc_param(fv[upper]), _arc_param(fv[lower])
        target = np.stack([np.interp(s_up, s_lo, fv[lower, k]) for k in range(3)], -1)
        # close slightly above the lower lid so the lid does not sink into it
        target[:, 1] += 0.15 * (fv[upper, 1] - target[:, 1])
        ctrl = upper[1:-1] + lower
        disp = np.concatenate([(target - fv[upper])[1:-1], np.zeros((len(lower), 3))])
        out[slot] = field(ctrl, disp, 0.035, 0.09)
        for vi in eye_info[side]["ring"] + [eye_info[side]["apex"]]:
            out[slot, vi] = [0.0, 0.0, -0.006]

    # brow_raise: brows and forehead up, upper lids follow a little.
    brows = topo.part_vertices("left_eyebrow") + topo.part_vertices("right_eyebrow")
    lids = [159, 158, 160, 386, 385, 387]
    lower_lids = [145, 374, 153, 380]
    ctrl = brows + lids + lower_lids
    disp = np.concatenate(
        [np.tile([0.0, 0.07 * W, 0.0], (len(brows), 1)), np.tile([0.0, 0.012 * W, 0.0], (len(lids), 1)), np.zeros((len(lower_lids), 3))]
    )
    out[7] = field(ctrl, disp, 0.09, 0.25)

    # brow_frown: inner brows down and together, outer brows barely move.
    inner_r, inner_l = [55, 65, 107, 66], [285, 295, 336, 296]
    outer = [46, 53, 276, 283]
    ctrl = inner_r + inner_l + outer
    disp = np.array([[0.03, -0.04, 0.005]] * 4 + [[-0.03, -0.04, 0.005]] * 4 + [[0.0, -0.008, 0.0]] * 4) * W
    out[8] = field(ctrl, disp, 0.07, 0.15)

    # Added parts inherit: the mouth cavity follows its lip vertex, fading with depth.
    for e in range(E):
        lip_d = out[e, mouth_loop]
        for fade, idx in zip((0.7, 0.35), bag_rings):
            out[e, idx] = lip_d * fade
    return out
