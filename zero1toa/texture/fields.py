"""Smooth fields over a texture atlas: low-frequency fills and hair orientation.

Why a module of its own: patch synthesis (:mod:`.synthesis`) needs both, and so does anything
else that fills an atlas smoothly (the completion's last step fills directions without a surface
with :func:`fill_low_frequency`). All functions are wrap-aware in x (the atlas's azimuth wraps)
and deterministic.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

# --------------------------------------------------------------------------------------------
# small helpers: wrap-aware shifts, blurs and distances
# --------------------------------------------------------------------------------------------


def _modes(wrap_x: bool) -> tuple[str, ...]:
    """scipy.ndimage boundary modes for a [H, W] array: rows clamp, columns wrap when asked."""
    return ("nearest", "wrap" if wrap_x else "nearest")


def _gauss(a: np.ndarray, sigma: float, wrap_x: bool) -> np.ndarray:
    """Gaussian blur over the two image axes of a [H, W] or [H, W, C] array."""
    if a.ndim == 2:
        return ndimage.gaussian_filter(a, sigma, mode=_modes(wrap_x), truncate=3.0)
    return ndimage.gaussian_filter(a, (sigma, sigma, 0), mode=_modes(wrap_x) + ("nearest",), truncate=3.0)


def _shift_y(a: np.ndarray, d: int) -> np.ndarray:
    """a[y + d] with the border row replicated (d = +-1)."""
    if d > 0:
        return np.concatenate([a[1:], a[-1:]], 0)
    return np.concatenate([a[:1], a[:-1]], 0)


def _shift_x(a: np.ndarray, d: int, wrap_x: bool) -> np.ndarray:
    """a[:, x + d], wrapping or with the border column replicated (d = +-1)."""
    if wrap_x:
        return np.roll(a, -d, axis=1)
    if d > 0:
        return np.concatenate([a[:, 1:], a[:, -1:]], 1)
    return np.concatenate([a[:, :1], a[:, :-1]], 1)


def _neighbour_mean(a: np.ndarray, wrap_x: bool) -> np.ndarray:
    """Mean of the 4-neighbours (one Jacobi sweep of the Laplace equation)."""
    return 0.25 * (_shift_y(a, -1) + _shift_y(a, 1) + _shift_x(a, -1, wrap_x) + _shift_x(a, 1, wrap_x))


def _resample(a: np.ndarray, shape: tuple[int, int], wrap_x: bool) -> np.ndarray:
    """Bilinear resampling of a [h, w, ...] array to ``shape`` (pixel centres aligned, columns
    wrapping when asked)."""
    h, w = shape
    hc, wc = a.shape[:2]

    def axis(n_out: int, n_in: int, wrap: bool):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        i0 = np.floor(pos).astype(int)
        t = (pos - i0).astype(np.float32)
        i1 = i0 + 1
        if wrap:
            i0, i1 = i0 % n_in, i1 % n_in
        else:
            i0, i1 = np.clip(i0, 0, n_in - 1), np.clip(i1, 0, n_in - 1)
        return i0, i1, t

    y0, y1, ty = axis(h, hc, False)
    x0, x1, tx = axis(w, wc, wrap_x)
    extra = (None,) * (a.ndim - 2)
    tx = tx[(None, slice(None)) + extra]
    ty = ty[(slice(None), None) + extra]
    top = a[y0][:, x0] * (1 - tx) + a[y0][:, x1] * tx
    bot = a[y1][:, x0] * (1 - tx) + a[y1][:, x1] * tx
    return top * (1 - ty) + bot * ty


def _pull_push(values: np.ndarray, weights: np.ndarray, wrap_x: bool, sweeps: int = 12) -> np.ndarray:
    """Fill a [H, W, C] field where ``weights`` [H, W] (in [0, 1]) is low, from where it is high.

    Pull (Gortler et al. 1996): a pyramid of 2x2 weighted averages whose weights are the 2x2 sums
    clamped to 1, so a coarse pixel holding any known pixel counts as known there. Push: from the
    coarsest level down, each level keeps its own value in proportion to its weight and takes the
    upsampled coarser answer for the rest, then a few damped Jacobi sweeps of the Laplace equation
    on the under-determined pixels (cascadic multigrid: the result approaches the harmonic,
    "membrane", interpolant, without pull-push's creases). Pixels of weight 1 come back exactly.
    """
    cs = [values.astype(np.float64)]
    ws = [np.clip(weights.astype(np.float64), 0.0, 1.0)]
    while max(cs[-1].shape[:2]) > 2:
        c, w = cs[-1], ws[-1]
        ph, pw = c.shape[0] % 2, c.shape[1] % 2
        if ph or pw:  # pad to even with weightless pixels
            c = np.pad(c, ((0, ph), (0, pw), (0, 0)), mode="edge")
            w = np.pad(w, ((0, ph), (0, pw)), constant_values=0.0)
        h2, w2 = c.shape[0] // 2, c.shape[1] // 2
        wsum = w.reshape(h2, 2, w2, 2).sum((1, 3))
        csum = (c * w[..., None]).reshape(h2, 2, w2, 2, -1).sum((1, 3))
        cs.append(np.where(wsum[..., None] > 1e-12, csum / np.maximum(wsum, 1e-12)[..., None], 0.0))
        ws.append(np.minimum(1.0, wsum))
    # coarsest level: whatever has no support at all takes the global weighted mean
    c, w = cs[-1], ws[-1]
    total = w.sum()
    mean = (c * w[..., None]).sum((0, 1)) / total if total > 0 else np.zeros(c.shape[2])
    f = w[..., None] * c + (1 - w[..., None]) * mean
    for level in range(len(cs) - 1, -1, -1):
        c, w = cs[level], ws[level][..., None]
        if level < len(cs) - 1:
            hp, wp = 2 * f.shape[0], 2 * f.shape[1]
            up = _resample(f, (hp, wp), wrap_x and wp == c.shape[1])[: c.shape[0], : c.shape[1]]
            f = w * c + (1 - w) * up
        free = w < 1.0
        if free.any():
            anchor = w * c
            for _ in range(sweeps):
                target = anchor + (1 - w) * _neighbour_mean(f, wrap_x)
                f = np.where(free, f + 0.8 * (target - f), f)
    return f


def _distance_to(mask: np.ndarray, wrap_x: bool) -> np.ndarray:
    """[H, W] Euclidean distance (pixels) of every pixel to the nearest True pixel of ``mask``."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    if not wrap_x:
        return ndimage.distance_transform_edt(~mask)
    w = mask.shape[1]
    tiled = np.concatenate([mask, mask, mask], 1)
    return ndimage.distance_transform_edt(~tiled)[:, w : 2 * w]


def _inside_distance(mask: np.ndarray, wrap_x: bool) -> np.ndarray:
    """[H, W] distance of every True pixel of ``mask`` to the nearest False pixel (or the top/bottom
    border; the left/right border too unless ``wrap_x``)."""
    padded = np.pad(mask, ((1, 1), (0, 0) if wrap_x else (1, 1)), constant_values=False)
    if wrap_x:
        w = mask.shape[1]
        tiled = np.concatenate([padded, padded, padded], 1)
        return ndimage.distance_transform_edt(tiled)[1:-1, w : 2 * w]
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def _gray(image: np.ndarray) -> np.ndarray:
    """[H, W] luminance-like grey of a [H, W] or [H, W, C] image."""
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.shape[2] == 3:
        return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return image.astype(np.float64).mean(-1)


def _doubled_angle_tensor(gray: np.ndarray, weights: np.ndarray, sigma: float, wrap_x: bool) -> np.ndarray:
    """[H, W, 2] strand orientation as a doubled-angle vector whose length is the coherence.

    The structure tensor J = G_sigma * (grad grad^T), accumulated by normalised convolution over
    ``weights`` (so unknown pixels do not bleed in). Its dominant eigenvector is the gradient
    direction theta_g; strands run perpendicular, at phi = theta_g + pi/2, and
    (cos 2 phi, sin 2 phi) * coherence = (Jyy - Jxx, -2 Jxy) / trace.
    """
    modes = _modes(wrap_x)
    gx = ndimage.gaussian_filter(gray, 1.0, order=(0, 1), mode=modes)
    gy = ndimage.gaussian_filter(gray, 1.0, order=(1, 0), mode=modes)
    norm = ndimage.gaussian_filter(weights, sigma, mode=modes)
    safe = np.maximum(norm, 1e-6)
    jxx = ndimage.gaussian_filter(weights * gx * gx, sigma, mode=modes) / safe
    jyy = ndimage.gaussian_filter(weights * gy * gy, sigma, mode=modes) / safe
    jxy = ndimage.gaussian_filter(weights * gx * gy, sigma, mode=modes) / safe
    trace = jxx + jyy
    v = np.stack([jyy - jxx, -2.0 * jxy], -1) / np.maximum(trace, 1e-12)[..., None]
    v[norm < 1e-3] = 0.0
    return v


def _angle_of(v: np.ndarray) -> np.ndarray:
    """Strand angle in [0, pi) of a doubled-angle vector field [..., 2]."""
    a = np.mod(0.5 * np.arctan2(v[..., 1], v[..., 0]), np.pi)
    return np.where(a >= np.pi, a - np.pi, a)


def high_frequency_energy(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |Laplacian| of the image's grey over ``mask`` (eroded by one pixel): a sharpness score.

    Used to tell texture from smear: a synthesised region should score comparably to its exemplar,
    a low-frequency fill far below it.
    """
    gray = _gray(image).astype(np.float32)
    lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT))
    if mask is None:
        return float(lap.mean())
    inner = ndimage.binary_erosion(mask, iterations=1, border_value=0)
    if not inner.any():
        inner = mask
    return float(lap[inner].mean()) if inner.any() else 0.0


# --------------------------------------------------------------------------------------------
# 1. low frequency
# --------------------------------------------------------------------------------------------


def fill_low_frequency(image: np.ndarray, known: np.ndarray, wrap_x: bool = False) -> np.ndarray:
    """Smooth (membrane) interpolation of the known pixels' colours into the unknown ones.

    Args:
        image: [H, W, C] (or [H, W]) float; values at unknown pixels are ignored.
        known: [H, W] bool, the pixels whose colour is trusted.
        wrap_x: the image is periodic horizontally (atlas azimuth).

    Returns:
        [H, W, C] (same shape) float32: known pixels bit-exactly as given (for float32 input),
        unknown pixels a smooth interpolation of their surroundings (pull-push with Jacobi sweeps,
        approximately the harmonic / membrane fill). Without any known pixel, zeros.
    """
    image = np.asarray(image)
    known = np.asarray(known, dtype=bool)
    if image.shape[:2] != known.shape:
        raise ValueError(f"image {image.shape} and known {known.shape} differ in size")
    flat = image.ndim == 2
    values = image[..., None] if flat else image
    out = np.zeros(values.shape, np.float32)
    if known.any():
        out = _pull_push(np.where(known[..., None], values, 0.0), known.astype(np.float64), wrap_x).astype(np.float32)
        out[known] = values[known]
    return out[..., 0] if flat else out


# --------------------------------------------------------------------------------------------
# 2. orientation
# --------------------------------------------------------------------------------------------


def orientation_field(
    image: np.ndarray,
    known: np.ndarray,
    prior_angle: np.ndarray | float = math.pi / 2,
    *,
    sigma: float = 3.0,
    prior_falloff: float = 24.0,
    wrap_x: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Strand orientation of ``image`` where it is known, continued smoothly where it is not.

    Args:
        image: [H, W, C] or [H, W] float.
        known: [H, W] bool, where the image's structure can be measured (e.g. the visible hair).
        prior_angle: [H, W] or scalar radians: what to believe far from any known pixel (the
            atlas caller's prior is hair falling down from the crown: ``pi / 2``, vertical).
        sigma: structure-tensor integration scale (pixels); larger is smoother.
        prior_falloff: distance (pixels) over which the extrapolated measurement hands over to
            the prior (weight ``exp(-distance / prior_falloff)``).
        wrap_x: the image is periodic horizontally.

    Returns:
        angle: [H, W] float32 radians in [0, pi), the direction *along* strands (perpendicular
            to the dominant gradient).
        coherence: [H, W] float32 in [0, 1]: how strongly oriented the measurement is (structure
            tensor (l1 - l2) / (l1 + l2)) in known pixels; in unknown ones the length of the
            blended doubled-angle vector (the prior counts as fully coherent).

    Method: the doubled-angle vector field (length = coherence) is measured on known pixels (a
    2-pixel margin is dropped so gradients across the known border do not count), then diffused
    into the unknown region by pull-push (averaging coherence-weighted unit vectors: confident
    measurements dominate, inconsistent ones cancel out), then blended with the prior as
    ``z = w v + (1 - w |v|) u_prior`` with ``w = exp(-d / prior_falloff)``.
    """
    known = np.asarray(known, dtype=bool)
    h, w = known.shape
    prior = np.broadcast_to(np.asarray(prior_angle, dtype=np.float64), (h, w))
    u_prior = np.stack([np.cos(2 * prior), np.sin(2 * prior)], -1)
    if not known.any():
        return _angle_of(u_prior).astype(np.float32), np.ones((h, w), np.float32)
    gray = fill_low_frequency(_gray(np.asarray(image)).astype(np.float32), known, wrap_x).astype(np.float64)
    support = _inside_distance(known, wrap_x) > 2.0
    if support.sum() < 9:
        support = known
    v = _doubled_angle_tensor(gray, support.astype(np.float64), sigma, wrap_x)
    v_ext = _pull_push(v, support.astype(np.float64), wrap_x)
    d = _distance_to(known, wrap_x)[..., None]
    wm = np.exp(-d / max(prior_falloff, 1e-6))
    mag = np.linalg.norm(v_ext, axis=-1, keepdims=True)
    z = wm * v_ext + (1.0 - wm * np.minimum(mag, 1.0)) * u_prior
    z = np.where(known[..., None], v, z)
    angle = _angle_of(z).astype(np.float32)
    coherence = np.clip(np.linalg.norm(z, axis=-1), 0.0, 1.0).astype(np.float32)
    return angle, coherence


# --------------------------------------------------------------------------------------------
# 3. synthesis
# --------------------------------------------------------------------------------------------
