"""The face of the built-in rig: the 468 landmarks lifted into metres, and the photo's camera.

The landmarks are unprojected through a long-focal reference camera whose distance makes the
face ``face_width_m`` wide, so the rig reprojects onto the detected landmarks by construction.
The face's own rotation in the photo is moved into that camera: the rig is always upright and
frontal at neutral pose, in the canonical head frame of :mod:`zero1toa.render.camera`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..render.camera import Cameras, focal_from_fov, intrinsics
from . import topology as T
from .rig_mesh import normalize

#: camera (x right, y down, z forward) <-> unprojected landmarks' frame (x right, y up, z back)
_FLIP = np.array([1.0, -1.0, -1.0])


@dataclass
class FaceFrame:
    """The face mesh in the canonical head frame, and how the photo sees it."""

    face: np.ndarray  # [468, 3] canonical head frame, metres
    triangles: np.ndarray  # [852, 3] MediaPipe's triangles, wound so the face looks along +z
    width: float  # W: distance between the face outline at the ears (234 - 454), metres
    camera: Cameras  # the reference view (1 camera) at the image's resolution
    camera_distance: float  # metres
    focal_px: float
    image_size: int
    metres_per_px: float  # at the face
    rotation: np.ndarray  # [3, 3] columns: head x, y, z in the unprojected frame
    origin: np.ndarray  # [3] head origin in the unprojected frame

    def lift(self, points_px: np.ndarray) -> np.ndarray:
        """[N, 3] image points (x, y pixels, z relative depth like the landmarks) -> [N, 3] head frame."""
        p = np.asarray(points_px, dtype=np.float64)
        f, S, k = self.focal_px, self.image_size, self.metres_per_px
        zc = self.camera_distance + p[:, 2] * k
        cam = np.stack([(p[:, 0] - S / 2) * zc / f, (p[:, 1] - S / 2) * zc / f, zc], -1)
        return (cam * _FLIP - self.origin) @ self.rotation


def canonical_frame(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (columns: head x, y, z in H-space) and origin t of the canonical head frame.

    x from the mirror pairs (subject's right -> left), y from chin to forehead made orthogonal,
    origin at the midpoint of the face outline at the ears (roughly the skull's vertical axis).
    """
    x = normalize(sum(H[l] - H[r] for l, r in T.SYMMETRIC_PAIRS))
    up = H[T.FOREHEAD_TOP] - H[T.CHIN]
    y = normalize(up - (up @ x) * x)
    z = np.cross(x, y)
    R = np.stack([x, y, z], axis=1)
    t = 0.5 * (H[T.CHEEK_LEFT] + H[T.CHEEK_RIGHT])
    return R, t


def lift_face(landmarks_px: np.ndarray, image_size: int, face_width_m: float, fov_deg: float) -> FaceFrame:
    """Unproject the face mesh (see module docstring); rejects malformed or degenerate landmarks."""
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.shape != (T.NUM_FACEMESH, 3):
        raise ValueError(f"expected [468, 3] face-mesh landmarks, got {lm.shape}")
    S = int(image_size)
    f = focal_from_fov(fov_deg, S)
    width_px = np.linalg.norm(lm[T.CHEEK_LEFT] - lm[T.CHEEK_RIGHT])
    if width_px < 4:
        raise ValueError("face-mesh landmarks are degenerate (face width under 4 pixels)")
    k = face_width_m / width_px  # metres per pixel at the face
    D = f * k  # camera distance that makes one pixel = k metres at the face
    zc = D + lm[:, 2] * k
    H = np.stack([(lm[:, 0] - S / 2) * zc / f, (lm[:, 1] - S / 2) * zc / f, zc], -1) * _FLIP
    R, t = canonical_frame(H)
    face = (H - t) @ R  # [468, 3]
    W = float(np.linalg.norm(face[T.CHEEK_LEFT] - face[T.CHEEK_RIGHT]))

    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.from_numpy(np.diag(_FLIP) @ R).float()
    viewmat[:3, 3] = torch.from_numpy(_FLIP * t).float()
    camera = Cameras(viewmat[None], intrinsics(f, S, S)[None], S, S)

    tris = np.array(T.facemesh_topology().triangles, dtype=np.int64)
    normals = np.cross(face[tris[:, 1]] - face[tris[:, 0]], face[tris[:, 2]] - face[tris[:, 0]])
    if normals[:, 2].sum() < 0:
        tris = tris[:, [0, 2, 1]]
    return FaceFrame(face, tris, W, camera, float(D), f, S, k, R, t)
