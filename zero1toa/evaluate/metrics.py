"""Image, landmark and video metrics on plain tensors/arrays (no avatar, no files).

Everything here is a pure function of its inputs so each metric can be tested against a hand
computation, and :mod:`zero1toa.evaluate.run` only decides *what* to feed them:

- :func:`psnr`, :func:`ssim`: reference fidelity, optionally inside a mask (the portrait's
  foreground), because the background of the photo is not part of the avatar.
- :func:`normalised_landmark_error`: expression accuracy as face-alignment papers report it,
  the mean point-to-point distance divided by the inter-ocular distance (outer eye corners).
- :func:`detection_rate`: how often the shipped face detector still sees a face in a render.
- :func:`temporal_change`, :func:`temporal_jitter`: a flicker/jitter detector for rendered
  sequences (renders of a smooth input should change smoothly).
"""

from __future__ import annotations


import math
from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

#: MediaPipe face-mesh indices used by the expression metrics (subject's point of view).
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14


def _batched(image: Tensor) -> Tensor:
    """[3, H, W] or [B, 3, H, W] -> [B, C, H, W] float."""
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4:
        raise ValueError(f"expected an image [C, H, W] or a batch [B, C, H, W], got shape {tuple(image.shape)}")
    return image.float()


def _mask_batched(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """[H, W], [1, H, W] or [B, 1, H, W] -> [B, 1, H, W] in [0, 1] (broadcastable to ``like``)."""
    if mask is None:
        return None
    m = mask.float()
    while m.dim() < 4:
        m = m[None]
    if m.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask size {tuple(m.shape[-2:])} does not match image size {tuple(like.shape[-2:])}")
    return m.to(like.device)


def area_downsample(image: Tensor, size: int) -> Tensor:
    """Resize [.., C, H, W] to ``size`` x ``size`` by area averaging (box filter: no aliasing,
    the mean intensity is kept). Upsampling falls back to bilinear."""
    x = _batched(image) if image.dim() == 3 else image.float()
    if x.shape[-1] == size and x.shape[-2] == size:
        out = x
    elif x.shape[-1] >= size and x.shape[-2] >= size:
        out = F.interpolate(x, size=(size, size), mode="area")
    else:
        out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return out[0] if image.dim() == 3 else out


def mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Mean squared error over pixels (and channels); only where ``mask`` > 0, weighted by it."""
    a, b = _batched(a), _batched(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    # reductions in float64: a float32 sum's rounding depends on how many threads split it, and
    # a metric must not change with the machine's thread count
    err = ((a - b) ** 2).double()
    m = _mask_batched(mask, a)
    if m is None:
        return float(err.mean())
    w = m.double().expand_as(err)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("the mask selects no pixels")
    return float((err * w).sum() / total)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(max^2 / MSE)`` (inf for identical images)."""
    e = mse(a, b, mask)
    return math.inf if e == 0 else 10.0 * math.log10(max_val**2 / e)


def ssim(a: Tensor, b: Tensor, mask: Tensor | None = None, window_size: int = 11, max_val: float = 1.0) -> float:
    """Structural similarity (kornia's Gaussian-window SSIM map), averaged inside ``mask``."""
    from kornia.metrics import ssim as ssim_map

    a, b = _batched(a), _batched(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    smap = ssim_map(a, b, window_size, max_val=max_val).double()  # [B, C, H, W]; float64 reductions (see mse)
    m = _mask_batched(mask, a)
    if m is None:
        return float(smap.mean())
    w = m.double().expand_as(smap)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("the mask selects no pixels")
    return float((smap * w).sum() / total)


# ----------------------------------------------------------------------------- landmarks


def interocular_distance(points: np.ndarray, right: int, left: int) -> float:
    """Distance between two rows of ``points`` [N, >=2] (the outer eye corners)."""
    p = np.asarray(points, dtype=np.float64)
    return float(np.linalg.norm(p[left, :2] - p[right, :2]))


def normalised_landmark_error(pred: np.ndarray, target: np.ndarray, right: int, left: int) -> float:
    """Mean 2D distance between corresponding points divided by the target's inter-ocular
    distance (rows ``right``/``left`` of ``target``). 0 for identical sets; a uniform shift
    by d pixels gives d / IOD."""
    p, t = np.asarray(pred, np.float64)[:, :2], np.asarray(target, np.float64)[:, :2]
    if p.shape != t.shape:
        raise ValueError(f"landmark sets differ in shape: {p.shape} vs {t.shape}")
    iod = interocular_distance(t, right, left)
    if iod <= 0:
        raise ValueError("the inter-ocular distance of the target landmarks is zero")
    return float(np.linalg.norm(p - t, axis=1).mean() / iod)


def lip_gap(points: np.ndarray, upper: int, lower: int, right: int, left: int) -> float:
    """Distance between the inner lips normalised by the inter-ocular distance (mouth opening)."""
    p = np.asarray(points, np.float64)
    return float(np.linalg.norm(p[upper, :2] - p[lower, :2]) / interocular_distance(p, right, left))


from ..preprocess.errors import quiet_photo_warnings  # noqa: E402,F401  (re-exported)


def face_found(rgb: np.ndarray, runner=None, min_face_px: float = 0.0) -> bool:
    """Whether :func:`zero1toa.preprocess.facemesh.find_face` finds (and meshes) a face."""
    from zero1toa.preprocess.errors import PreprocessError
    from zero1toa.preprocess.facemesh import find_face

    try:
        with quiet_photo_warnings():
            find_face(np.ascontiguousarray(rgb), runner=runner, min_face_px=min_face_px, with_iris=False)
    except PreprocessError:
        return False
    return True


def detection_rate(images: Sequence[np.ndarray], runner=None, min_face_px: float = 0.0) -> tuple[float, list[bool]]:
    """Fraction of uint8 RGB images [H, W, 3] in which a face is found, and the per-image flags."""
    flags = [face_found(img, runner, min_face_px) for img in images]
    return (float(np.mean(flags)) if flags else float("nan")), flags


# ----------------------------------------------------------------------------- video


def _video(frames: Tensor) -> Tensor:
    if frames.dim() != 4 or frames.shape[0] < 2:
        raise ValueError(f"expected at least 2 frames [F, C, H, W], got shape {tuple(frames.shape)}")
    return frames.double()  # float64 reductions: the same value for any thread count


def frame_changes(frames: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute change between consecutive frames: [F-1] (intensity units per frame step)."""
    v = _video(frames)
    d = (v[1:] - v[:-1]).abs()  # [F-1, C, H, W]
    if mask is None:
        return d.mean(dim=(1, 2, 3))
    m = _mask_batched(mask, v).expand_as(d[:1])
    return (d * m).sum(dim=(1, 2, 3)) / m.sum().clamp_min(1e-12)


def temporal_change(frames: Tensor, mask: Tensor | None = None) -> float:
    """Mean absolute frame-to-frame change per frame step (0 for a still video; the slope for a
    linear intensity ramp)."""
    return float(frame_changes(frames, mask).mean())


def temporal_jitter(frames: Tensor, eps: float = 1e-12) -> float:
    """Mean |second difference| / mean |first difference| of the frames.

    A smooth (constant-velocity) sequence gives ~0, flicker that reverses every frame gives 2:
    scale-free, so it flags jitter whatever the amount of motion. 0 for a still video.
    """
    v = _video(frames)
    if v.shape[0] < 3:
        return 0.0
    first = (v[1:] - v[:-1]).abs().mean()
    second = (v[2:] - 2 * v[1:-1] + v[:-2]).abs().mean()
    return 0.0 if float(first) <= eps else float(second / first)


def max_abs_difference(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference between two equally shaped tensors (determinism check)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


__all__ = [
    "area_downsample",
    "mse",
    "psnr",
    "ssim",
    "interocular_distance",
    "normalised_landmark_error",
    "lip_gap",
    "face_found",
    "detection_rate",
    "frame_changes",
    "temporal_change",
    "temporal_jitter",
    "max_abs_difference",
    "RIGHT_EYE_OUTER",
    "LEFT_EYE_OUTER",
    "UPPER_LIP_INNER",
    "LOWER_LIP_INNER",
]
