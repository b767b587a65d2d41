"""Exemplar-based texture synthesis for the unseen part of the head's texture atlas.

Why: the photo shows roughly the front third of the head. The rest of the atlas (back and sides
of the hair, the nape, the clothes) needs *some* appearance, and a flat smear of the mean colour
reads as a plastic helmet. Without learned priors the classic answer is non-parametric texture
synthesis: grow the unseen region out of patches of the seen one, so strands and their shading
continue. This module is weight-free, pure numpy / scipy / OpenCV, and deterministic for a seed.

Conventions (every function):

* images are float arrays ``[H, W, C]`` (``C`` = 3 for colour), rows top to bottom;
* masks are bool ``[H, W]``;
* an *angle* is a strand direction in radians, measured from the +x axis (columns, to the right)
  towards +y (rows, downwards), taken modulo pi (a strand has no head or tail): ``0`` is a
  horizontal strand, ``pi / 2`` a vertical one ("hair falls down from the crown" in the atlas);
* ``wrap_x``: the image is periodic horizontally (the atlas' azimuth), so column ``W - 1`` is
  the left neighbour of column ``0``; every filter, distance and patch window then wraps.

The pieces (1 and 2 live in :mod:`.fields` and are re-exported here):

1. :func:`fill_low_frequency` -- membrane (harmonic) interpolation of known colours into the
   unknown pixels, solved by pull-push on an image pyramid with a few Jacobi sweeps per level.
2. :func:`orientation_field` -- structure-tensor strand orientation of the known pixels,
   extrapolated by diffusing the doubled-angle vector field (so opposite directions do not
   cancel) and blended towards a prior orientation with distance from the known region.
3. :func:`synthesize` -- low-frequency layer (item 1, so the shading continues smoothly; or the
   same synthesis at 1/4 resolution for shading with clumps) plus a detail layer grown by
   patch-based synthesis (image quilting, Efros & Freeman 2001: overlap SSD matching, a random
   pick among the k best, minimum-error boundary cuts, onion-peel order from the known region).
   Exemplar patches are canonicalised by their own strand angle and rotated into orientation bins,
   so the synthesised strands follow the requested orientation field; seams across strands are
   bridged by a short smoothing along the field.

Limits: quilting copies exemplar patches, so it cannot invent structure larger than about two
patches (long strands over the whole back of the head are suggested by the orientation field and
the along-strand smoothing, not synthesised); seams between patches stay faintly visible on
strongly non-stationary exemplars (wavy, unevenly lit hair), and where two growth fronts meet.
"""

from __future__ import annotations

import logging
import math
import warnings

import cv2
import numpy as np
from scipy import ndimage

from .fields import (  # noqa: F401  (high_frequency_energy and orientation_field are re-exported)
    _angle_of,
    _distance_to,
    _doubled_angle_tensor,
    _gauss,
    _gray,
    _inside_distance,
    _resample,
    fill_low_frequency,
    high_frequency_energy,
    orientation_field,
)

log = logging.getLogger(__name__)

__all__ = [
    "fill_low_frequency",
    "orientation_field",
    "synthesize",
    "high_frequency_energy",
    "SynthesisFallbackWarning",
]


class SynthesisFallbackWarning(RuntimeWarning):
    """Patch synthesis was not possible (exemplar too small); the low-frequency fill was returned."""


def _grid(n: int, p: int, step: int, wrap: bool) -> np.ndarray:
    """Window start positions along one axis: windows of size p, about ``step`` apart."""
    if wrap:
        count = max(1, math.ceil(n / step))
        return np.round(np.arange(count) * n / count).astype(int)
    if n <= p:
        return np.zeros(1, int)
    count = math.ceil((n - p) / step) + 1
    return np.round(np.linspace(0, n - p, count)).astype(int)


def _cut_path(err: np.ndarray) -> np.ndarray:
    """Minimum-cost top-to-bottom path through ``err`` [n, m] (8-connected): column per row.

    Plain Python on lists: the strips are a few pixels wide, where numpy's per-call overhead
    would dominate.
    """
    rows = err.tolist()
    m = len(rows[0])
    cost = list(rows[0])
    moves = []
    for r in range(1, len(rows)):
        row = rows[r]
        new, move = [0.0] * m, [0] * m
        for c in range(m):
            best, step = cost[c], 0
            if c > 0 and cost[c - 1] < best:
                best, step = cost[c - 1], -1
            if c + 1 < m and cost[c + 1] < best:
                best, step = cost[c + 1], 1
            new[c], move[c] = best + row[c], step
        cost = new
        moves.append(move)
    c = min(range(m), key=cost.__getitem__)
    path = [c]
    for move in reversed(moves):
        c += move[c]
        path.append(c)
    return np.asarray(path[::-1])


def _new_side(err: np.ndarray, old: np.ndarray, strip: int) -> np.ndarray:
    """[p, p] bool: which pixels of the window should take the new patch, given the overlap error
    ``err`` [p, p] and the previously synthesised pixels ``old`` [p, p]: a minimum-error boundary
    cut through each of the four rim strips (of width ``strip``) that holds old pixels, the old
    content kept on the outer side of each cut (image quilting, Efros & Freeman 2001)."""
    p = err.shape[0]
    side = np.ones((p, p), bool)
    cols = np.arange(strip)
    if old[:, :strip].any():  # left
        path = _cut_path(err[:, :strip])
        side[:, :strip] &= cols[None, :] >= path[:, None]
    if old[:, -strip:].any():  # right
        path = _cut_path(err[:, -strip:][:, ::-1])
        side[:, -strip:] &= (cols[None, :] >= path[:, None])[:, ::-1]
    if old[:strip, :].any():  # top
        path = _cut_path(err[:strip, :].T)
        side[:strip, :] &= (cols[None, :] >= path[:, None]).T
    if old[-strip:, :].any():  # bottom
        path = _cut_path(err[-strip:, :][::-1, :].T)
        side[-strip:, :] &= (cols[None, :] >= path[:, None]).T[::-1, :]
    return side


def _smooth_along(field: np.ndarray, angle: np.ndarray, half_length: float, wrap_x: bool) -> np.ndarray:
    """[H, W, C] ``field`` averaged along the direction ``angle`` [H, W] (Gaussian weights over
    +-``half_length`` pixels, samples one pixel apart, bilinear): a straight-line LIC."""
    steps = int(math.ceil(half_length))
    if steps < 1:
        return field
    h, w = angle.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    src = np.ascontiguousarray(field, dtype=np.float32)
    sigma = max(half_length / 2.0, 0.5)
    border = cv2.BORDER_WRAP if wrap_x else cv2.BORDER_REPLICATE
    total = src.copy()
    weight = 1.0
    for k in range(1, steps + 1):
        wk = math.exp(-0.5 * (k / sigma) ** 2)
        for sgn in (-1.0, 1.0):
            mx, my = xs + sgn * k * dx, np.clip(ys + sgn * k * dy, 0, h - 1)
            total += wk * cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=border)
        weight += 2.0 * wk
    return total / weight


class _PatchBank:
    """Exemplar detail patches, each rotated (about its centre) so that its own strand angle
    becomes a bin's angle; built lazily per orientation bin.

    ``rows[k]`` is [N, p * p * 3] float32 (flattened patches of bin k) and ``sq[k]`` [N, p * p]
    their squared norms per pixel, so a masked SSD is two matrix-vector products.
    """

    def __init__(self, detail, centres, phi, p, bins, rotate, wrap_x):
        self.detail = np.ascontiguousarray(detail, dtype=np.float32)  # [H, W, 3]
        self.centres = centres  # [N, 2] (cy, cx) float, window centres
        self.phi = phi  # [N] exemplar strand angles
        self.p = p
        self.bins = bins if rotate else 1
        self.rotate = rotate
        self.wrap_x = wrap_x
        self.rows: dict[int, np.ndarray] = {}
        self.sq: dict[int, np.ndarray] = {}

    def bin_of(self, angle: float) -> int:
        if not self.rotate:
            return 0
        return int(round(angle / (math.pi / self.bins))) % self.bins

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self.rows:
            self._build(k)
        return self.rows[k], self.sq[k]

    def _build(self, k: int) -> None:
        p, n = self.p, len(self.phi)
        offs = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        u, v = np.meshgrid(offs, offs)  # u: x offset, v: y offset, [p, p]
        if self.rotate:
            delta = np.mod(k * math.pi / self.bins - self.phi + math.pi / 2, math.pi) - math.pi / 2
        else:
            delta = np.zeros(n)
        c, s = np.cos(delta)[:, None, None], np.sin(delta)[:, None, None]
        # the output pixel at offset o samples the exemplar at centre + R(-delta) o, which turns
        # the exemplar's strands (angle phi) by +delta onto the bin's angle
        mx = self.centres[:, 1, None, None] + c * u + s * v
        my = self.centres[:, 0, None, None] - s * u + c * v
        border = cv2.BORDER_WRAP if self.wrap_x else cv2.BORDER_REFLECT
        interp = cv2.INTER_CUBIC if self.rotate else cv2.INTER_NEAREST
        out = np.empty((n, p, p, 3), np.float32)
        chunk = max(1, 30000 // p)
        for i in range(0, n, chunk):
            j = min(n, i + chunk)
            mxc = mx[i:j].reshape(-1, p).astype(np.float32)
            myc = my[i:j].reshape(-1, p).astype(np.float32)
            out[i:j] = cv2.remap(self.detail, mxc, myc, interp, borderMode=border).reshape(j - i, p, p, 3)
        self.rows[k] = out.reshape(n, -1)
        self.sq[k] = (out * out).sum(-1).reshape(n, -1)


def _coarse_shading(img, known, target, ex, angle, p, seed, wrap_x, sigma_lf, *rest) -> np.ndarray | None:
    """[H, W, 3] low-frequency layer for the fill with texture-like shading (hair clumps), or None.

    The same synthesis run on a 4x smaller copy (so its patches span 2 patches of the full
    resolution), upsampled and blurred like the low-frequency layer: where the plain
    low-frequency layer is a flat membrane far from the known region, this one varies the way the
    exemplar's shading does. None when the small copy holds too few exemplar patches.
    """
    (k_best, tolerance, bins, max_candidates, coherent_quantile, reuse_penalty, flow_smoothing, levels) = rest
    h, w = known.shape
    f = 4
    hc, wc = max(1, round(h / f)), max(1, round(w / f))
    if min(hc, wc) < 8:
        return None
    size = (wc, hc)
    kf = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    img_c = cv2.resize(img * known[..., None], size, interpolation=cv2.INTER_AREA) / np.maximum(kf, 1e-6)[..., None]
    known_c = kf > 0.99
    ex_c = cv2.resize(ex.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
    fill_c = (cv2.resize(target.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0) & ~known_c
    angle_c = None
    if angle is not None:
        a = np.broadcast_to(np.asarray(angle, dtype=np.float64), (h, w))
        v = np.stack([np.cos(2 * a), np.sin(2 * a)], -1).astype(np.float32)
        angle_c = _angle_of(cv2.resize(v, size, interpolation=cv2.INTER_AREA))
    if ex_c.sum() < 4 * p or not fill_c.any():
        return None
    img_c = np.clip(np.where(known_c[..., None], img_c, 0.0), 0.0, 1.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SynthesisFallbackWarning)
        small, info = synthesize(
            img_c, known_c, fill_c, angle_c, patch=max(5, p // 2), seed=seed + 7919, wrap_x=wrap_x, exemplar=ex_c,
            k_best=k_best, tolerance=tolerance, bins=bins, max_candidates=max_candidates,
            coherent_quantile=coherent_quantile, reuse_penalty=reuse_penalty, colour_match=False,
            flow_smoothing=flow_smoothing, levels=levels, return_info=True,
        )
    if info.get("fallback") or "patches" not in info:
        return None
    up = _resample(small, (h, w), wrap_x)
    return _gauss(up, sigma_lf, wrap_x).astype(np.float32)


def _low_frequency_fallback(image, fill, low, reason) -> np.ndarray:
    msg = f"texture synthesis fell back to the low-frequency fill: {reason}"
    log.debug(msg)
    warnings.warn(msg, SynthesisFallbackWarning, stacklevel=4)  # the caller of synthesize
    out = np.array(image, copy=True)
    out[fill] = np.clip(low[fill], 0.0, 1.0)
    return out


def synthesize(
    image: np.ndarray,
    known: np.ndarray,
    fill: np.ndarray,
    angle: np.ndarray | float | None = None,
    *,
    patch: int = 16,
    overlap: int | None = None,
    seed: int = 0,
    wrap_x: bool = False,
    exemplar: np.ndarray | None = None,
    k_best: int = 5,
    tolerance: float = 0.15,
    bins: int = 12,
    max_candidates: int = 1500,
    coherent_quantile: float = 0.4,
    reuse_penalty: float = 0.1,
    colour_match: bool = True,
    low_sigma: float | None = None,
    flow_smoothing: float = 0.25,
    levels: int = 2,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Fill ``fill`` pixels with texture grown from the exemplar, following an orientation field.

    Args:
        image: [H, W, 3] float in [0, 1]; only ``known`` pixels are read.
        known: [H, W] bool: trusted pixels. They constrain the synthesis (new patches must agree
            with known pixels they overlap) and are never overwritten.
        fill: [H, W] bool: pixels to synthesise (``fill & known`` is ignored).
        angle: [H, W] (or scalar) target strand angle in radians (see the module conventions),
            e.g. from :func:`orientation_field`; ``None`` copies exemplar patches unrotated (plain
            quilting, the exemplar's own orientation).
        patch: patch side in pixels (clamped to the image); it should cover a few strand widths.
        overlap: overlap between neighbouring patches (default ``patch // 3``).
        seed: random seed; the result is a deterministic function of the inputs and the seed.
        wrap_x: the image is periodic horizontally (atlas azimuth): patches and filters wrap.
        exemplar: [H, W] bool: where patches (and the low-frequency colour) are drawn from;
            default ``known``. Only its known pixels are used.
        k_best: pick at random among this many best-matching patches (variety), ...
        tolerance: ... as long as their overlap SSD is within ``(1 + tolerance)`` of the best.
        bins: number of orientation bins the patch bank is pre-rotated into (over pi).
        max_candidates: exemplar patch positions kept (a random subset when there are more);
            the search cost is linear in it.
        coherent_quantile: with rotation, the least coherent exemplar patches (this fraction)
            are not used: their strand angle, hence their rotation, is noise.
        reuse_penalty: each earlier use of a patch (or of one whose source overlaps it by more
            than about half) adds this times the mean per-pixel detail energy (times the overlap
            size) to its SSD, so one well-matching exemplar spot does not tile a whole region in a
            visible lattice.
        colour_match: match the fill's per-channel mean (ramped in with distance from the known
            region, so the shading still continues at the border) and its detail layer's
            per-channel standard deviation to the exemplar's.
        low_sigma: scale (pixels) separating the low-frequency layer from the detail layer
            (default ``patch / 2``).
        flow_smoothing: with ``angle``, the synthesised detail near the patch seams is averaged
            along the strand direction over about +-(this * patch) pixels (a short line integral
            convolution): it joins strands across the seams that cut through them. 0 disables it.
        levels: 2 also synthesises the fill's low-frequency shading (clumps, light and dark
            strands at patch scale and above) by running the synthesis on a 4x smaller copy
            first; 1 keeps the smooth membrane fill as the low-frequency layer.
        return_info: also return a dict of what happened: ``fallback`` (None or the reason),
            ``patches`` placed, ``candidates`` (exemplar patches searched), ``rotated``,
            ``coarse_shading``, ``detail_gain``, ``match_error`` (mean overlap SSD per pixel of
            the chosen patches over the exemplar's mean detail energy: 0 perfect, ~2 unrelated)
            and ``max_reuse`` (most uses of one exemplar patch).

    Returns:
        [H, W, 3] float array (the input's dtype): a copy of ``image`` whose ``fill & ~known``
        pixels are synthesised (clipped to [0, 1]); every other pixel is bit-exactly unchanged.
        With too small an exemplar, a :class:`SynthesisFallbackWarning` is issued and the fill
        gets the low-frequency layer only.

    Method:
        * low-frequency layer ``L``: the exemplar's colours blurred by normalised convolution
          (``low_sigma``) and extended by :func:`fill_low_frequency` (smooth shading); with
          ``levels=2`` the fill's part of it comes from the same synthesis run at 1/4 resolution
          instead (clumps and shading at scales above the patch), blurred alike;
        * detail layer ``D = image - blur(image)`` on known pixels; in the fill it is grown
          patch by patch on a grid (spacing ``patch - overlap``), the next patch always being the
          one whose window is most already-determined (onion peel from the known region). Each
          patch is the best overlap match (SSD over all determined pixels in its window: known or
          already synthesised, plus the reuse penalty) among the exemplar patches rotated to the
          window's target angle, chosen at random among the ``k_best``. It is pasted through
          minimum-error boundary cuts in the overlap strips with a two-band blend (fine detail
          switches at the cut, coarse brightness fades over the overlap); finally the detail near
          the seams is smoothed along the strand direction (``flow_smoothing``);
        * result ``L + g * D`` with the colour matching above.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    h, w = image.shape[:2]
    known = np.asarray(known, dtype=bool)
    fill = np.asarray(fill, dtype=bool)
    if known.shape != (h, w) or fill.shape != (h, w):
        raise ValueError("known and fill must be [H, W] like the image")
    ex = known.copy() if exemplar is None else (np.asarray(exemplar, dtype=bool) & known)
    target = fill & ~known
    info: dict = {"fill": int(target.sum()), "exemplar": int(ex.sum()), "fallback": None}
    out = np.array(image, copy=True)
    if not target.any():
        return (out, info) if return_info else out

    img = np.where(known[..., None], image, 0.0).astype(np.float32)
    p = int(max(1, min(patch, h, w)))
    sigma_lf = float(low_sigma) if low_sigma is not None else max(1.0, p / 2.0)

    # ---- low-frequency layer from the exemplar (falls back on all known pixels, then nothing) ----
    lf_source = ex if ex.any() else known
    if not lf_source.any():
        raise ValueError("synthesize needs at least one known pixel")
    wsrc = _gauss(lf_source.astype(np.float32), sigma_lf, wrap_x)
    blurred = _gauss(img * lf_source[..., None], sigma_lf, wrap_x) / np.maximum(wsrc, 1e-6)[..., None]
    anchor = lf_source & (wsrc > 0.25)
    if not anchor.any():
        anchor = lf_source
    low = fill_low_frequency(blurred.astype(np.float32), anchor, wrap_x)

    def fallback(reason: str):
        info["fallback"] = reason
        res = _low_frequency_fallback(image, target, low, reason)
        return (res, info) if return_info else res

    if p < 5:
        return fallback(f"image too small for patches ({h}x{w})")

    # ---- detail layer of the known pixels ----
    wk = _gauss(known.astype(np.float32), sigma_lf, wrap_x)
    local = _gauss(img, sigma_lf, wrap_x) / np.maximum(wk, 1e-6)[..., None]
    detail = np.where(known[..., None], img - local, 0.0).astype(np.float32)

    # ---- exemplar patch candidates ----
    rotate = angle is not None
    inside = _inside_distance(ex, wrap_x)
    half = (p - 1) / 2.0
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : h - p + 1, 0 : (w if wrap_x else w - p + 1)]
    cy, cx = ys + half, xs + half
    icy, icx = np.floor(cy + 0.5).astype(int), np.floor(cx + 0.5).astype(int) % w

    def valid_centres(radius: float) -> np.ndarray:
        return (inside[icy, icx] >= radius).reshape(-1)

    min_candidates = 8
    ok = valid_centres(half * math.sqrt(2.0) + 2.5) if rotate else np.zeros(0, bool)
    if rotate and ok.sum() < min_candidates:
        log.debug("exemplar too small for rotated patches (%d); synthesising unrotated", int(ok.sum()))
        info["rotation_dropped"] = True
        rotate = False
    if not rotate:
        # an unrotated patch must lie inside: every window pixel known (box erosion)
        box = ndimage.minimum_filter(ex.astype(np.uint8), size=p, mode=("constant", "wrap" if wrap_x else "constant"))
        ok = box[ys + p // 2, (xs + p // 2) % w].astype(bool).reshape(-1)
    n_valid = int(ok.sum())
    info["candidates_valid"] = n_valid
    if n_valid < min_candidates:
        return fallback(f"exemplar holds only {n_valid} whole {p}x{p} patches (need {min_candidates})")
    idx = np.flatnonzero(ok)
    flat_cy, flat_cx = icy.reshape(-1), icx.reshape(-1)
    if rotate:
        # each candidate's own strand angle (and how well defined it is), at the patch's scale
        v = _doubled_angle_tensor(_gray(img), (inside > 3.0).astype(np.float64), max(2.0, p / 4.0), wrap_x)
        coh = np.linalg.norm(v[flat_cy[idx], flat_cx[idx]], axis=-1)
        # an incoherent patch has no strand angle to canonicalise by: rotating it by a noisy angle
        # turns strands every which way, so the least coherent ones are dropped (while enough remain)
        keep = coh >= np.quantile(coh, coherent_quantile)
        if keep.sum() >= min_candidates:
            idx = idx[keep]
    if len(idx) > max_candidates:
        idx = np.sort(rng.choice(idx, max_candidates, replace=False))
    centres = np.stack([cy.reshape(-1)[idx], cx.reshape(-1)[idx]], -1).astype(np.float64)
    if rotate:
        phi = _angle_of(v[flat_cy[idx], flat_cx[idx]])
        target_angle = np.broadcast_to(np.asarray(angle, dtype=np.float64), (h, w))
    else:
        phi = np.zeros(len(idx))
        target_angle = None
    if levels > 1:
        shading = _coarse_shading(
            img, known, target, ex, angle, p, seed, wrap_x, sigma_lf, k_best, tolerance, bins, max_candidates,
            coherent_quantile, reuse_penalty, flow_smoothing, levels - 1,
        )
        if shading is not None:
            low = np.where(target[..., None], shading, low).astype(np.float32)
            info["coarse_shading"] = True
    bank = _PatchBank(detail, centres, phi, p, bins, rotate, wrap_x)
    info.update(candidates=len(idx), rotated=rotate, patch=p)

    # ---- the grid of windows and their priorities ----
    ov = int(overlap) if overlap is not None else max(1, p // 3)
    ov = int(np.clip(ov, 1, max(1, p // 2 - 1)))
    step = p - ov
    gy = _grid(h, p, step, False)
    gx = _grid(w, p, step, wrap_x)
    spacing = [int(np.diff(gy).min()) if len(gy) > 1 else p]
    if wrap_x and len(gx) > 1:
        spacing.append(int(np.diff(np.r_[gx, gx[0] + w]).min()))
    elif len(gx) > 1:
        spacing.append(int(np.diff(gx).min()))
    strip = p - min(spacing)  # the widest overlap between neighbouring windows
    strip = int(np.clip(strip, 1, p // 2))
    ny, nx = len(gy), len(gx)
    win_r = gy[:, None] + np.arange(p)[None, :]  # [ny, p]
    win_c = (gx[:, None] + np.arange(p)[None, :]) % w  # [nx, p]

    canvas = detail.copy()
    band = max(1.0, strip / 2.5)  # feather of the coarse band across a seam (pixels)
    band_lo = max(1.0, p / 8.0)  # scale splitting a patch into coarse and fine bands
    fine_band = 1.0  # feather of the fine band across a seam (pixels)
    det = known.copy()  # determined: known or synthesised
    synth = np.zeros((h, w), bool)
    seam = np.zeros((h, w), bool)  # pixels along the cuts between patches
    need = target.copy()

    windows = [[np.ix_(win_r[i], win_c[j]) for j in range(nx)] for i in range(ny)]

    def window(i, j):
        return windows[i][j]

    prio = np.full((ny, nx), -1.0)
    active = np.zeros((ny, nx), bool)

    def update(i, j):
        win = window(i, j)
        active[i, j] = bool(need[win].any())
        prio[i, j] = det[win].mean() if active[i, j] else -1.0

    for i in range(ny):
        for j in range(nx):
            update(i, j)

    placed = 0
    choices: list[int] = []
    errors: list[float] = []
    uses = np.zeros(len(idx), np.float32)
    # exemplar patches whose sources overlap by more than about half count as the same patch
    dy = centres[:, None, 0] - centres[None, :, 0]
    dx = centres[:, None, 1] - centres[None, :, 1]
    if wrap_x:
        dx = (dx + w / 2.0) % w - w / 2.0
    near = ((dy * dy + dx * dx) < (0.6 * p) ** 2).astype(np.float32)  # [N, N]
    del dy, dx
    energy = max(float((detail[ex] ** 2).sum(-1).mean()), 1e-12)  # mean squared detail per pixel (3 ch)
    while active.any():
        flat_index = int(np.argmax(np.where(active, prio, -2.0)))
        i, j = divmod(flat_index, nx)
        win = window(i, j)
        t = canvas[win]  # [p, p, 3]
        m = det[win]  # [p, p]
        known_w = known[win]
        k = bank.bin_of(float(target_angle[win_r[i, p // 2], win_c[j, p // 2]])) if rotate else 0
        rows, sq = bank.get(k)
        mf = m.reshape(-1).astype(np.float32)
        if mf.sum() > 0:
            mt = (t * m[..., None]).reshape(-1).astype(np.float32)
            ssd = sq @ mf - 2.0 * (rows @ mt) + float((t * t * m[..., None]).sum())
            penalty = (reuse_penalty * energy * float(mf.sum())) * uses
            ssd = ssd + penalty
            kk = min(k_best, len(ssd))
            best = np.argpartition(ssd, kk - 1)[:kk]
            best = best[np.argsort(ssd[best], kind="stable")]
            floor = max(float(ssd[best[0]]), 0.0)
            best = best[ssd[best] <= floor * (1.0 + tolerance) + 1e-9 * mf.sum()]
            choice = int(best[rng.integers(len(best))])
            errors.append(float(ssd[choice] - penalty[choice]) / (float(mf.sum()) * energy))
        else:
            choice = int(rng.integers(rows.shape[0]))
        choices.append(choice)
        uses += near[choice]
        new = rows[choice].reshape(p, p, 3)
        old = synth[win]
        free = ~known_w
        if old.any():
            err = ((new - t) ** 2).sum(-1) * old
            side = _new_side(err, old, strip)
            take = (free & (~old | side)).astype(np.float32)
            # two-band blend (Burt & Adelson): fine detail switches at the cut (1-pixel feather),
            # the patch-scale brightness fades over the overlap, so no blocky steps remain
            hard = np.where(old, cv2.GaussianBlur(take, (0, 0), fine_band, borderType=cv2.BORDER_REPLICATE), take)
            wide = np.where(old, cv2.GaussianBlur(take, (0, 0), band, borderType=cv2.BORDER_REPLICATE), take)
            hard[known_w], wide[known_w] = 0.0, 0.0
            seam[win] |= (hard > 0.02) & (hard < 0.98)
            mk = m.astype(np.float32)
            norm = cv2.GaussianBlur(mk, (0, 0), band_lo, borderType=cv2.BORDER_REPLICATE)
            lo_old = cv2.GaussianBlur(t * mk[..., None], (0, 0), band_lo, borderType=cv2.BORDER_REPLICATE)
            lo_old = lo_old / np.maximum(norm, 1e-3)[..., None]
            lo_new = cv2.GaussianBlur(new, (0, 0), band_lo, borderType=cv2.BORDER_REPLICATE)
            blended = (
                wide[..., None] * lo_new
                + (1.0 - wide[..., None]) * lo_old
                + hard[..., None] * (new - lo_new)
                + (1.0 - hard[..., None]) * (t - lo_old)
            )
            canvas[win] = np.where(free[..., None], blended, t)
        else:
            canvas[win] = np.where(free[..., None], new, t)
        synth[win] |= ~known_w
        det[win] |= ~known_w
        need[win] = False
        placed += 1
        for di in (-1, 0, 1):
            ii = i + di
            if not 0 <= ii < ny:
                continue
            for dj in (-1, 0, 1):
                jj = (j + dj) % nx if wrap_x else j + dj
                if 0 <= jj < nx:
                    update(ii, jj)
    info["patches"] = placed
    info["match_error"] = float(np.mean(errors)) if errors else None
    info["max_reuse"] = int(np.bincount(choices).max()) if choices else 0
    d_syn = canvas
    if rotate and flow_smoothing > 0:
        # short line-integral-convolution along the strand field: seams that cut across strands
        # (quilting's most visible artefact on hair) are bridged, strands get continuous
        # (only near the seams: inside a patch the exemplar's own detail stays crisp)
        smoothed = _smooth_along(canvas, target_angle, flow_smoothing * p, wrap_x)
        near_seam = np.clip(2.0 * _gauss(seam.astype(np.float32), 1.5, wrap_x), 0.0, 1.0)[..., None]
        d_syn = np.where(target[..., None], near_seam * smoothed + (1.0 - near_seam) * canvas, canvas)

    # ---- colour statistics ----
    low_adj = low
    gain = np.ones(3, np.float32)
    if colour_match:
        d_ex = detail[ex]
        d_fill = d_syn[target]
        sd_ex, sd_fill = d_ex.std(0), d_fill.std(0)
        gain = np.clip(sd_ex / np.maximum(sd_fill, 1e-6), 0.67, 1.5).astype(np.float32)
        mu_ex = img[ex].mean(0)
        mu_fill = low[target].mean(0)
        ramp = 1.0 - np.exp(-_distance_to(known, wrap_x) / max(2.0 * p, 1.0))
        shift = (mu_ex - mu_fill) / max(float(ramp[target].mean()), 0.5)
        low_adj = low + (ramp[..., None] * shift[None, None, :]).astype(np.float32)
        info["detail_gain"] = gain.tolist()
    result = low_adj + gain * d_syn
    out[target] = np.clip(result[target], 0.0, 1.0)
    return (out, info) if return_info else out
