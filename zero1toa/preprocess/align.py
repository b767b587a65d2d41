"""Aligned square crop of the portrait: the avatar's reference image.

Why this shape of crop: the avatar is a whole head, so the reference must hold the hair above
the forehead and the neck below the chin, while shoulders may be cut. The face mesh gives the
forehead (landmark 10) and chin (152); the crop side is ``margin`` face heights and the face
centre sits a little below the crop centre, which leaves about 0.7 face heights above the
forehead landmark for the skull and hair and about 0.5 below the chin for the neck (defaults).
The eyes are levelled by rotating by the measured roll, so the avatar's "up" is the head's up.

Conventions (shared with ``zero1toa.render.camera``): pixel coordinates are continuous, x right,
y down, pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` with its centre at ``j + 0.5``. Every
affine ``matrix`` here maps such coordinates of one image onto another; OpenCV's index-based
convention is converted inside :func:`warp_affine_aa` only.

Resampling must not alias: a 4000 x 3000 phone photo shrunk to 512 px by a plain bilinear warp
shows moire in hair and fabric. When the warp shrinks, the needed source region is first
low-pass filtered and reduced with area averaging (``cv2.INTER_AREA``) to the target scale, and
only the remaining rotation (at unit scale) is done by interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AlignedCrop", "align_crop", "transform_points", "invert_affine", "warp_affine_aa", "eye_roll_deg"]

# MediaPipe face-mesh indices used here (see zero1toa.preprocess.facemesh.MeshIndex for the
# full convention; repeated, not imported, to keep align free of the model runtime).
_R_EYE_OUTER, _R_EYE_INNER = 33, 133  # subject's right eye: image-left in an unmirrored photo
_L_EYE_INNER, _L_EYE_OUTER = 362, 263  # subject's left eye: image-right
_FOREHEAD, _CHIN = 10, 152
_CHEEK_R, _CHEEK_L = 234, 454
_FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)


@dataclass(eq=False)  # holds arrays
class AlignedCrop:
    """The aligned reference crop and the maps between it and the original photo."""

    image: np.ndarray  # [S, S, 3] uint8
    alpha: np.ndarray | None  # [S, S] uint8, the photo's own alpha cropped the same way
    valid: np.ndarray  # [S, S] bool: True where the pixel came from inside the photo (False = padded)
    matrix: np.ndarray  # [2, 3] float64: original pixel coords -> crop pixel coords
    inverse: np.ndarray  # [2, 3] float64: crop -> original
    roll_deg: float  # measured roll of the eye line in the original (see eye_roll_deg); undone in the crop
    scale: float  # crop pixels per original pixel
    size: int

    @property
    def padded_fraction(self) -> float:
        return float(1.0 - self.valid.mean())


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a [2, 3] affine map."""
    m = np.asarray(matrix, dtype=np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, -a_inv @ m[:, 2:3]], axis=1)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a [2, 3] affine to points [N, 2] or [N, 3].

    For [N, 3] points (x, y, depth in pixel units, as the face mesh gives them) the depth is
    multiplied by the map's uniform scale ``sqrt(|det A|)`` so it stays in the pixel units of
    the new image. Returns float64 unless the input is float32 (kept).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"points must be [N, 2] or [N, 3], got {pts.shape}")
    m = np.asarray(matrix, dtype=np.float64)
    out = pts.astype(np.float64, copy=True)
    out[:, :2] = pts[:, :2].astype(np.float64) @ m[:, :2].T + m[:, 2]
    if pts.shape[1] == 3:
        out[:, 2] *= math.sqrt(abs(np.linalg.det(m[:, :2])))
    return out.astype(np.float32) if pts.dtype == np.float32 else out


def _to_cv_index_matrix(matrix: np.ndarray) -> np.ndarray:
    """Continuous-coordinate affine -> OpenCV's pixel-index affine (centres at integers)."""
    m = np.asarray(matrix, dtype=np.float64)
    a, b = m[:, :2], m[:, 2]
    return np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


def _take_region(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, replicate: bool) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` where the window may leave the image: replicate edges or zeros."""
    h, w = image.shape[:2]
    ys = np.arange(y0, y1)
    xs = np.arange(x0, x1)
    if replicate:
        return image[np.clip(ys, 0, h - 1)][:, np.clip(xs, 0, w - 1)]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    iy0, iy1 = max(y0, 0), min(y1, h)
    ix0, ix1 = max(x0, 0), min(x1, w)
    if iy1 > iy0 and ix1 > ix0:
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return out


def warp_affine_aa(
    image: np.ndarray,
    matrix: np.ndarray,
    out_size: tuple[int, int],
    *,
    replicate: bool = True,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp ``image`` ([H, W] or [H, W, C]) by ``matrix`` (continuous coords, source -> output).

    ``out_size`` is (width, height). Outside the source, edges are replicated (or zeros when
    ``replicate`` is False). If the map shrinks (smallest singular value < 1), the source
    window it reads is first low-pass filtered (Gaussian) and area-averaged to the target
    scale, so the result does not alias.
    """
    m = np.asarray(matrix, dtype=np.float64)
    out_w, out_h = int(out_size[0]), int(out_size[1])
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    s_min = float(np.linalg.svd(m[:, :2], compute_uv=False).min())
    if s_min < 0.98:
        inv = invert_affine(m)
        corners = np.array([[0, 0], [out_w, 0], [0, out_h], [out_w, out_h]], dtype=np.float64)
        src = corners @ inv[:, :2].T + inv[:, 2]
        pad = 2.0 / s_min + 2.0
        x0, y0 = (np.floor(src.min(axis=0) - pad)).astype(int)
        x1, y1 = (np.ceil(src.max(axis=0) + pad)).astype(int)
        region = _take_region(image, int(x0), int(y0), int(x1), int(y1), replicate)
        # Area averaging alone is a box filter: with fractional windows, fine stripes still beat.
        # A Gaussian with skimage's anti-aliasing sigma ((1/s - 1) / 2) removes what it leaves.
        sigma = (1.0 / s_min - 1.0) / 2.0
        if sigma > 0.3:
            region = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        rh, rw = region.shape[:2]
        new_w, new_h = max(1, round(rw * s_min)), max(1, round(rh * s_min))
        region = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
        sx, sy = new_w / rw, new_h / rh
        # source coords -> region-resized coords: u = (x - x0) * sx
        to_region = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])
        m = m @ np.vstack([invert_affine(to_region), [0.0, 0.0, 1.0]])
        image = region
    out = cv2.warpAffine(
        np.ascontiguousarray(image), _to_cv_index_matrix(m), (out_w, out_h),
        flags=interpolation, borderMode=border, borderValue=0,
    )
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of size 1
        out = out[..., None]
    return out


def eye_roll_deg(points468: np.ndarray) -> float:
    """Roll of the eye line in degrees, image coordinates (y down).

    Angle of the vector from the image-left eye centre (landmarks 33/133) to the image-right eye
    centre (362/263): 0 for level eyes, positive when the image-right eye is lower (the head is
    tilted clockwise as seen in the image). Rotating the image by this angle counter-clockwise
    levels the eyes.
    """
    p = np.asarray(points468, dtype=np.float64)[:, :2]
    e1 = (p[_R_EYE_OUTER] + p[_R_EYE_INNER]) / 2
    e2 = (p[_L_EYE_INNER] + p[_L_EYE_OUTER]) / 2
    d = e2 - e1
    return math.degrees(math.atan2(d[1], d[0]))


def _rotation(deg: float) -> np.ndarray:
    """2x2 rotation by ``deg`` in image coordinates (y down: positive = clockwise on screen)."""
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def align_crop(
    rgb: np.ndarray,
    points468: np.ndarray,
    size: int = 512,
    *,
    alpha: np.ndarray | None = None,
    margin: float = 2.2,
    face_center_y: float = 0.55,
) -> AlignedCrop:
    """Crop a square ``size`` x ``size`` reference with the head centred and the eyes level.

    ``points468`` are face-mesh landmarks in ``rgb``'s pixel coordinates ([468, 2] or [468, 3]).
    The crop side covers ``margin`` face heights, where the face height is the 3-D distance
    between forehead (10) and chin (152) landmarks when depth is given (so a pitched head does
    not shrink it), else the 2-D one. The face centre (midway between forehead and chin
    vertically, the middle of the face oval horizontally, in the levelled frame) lands at
    ``(size / 2, face_center_y * size)``. Pixels outside the photo are edge-replicated and
    marked False in ``valid``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    pts = np.asarray(points468, dtype=np.float64)
    if pts.shape[0] < 468 or pts.shape[1] not in (2, 3):
        raise ValueError(f"points468 must be [468, 2|3], got {pts.shape}")
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match image {rgb.shape[:2]}")
    h, w = rgb.shape[:2]

    roll = eye_roll_deg(pts)
    level = _rotation(-roll)  # original -> levelled frame (about the origin)
    xy = pts[:, :2]
    lev = xy @ level.T
    height_2d = abs(lev[_CHIN, 1] - lev[_FOREHEAD, 1])
    if pts.shape[1] == 3:
        face_h = max(height_2d, float(np.linalg.norm(pts[_CHIN] - pts[_FOREHEAD])))
    else:
        face_h = height_2d
    oval = lev[list(_FACE_OVAL)]
    face_w = float(oval[:, 0].max() - oval[:, 0].min())
    face_h = max(face_h, 1e-3, 0.8 * face_w)  # guard against degenerate (e.g. flattened) meshes
    centre_lev = np.array([(oval[:, 0].max() + oval[:, 0].min()) / 2, (lev[_CHIN, 1] + lev[_FOREHEAD, 1]) / 2])

    scale = size / (margin * face_h)
    a = scale * level
    t = np.array([size / 2.0, face_center_y * size]) - scale * centre_lev
    matrix = np.concatenate([a, t[:, None]], axis=1)
    inverse = invert_affine(matrix)

    image = warp_affine_aa(rgb, matrix, (size, size), replicate=True, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR)
    alpha_crop = None
    if alpha is not None:
        alpha_crop = warp_affine_aa(alpha, matrix, (size, size), replicate=True, interpolation=cv2.INTER_LINEAR)

    # Validity: does each crop pixel centre map back inside the photo?
    c = np.arange(size, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(c, c)
    sx = inverse[0, 0] * gx + inverse[0, 1] * gy + inverse[0, 2]
    sy = inverse[1, 0] * gx + inverse[1, 1] * gy + inverse[1, 2]
    valid = (sx >= 0) & (sx <= w) & (sy >= 0) & (sy <= h)

    return AlignedCrop(
        image=image, alpha=alpha_crop, valid=valid, matrix=matrix, inverse=inverse,
        roll_deg=float(roll), scale=float(scale), size=int(size),
    )
