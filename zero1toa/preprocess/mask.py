"""Foreground (person) mask of the aligned reference crop.

The avatar is trained against the reference only where the person is, so the mask must hold
hair and neck and leave the background out. Three sources, best first:

1. ``alpha``: a cut-out photo's own transparency is the user's intent; used as is.
2. ``selfie_segmentation``: MediaPipe's Apache-2.0 person-segmentation model (256 x 256, run on
   LiteRT), present when :mod:`zero1toa.preprocess.assets` could extract it from the wheel.
3. ``grabcut``: OpenCV's GrabCut, weight-free, seeded from the face mesh: the face oval is
   certain foreground, an enlarged head-and-neck region probable foreground, a band along the
   image border (except under the neck) certain background.

Model and GrabCut masks are cleaned the same way: keep the connected component holding the face,
fill holes (an eye or a dark mouth must not become background), feather the edge slightly.
"""

from __future__ import annotations

import functools
import math
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["foreground_mask", "selfie_probabilities", "grabcut_probabilities", "clean_mask", "METHODS"]

METHODS = ("alpha", "selfie_segmentation", "grabcut")
_FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
_FOREHEAD, _CHIN = 10, 152
_GRABCUT_WORK = 256  # GrabCut runs at this resolution: 5 iterations take ~0.1 s instead of ~1 s at 512
_lock = threading.Lock()


def foreground_mask(
    crop_rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    points468_in_crop: np.ndarray | None = None,
    *,
    method: str = "auto",
    selfie_model: Path | None = None,
    feather_px: float = 1.0,
) -> tuple[np.ndarray, str]:
    """Foreground mask of ``crop_rgb`` (uint8 [H, W, 3]) -> (mask float32 [H, W] in [0, 1], method).

    ``method="auto"`` picks the first available of :data:`METHODS`: ``alpha`` (when given and
    not opaque everywhere), the selfie model (``selfie_model`` or the project's extracted asset),
    else GrabCut. Naming a method forces it. ``points468_in_crop`` (mesh landmarks in crop pixels)
    seed GrabCut and choose which component is the person; without them the crop centre is
    taken as the face.
    """
    if crop_rgb.ndim != 3 or crop_rgb.shape[2] != 3 or crop_rgb.dtype != np.uint8:
        raise ValueError(f"crop_rgb must be uint8 [H, W, 3], got {crop_rgb.dtype} {crop_rgb.shape}")
    h, w = crop_rgb.shape[:2]
    if method not in ("auto",) + METHODS:
        raise ValueError(f"unknown mask method {method!r}; choose one of {('auto',) + METHODS}")

    usable_alpha = alpha is not None and int(np.asarray(alpha).min()) < 255
    if method == "alpha" or (method == "auto" and usable_alpha):
        if alpha is None:
            raise ValueError("mask method 'alpha' needs the image's alpha channel")
        if alpha.shape != (h, w):
            raise ValueError(f"alpha shape {alpha.shape} does not match crop {(h, w)}")
        a = np.asarray(alpha)
        scale = 255.0 if a.dtype == np.uint8 else 1.0
        return np.clip(a.astype(np.float32) / scale, 0.0, 1.0), "alpha"

    pts = None if points468_in_crop is None else np.asarray(points468_in_crop, dtype=np.float64)[:, :2]
    if method in ("auto", "selfie_segmentation"):
        model = selfie_model
        if model is None:
            from zero1toa.preprocess.assets import selfie_model_path

            model = selfie_model_path()
        if model is not None:
            prob = selfie_probabilities(crop_rgb, Path(model))
            return clean_mask(prob, pts, feather_px=feather_px), "selfie_segmentation"
        if method == "selfie_segmentation":
            raise FileNotFoundError(
                "the selfie-segmentation model is not available; run `python -m zero1toa.preprocess.assets` "
                "to extract it from the mediapipe wheel, or use method='grabcut'"
            )
    prob = grabcut_probabilities(crop_rgb, pts)
    return clean_mask(prob, pts, feather_px=feather_px), "grabcut"


# ----------------------------------------------------------------------------------------------
# Selfie segmentation


@functools.lru_cache(maxsize=2)
def _selfie_interpreter(path: str) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=2)
    it.allocate_tensors()
    return it


def selfie_probabilities(rgb: np.ndarray, model: Path) -> np.ndarray:
    """Person probability float32 [H, W] from MediaPipe's selfie model (input 256 x 256, [0, 1])."""
    h, w = rgb.shape[:2]
    with _lock:
        it = _selfie_interpreter(str(model))
        inp = it.get_input_details()[0]
        in_h, in_w = int(inp["shape"][1]), int(inp["shape"][2])
        interp = cv2.INTER_AREA if (h > in_h or w > in_w) else cv2.INTER_LINEAR
        x = cv2.resize(rgb, (in_w, in_h), interpolation=interp).astype(np.float32) / 255.0
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        out = np.array(it.get_tensor(it.get_output_details()[0]["index"]))[0, :, :, 0]
    return np.clip(cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# GrabCut


def _face_geometry(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(oval [36, 2], centre [2], face height, face width) in crop pixels."""
    oval = pts[list(_FACE_OVAL)]
    centre = oval.mean(axis=0)
    fh = float(np.linalg.norm(pts[_CHIN] - pts[_FOREHEAD]))
    fw = float(oval[:, 0].max() - oval[:, 0].min())
    return oval, centre, max(fh, 1.0), max(fw, 1.0)


def grabcut_seeds(shape: tuple[int, int], pts: np.ndarray | None) -> np.ndarray:
    """GrabCut label image uint8 [H, W] (cv2.GC_*) seeded from the face mesh (crop pixels).

    Certain foreground: the face oval shrunk 10 % towards its centre. Probable foreground: an
    ellipse around the head (1.9 face widths x 1.8 face heights, raised by 0.15 face heights for
    the hair) and the neck (0.75 face widths wide, from the chin down to the image bottom) plus a
    shoulder trapezoid below it. Certain background: a border band (4 % of the side) on top,
    left, right, and along the bottom outside the neck/shoulder region. All else probable
    background. Without landmarks: a centred ellipse is probable foreground.
    """
    h, w = shape
    pts = None if pts is None else np.asarray(pts, dtype=np.float64)[:, :2]
    labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    fg_prob = np.zeros((h, w), np.uint8)
    if pts is None:
        cv2.ellipse(fg_prob, (w // 2, int(h * 0.55)), (int(w * 0.3), int(h * 0.4)), 0, 0, 360, 1, -1)
        sure_fg = np.zeros((h, w), np.uint8)
        cv2.ellipse(sure_fg, (w // 2, int(h * 0.5)), (int(w * 0.08), int(h * 0.1)), 0, 0, 360, 1, -1)
    else:
        oval, centre, fh, fw = _face_geometry(pts)
        head_c = centre + np.array([0.0, -0.15 * fh])
        cv2.ellipse(fg_prob, tuple(int(round(v)) for v in head_c), (int(0.95 * fw), int(0.9 * fh)), 0, 0, 360, 1, -1)
        chin = pts[_CHIN]
        neck_half = 0.375 * fw
        cv2.rectangle(fg_prob, (int(chin[0] - neck_half), int(chin[1] - 0.2 * fh)), (int(chin[0] + neck_half), h), 1, -1)
        shoulder_top = chin[1] + 0.45 * fh
        if shoulder_top < h:
            trap = np.array([
                [chin[0] - neck_half, shoulder_top], [chin[0] + neck_half, shoulder_top],
                [chin[0] + 2.0 * fw, h + 0.6 * fh], [chin[0] - 2.0 * fw, h + 0.6 * fh],
            ]).round().astype(np.int32)
            cv2.fillPoly(fg_prob, [trap], 1)
        sure_fg = np.zeros((h, w), np.uint8)
        shrunk = centre + 0.9 * (oval - centre)
        cv2.fillConvexPoly(sure_fg, cv2.convexHull(shrunk.round().astype(np.int32)), 1)
    labels[fg_prob > 0] = cv2.GC_PR_FGD
    band = max(2, int(round(0.04 * min(h, w))))
    border = np.zeros((h, w), bool)
    border[:band] = True
    border[:, :band] = True
    border[:, -band:] = True
    border[-band:] = True
    border &= fg_prob == 0  # the neck and shoulders may reach the bottom (and sides) of the crop
    labels[border] = cv2.GC_BGD
    labels[sure_fg > 0] = cv2.GC_FGD
    return labels


def grabcut_probabilities(rgb: np.ndarray, pts: np.ndarray | None, iterations: int = 5) -> np.ndarray:
    """Foreground float32 [H, W] (0/1, linearly upsampled) from GrabCut seeded by :func:`grabcut_seeds`.

    GrabCut runs on a copy downscaled to 256 px (area averaging) for speed; its colour models
    are seeded deterministically (``cv2.setRNGSeed``), so repeated calls agree.
    """
    h, w = rgb.shape[:2]
    pts = None if pts is None else np.asarray(pts, dtype=np.float64)[:, :2]
    k = min(1.0, _GRABCUT_WORK / max(h, w))
    small_w, small_h = max(8, round(w * k)), max(8, round(h * k))
    sx, sy = small_w / w, small_h / h
    small = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA) if k < 1 else rgb.copy()
    spts = None if pts is None else (pts + 0.5) * np.array([sx, sy]) - 0.5
    labels = grabcut_seeds((small_h, small_w), spts)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    return np.clip(cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Clean-up


def clean_mask(prob: np.ndarray, pts: np.ndarray | None = None, *, threshold: float = 0.5, feather_px: float = 1.0) -> np.ndarray:
    """Keep the person: the component containing the face, holes filled, edge feathered.

    The face component is the one under the face centre (centroid of the face oval, or the
    image centre without landmarks); if that pixel is background, the component overlapping
    the face oval most, else the largest. The face oval itself is always kept. Returns float32
    [H, W] in [0, 1].
    """
    h, w = prob.shape
    pts = None if pts is None else np.asarray(pts, dtype=np.float64)[:, :2]
    binary = (prob >= threshold).astype(np.uint8)
    face = np.zeros((h, w), np.uint8)
    if pts is not None:
        oval, centre, _, _ = _face_geometry(pts)
        cv2.fillConvexPoly(face, cv2.convexHull(oval.round().astype(np.int32)), 1)
    else:
        centre = np.array([w / 2.0, h / 2.0])
    n, comp = cv2.connectedComponents(binary, connectivity=8)
    if n > 1:
        cx = int(np.clip(math.floor(centre[0]), 0, w - 1))
        cy = int(np.clip(math.floor(centre[1]), 0, h - 1))
        label = int(comp[cy, cx])
        if label == 0 and face.any():
            counts = np.bincount(comp[face > 0], minlength=n)
            counts[0] = 0
            label = int(counts.argmax()) if counts.max() > 0 else 0
        if label == 0:
            sizes = np.bincount(comp.ravel(), minlength=n)
            sizes[0] = 0
            label = int(sizes.argmax())
        binary = (comp == label).astype(np.uint8)
    binary |= face
    filled = ndimage.binary_fill_holes(binary > 0).astype(np.float32)
    if feather_px > 0:
        filled = cv2.GaussianBlur(filled, (0, 0), sigmaX=feather_px, sigmaY=feather_px, borderType=cv2.BORDER_REPLICATE)
    return np.clip(filled, 0.0, 1.0).astype(np.float32)
