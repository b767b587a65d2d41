"""Driving video -> per-frame expression and head pose of a head model (the tracker path).

Users want to drive their avatar from their own video. Per frame:

1. **Face mesh.** The shipped BlazeFace detector + 468-point FaceMesh + iris models
   (:class:`zero1toa.preprocess.facemesh.FaceMeshRunner`) find the face. When the detector
   misses a frame, the previous frame's landmarks give the region of interest (what MediaPipe
   does between video frames); a frame with no face at all is filled in from its neighbours.
2. **Fit.** :func:`zero1toa.head.fitting.fit_head_to_landmarks` fits a camera and the head's
   expression coefficients (and the jaw for PCA heads such as FLAME; the built-in rig opens its
   jaw through ``jaw_open``) to the landmarks, starting from the first frame's focal length so
   the focal stays put over the video.
3. **Bounded refinement** (heads with bounded coefficients, e.g. the built-in rig, whose
   coefficients are non-negative magnitudes: a negative ``smile`` is not a frown, a negative
   ``jaw_open`` pushes the jaw through the upper teeth). The unconstrained fit may explain a
   frown by a negative smile; instead of clamping its answer afterwards (which would leave the
   camera fitted to the wrong expression), the expression is re-solved inside its bounds
   jointly with a small camera correction: a few Gauss-Newton steps, each a bound-constrained
   quadratic solved exactly (:func:`box_qp`), on the fit's inlier landmarks.
4. **Pose.** The fitted camera carries the head's rigid motion (see
   :mod:`zero1toa.head.fitting`). We turn the camera's change *relative to the first tracked
   frame* into a head pose: with ``V_t = [R_t | t_t]`` the fitted world-to-camera transforms,
   a fixed camera sees frame ``t`` if the head rotates by ``R_0^T R_t`` (``pose.rotation``,
   axis-angle, about the head's root joint) and translates by ``R_0^T (t_t - t_0)`` minus the
   shift that rotating about the root joint (instead of the origin) introduces
   (``pose.translation``, metres). So the avatar starts in its own reference pose and follows the
   actor's head motion; expressions are absolute (a mouth open in the first frame stays open).
   By default only the sideways/vertical part of the translation is kept: depth is what face
   landmarks constrain least (a 3% error in the apparent face size is 3.5 cm at 1.2 m, and
   measured on a synthetic video, it wandered by that much), so the avatar would pulse in size.
   We chose pose over a camera path so the result is an ordinary expression/pose file, which the
   CSV/NPZ drive format, ``export`` and temporal training all read.
5. **Temporal smoothing.** A Gaussian filter over time (``sigma`` in frames) on the expression
   coefficients, the axis-angle rotation and the translation (rotations relative to the first
   frame stay far from the axis-angle wrap at 180 deg). Bounds hold after smoothing, since a
   Gaussian filter averages.

The result is written as CSV (:func:`zero1toa.progressive.sequences.save_expression_sequence`)
beside the animation, so users can edit and reuse it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..head.base import MEDIAPIPE_468, HeadModel, HeadPose
from ..head.lbs import axis_angle_to_matrix, matrix_to_axis_angle
from ..utils.threads import torch_threads

log = logging.getLogger("zero1toa.animate")

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg")


class TrackingError(ValueError):
    """A driving video that cannot be tracked (unreadable, or no face in any frame)."""


@dataclass
class TrackerConfig:
    """Tunables of :func:`track_video`."""

    fit_iterations: int = 40  # LM iterations of the per-frame fit (it usually stops earlier)
    refine_iterations: int = 4  # bounded Gauss-Newton steps (0: clamp the fit's answer instead)
    smoothing_sigma: float = 1.0  # Gaussian sigma in frames for expressions (0: off)
    pose_smoothing_sigma: float = 1.5  # the same for rotation/translation (pose jitters more)
    translation: str = "xy"  # xyz | xy (no depth: landmarks hardly constrain it) | none (rotation only)
    min_face_score: float = 0.5  # landmark model's face probability below which a frame is missing
    max_frames: int | None = None  # stop after this many frames
    stride: int = 1  # use every stride-th frame (the output fps is divided accordingly)
    region_weights: dict[str, float] | None = None  # passed to fit_head_to_landmarks
    num_threads: int | None = 1  # torch threads while tracking (None: leave as is)


@dataclass
class TrackResult:
    """The tracked sequence; every array has one row per used video frame."""

    expressions: np.ndarray  # [T, E] smoothed, within the head's bounds
    pose: HeadPose  # T frames: rotation/translation relative to the first tracked frame (+ jaw)
    fps: float  # of the tracked sequence (the video's fps / stride)
    detected: np.ndarray  # [T] bool: a face was found in this frame (others are interpolated)
    reprojection_error_px: np.ndarray  # [T] mean landmark error of the fit (nan where missing)
    raw_expressions: np.ndarray  # [T, E] before smoothing (after bounds)
    frame_size: tuple[int, int]  # (W, H) of the video
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.expressions)

    def save_csv(self, path: Path, head: HeadModel) -> Path:
        """Write the sequence in the CSV drive format (reusable with ``--drive FILE.csv``)."""
        from ..progressive.sequences import save_expression_sequence

        return save_expression_sequence(Path(path), self.expressions.astype(np.float32), self.pose, head.expression_names)


# ----------------------------------------------------------------------------- small helpers


def expression_bounds(head: HeadModel) -> tuple[np.ndarray, np.ndarray] | None:
    """(low [E], high [E]) of the head's expression coefficients, or None when unbounded (PCA).

    A head may say so itself with an ``expression_bounds()`` method. The built-in rig's
    coefficients are magnitudes: 0 .. 2 (1 is a strong expression, the schedules exaggerate up to
    ~1.2), blinks 0 .. 1 (beyond 1 the upper lid passes the lower one).
    """
    own = getattr(head, "expression_bounds", None)
    if callable(own):
        lo, hi = own()
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    from ..head.facemesh_rig import EXPRESSION_NAMES

    names = head.expression_names
    if names is None or tuple(names) != EXPRESSION_NAMES:
        return None
    lo = np.zeros(len(names))
    hi = np.array([1.0 if n.startswith("blink") else 2.0 for n in names])
    return lo, hi


def fill_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where ``valid`` [T] is False (edges hold the nearest)."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if valid.all():
        return values.copy()
    if not valid.any():
        raise TrackingError("no frame has a tracked face")
    t = np.arange(len(values))
    out = values.copy()
    flat = out.reshape(len(values), -1)
    src = values.reshape(len(values), -1)
    for d in range(flat.shape[1]):
        flat[:, d] = np.interp(t, t[valid], src[valid, d])
    return out


def smooth_sequence(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along time (axis 0), edges padded with the nearest frame; sigma in frames."""
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, sigma=float(sigma), axis=0, mode="nearest")


def iter_video_frames(path: Path, max_frames: int | None = None, stride: int = 1) -> tuple[Iterator[np.ndarray], float]:
    """Decode a video one frame at a time (bounded memory) -> (frames [H, W, 3] uint8, fps)."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"driving video {path} does not exist")
    try:
        reader = imageio.get_reader(path)
    except Exception as exc:  # imageio raises several types for unreadable files
        raise TrackingError(f"{path} cannot be read as a video: {exc}") from exc
    meta = reader.get_meta_data()
    fps = float(meta.get("fps") or (1000.0 / meta["duration"] if meta.get("duration") else 25.0))

    def frames() -> Iterator[np.ndarray]:
        try:
            used = 0
            for i, frame in enumerate(reader):
                if i % max(1, stride):
                    continue
                if max_frames is not None and used >= max_frames:
                    break
                arr = np.asarray(frame)
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, -1)
                yield np.ascontiguousarray(arr[..., :3]).astype(np.uint8, copy=False)
                used += 1
        finally:
            reader.close()

    return frames(), fps / max(1, stride)


def _detection_from_points(points: np.ndarray):
    """A stand-in detection (box + the detector's 6 keypoints) from a previous frame's mesh."""
    from ..preprocess.facemesh import FaceDetection, MeshIndex

    p = np.asarray(points, dtype=np.float32)[:, :2]
    lo, hi = p.min(0), p.max(0)
    keypoints = np.stack(
        [
            p[[MeshIndex.RIGHT_EYE_OUTER, MeshIndex.RIGHT_EYE_INNER]].mean(0),
            p[[MeshIndex.LEFT_EYE_INNER, MeshIndex.LEFT_EYE_OUTER]].mean(0),
            p[MeshIndex.NOSE_TIP],
            p[[MeshIndex.UPPER_LIP, MeshIndex.LOWER_LIP]].mean(0),
            p[MeshIndex.CHEEK_RIGHT],
            p[MeshIndex.CHEEK_LEFT],
        ]
    )
    return FaceDetection(box=np.concatenate([lo, hi]).astype(np.float32), score=1.0, keypoints=keypoints, model="tracked")


# ----------------------------------------------------------------------------- bounded refinement


def box_qp(A: Tensor, g: Tensor, lo: Tensor, hi: Tensor, max_passes: int | None = None) -> Tensor:
    """argmin_x 0.5 x^T A x + g^T x subject to lo <= x <= hi (A positive definite, lo <= 0 <= hi).

    A primal active-set method from the feasible start x = 0: solve on the free variables; if the
    solution leaves the box, walk to the first bound and fix that variable; when the free
    solution is feasible, release the bound variable whose multiplier has the wrong sign (the
    objective would decrease by leaving the bound), or stop. Exact for the small problems here
    (6 camera + E expression unknowns), and free of the BLAS thread contention a general solver
    pays on busy cores. Infinite bounds never become active.
    """
    n = A.shape[0]
    x = torch.zeros(n, dtype=A.dtype)
    at_lo = torch.zeros(n, dtype=torch.bool)
    at_hi = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_passes or 4 * n + 4):
        free = ~(at_lo | at_hi)
        target = x.clone()
        if free.any():
            f = free.nonzero()[:, 0]
            rhs = -(g[f] + A[f][:, ~free] @ x[~free])
            target[f] = torch.linalg.solve(A[f][:, f], rhs)
        step = target - x
        # largest alpha in (0, 1] keeping x + alpha * step inside the box
        with torch.no_grad():
            ratio_hi = torch.where(step > 1e-15, (hi - x) / step, torch.full_like(x, math.inf))
            ratio_lo = torch.where(step < -1e-15, (lo - x) / step, torch.full_like(x, math.inf))
            ratios = torch.minimum(ratio_hi, ratio_lo)
        alpha = float(ratios.min().clamp(max=1.0)) if n else 1.0
        if alpha < 1.0:
            k = int(ratios.argmin())
            x = x + alpha * step
            if step[k] > 0:
                x[k], at_hi[k] = hi[k], True
            else:
                x[k], at_lo[k] = lo[k], True
            continue
        x = target
        grad = A @ x + g  # multipliers of the active bounds
        wrong = (at_lo & (grad < -1e-12)) | (at_hi & (grad > 1e-12))
        if not wrong.any():
            return x
        k = int(torch.where(wrong, grad.abs(), torch.zeros_like(grad)).argmax())
        at_lo[k] = at_hi[k] = False
    return x.clamp(lo, hi)


def _project(P: Tensor, K: Tensor) -> Tensor:
    """Camera-space points [M, 3] -> pixels [M, 2] (float64)."""
    return (P @ K.T)[:, :2] / P[:, 2:].clamp_min(1e-9)


def _refine_bounded(
    head: HeadModel,
    rows: Tensor,  # [M] head landmark rows matched to the observations
    y: Tensor,  # [M, 2] observed pixels (float64)
    weights: Tensor,  # [M] 0/1 inlier weights
    viewmat: Tensor,  # [4, 4] fitted camera
    K: Tensor,  # [3, 3]
    expression: np.ndarray,  # [E] the fit's (unbounded) answer
    jaw: Tensor,  # [3] fitted jaw (kept fixed)
    lo: np.ndarray,
    hi: np.ndarray,
    iterations: int,
) -> tuple[Tensor, np.ndarray, float]:
    """Re-solve the expression inside [lo, hi] with a small camera correction.

    Parameters: rotation omega (about the landmarks' centroid in camera space), translation dt,
    expression e. The landmarks are linear in the rig's blendshapes and nearly so in jaw_open
    at tracking step sizes, so one batched finite-difference Jacobian per frame serves all
    Gauss-Newton steps (each a bound-constrained quadratic, :func:`box_qp`); the answer is
    re-evaluated exactly at the end. Returns
    (refined viewmat [4, 4], expression [E], mean pixel error over the inliers).
    """
    f64 = torch.float64
    E = head.expression_dim
    e0 = np.clip(np.asarray(expression, dtype=np.float64), lo, hi)
    R, t = viewmat[:3, :3].to(f64), viewmat[:3, 3].to(f64)
    K = K.to(f64)
    step = 1e-2
    batch = np.repeat(e0[None], E + 1, 0)
    batch[1:] += np.eye(E) * step
    pose = HeadPose.neutral(E + 1)
    pose.jaw = jaw.reshape(1, 3).float().repeat(E + 1, 1)
    with torch.no_grad():
        X = head.landmarks(head.animate(torch.from_numpy(batch).float(), pose))[:, rows].to(f64)  # [E+1, M, 3]
    X0 = X[0]
    G = ((X[1:] - X0[None]) / step).permute(1, 2, 0)  # [M, 3, E] dX/de
    P0 = X0 @ R.T + t
    c = P0.mean(0)
    w = weights.to(f64).sqrt().repeat_interleave(2)  # per residual row
    Rc = torch.eye(3, dtype=f64)  # rotation correction (kept as a matrix: no axis-angle round trips)
    dt = torch.zeros(3, dtype=f64)
    e = torch.from_numpy(e0)

    def points(rc: Tensor, d: Tensor, ex: Tensor) -> Tensor:
        X_lin = X0 + (G @ (ex - torch.from_numpy(e0))[:, None])[..., 0]
        return ((X_lin @ R.T + t) - c) @ rc.T + c + d

    def cost(P: Tensor) -> float:
        return float(((_project(P, K) - y).reshape(-1) * w).pow(2).sum())

    P = points(Rc, dt, e)
    current = cost(P)
    damping = 1e-3
    for _ in range(max(0, iterations)):
        z = P[:, 2:]
        fx, fy = K[0, 0], K[1, 1]
        D = torch.zeros(len(P), 2, 3, dtype=f64)  # d uv / d P
        D[:, 0, 0] = fx / z[:, 0]
        D[:, 1, 1] = fy / z[:, 0]
        D[:, 0, 2] = -fx * P[:, 0] / z[:, 0] ** 2
        D[:, 1, 2] = -fy * P[:, 1] / z[:, 0] ** 2
        q = P - c - dt  # rotated offsets from the centroid
        skew = torch.zeros(len(P), 3, 3, dtype=f64)
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -q[:, 2], q[:, 1], -q[:, 0]
        skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = q[:, 2], -q[:, 1], q[:, 0]
        J_rot = D @ (-skew)  # left-multiplied rotation update
        J_t = D
        Rw = Rc @ R
        J_e = D @ (Rw[None] @ G)  # [M, 2, E]
        J = torch.cat([J_rot, J_t, J_e], 2).reshape(-1, 6 + E) * w[:, None]
        r = (_project(P, K) - y).reshape(-1) * w
        scale = J.pow(2).sum(0).clamp_min(1e-12).sqrt()  # column scaling: radians, metres, coefficients
        Js = J / scale
        A = Js.T @ Js + damping * torch.eye(6 + E, dtype=f64)
        g = Js.T @ r
        lb = torch.cat([torch.full((6,), -math.inf, dtype=f64), (torch.from_numpy(lo) - e) * scale[6:]]).clamp(max=0.0)
        ub = torch.cat([torch.full((6,), math.inf, dtype=f64), (torch.from_numpy(hi) - e) * scale[6:]]).clamp(min=0.0)
        d = box_qp(A, g, lb, ub) / scale
        rc_new = axis_angle_to_matrix(d[:3]) @ Rc
        e_new = torch.from_numpy(np.clip((e + d[6:]).numpy(), lo, hi))
        P_new = points(rc_new, dt + d[3:6], e_new)
        new = cost(P_new)
        if new > current:
            damping *= 10
            continue
        improvement = current - new
        Rc, dt, e, P, current = rc_new, dt + d[3:6], e_new, P_new, new
        damping = max(damping / 10, 1e-9)
        if improvement <= 1e-9 * max(current, 1e-30):
            break
    # fold the correction into the camera: P = Rc (R X + t - c) + c + dt
    vm = torch.eye(4, dtype=f64)
    vm[:3, :3] = Rc @ R
    vm[:3, 3] = Rc @ (t - c) + c + dt
    e_out = e.numpy().copy()
    pose1 = HeadPose.neutral(1)
    pose1.jaw = jaw.reshape(1, 3).float()
    with torch.no_grad():
        X_final = head.landmarks(head.animate(torch.from_numpy(e_out[None]).float(), pose1))[0, rows].to(f64)
    err = (_project(X_final @ vm[:3, :3].T + vm[:3, 3], K) - y).norm(dim=1)
    sel = weights > 0
    return vm.float(), e_out, float(err[sel].mean() if sel.any() else err.mean())


# ----------------------------------------------------------------------------- tracking


def _match_rows(head: HeadModel, num_points: int) -> tuple[Tensor, Tensor]:
    """(head landmark rows, observation rows) for observations numbered 0..num_points-1."""
    emb = head.landmark_embedding
    if emb.convention != MEDIAPIPE_468:
        raise ValueError(f"{head.name}'s landmarks follow {emb.convention!r}; the tracker detects {MEDIAPIPE_468}")
    pairs = [(h, int(i)) for h, i in enumerate(emb.indices.tolist()) if int(i) < num_points]
    h_rows, o_rows = zip(*pairs)
    return torch.tensor(h_rows), torch.tensor(o_rows)


def _root_shift(head: HeadModel, rotations: Tensor) -> Tensor:
    """(I - R) j for each axis-angle [T, 3]: where rotating about the root joint j (instead of the
    origin) moves the head. Measured on the mesh, so no head needs to expose its joints."""
    out = []
    for s in range(0, len(rotations), 64):
        rot = rotations[s : s + 64].float()
        n = len(rot)
        pose = HeadPose.neutral(n)
        pose.rotation = rot
        with torch.no_grad():
            v0 = head.animate(torch.zeros(n, head.expression_dim), HeadPose.neutral(n))
            v1 = head.animate(torch.zeros(n, head.expression_dim), pose)
        Rm = axis_angle_to_matrix(rot)
        out.append((v1 - v0 @ Rm.transpose(1, 2)).mean(1))
    return torch.cat(out)


def track_frames(
    frames: Iterable[np.ndarray],
    head: HeadModel,
    fps: float,
    config: TrackerConfig | None = None,
    runner=None,
    progress: bool = False,
    total: int | None = None,
) -> TrackResult:
    """Track an iterable of RGB uint8 frames [H, W, 3] (see the module docstring)."""
    from ..preprocess.facemesh import default_runner

    cfg = config or TrackerConfig()
    if cfg.translation not in ("xyz", "xy", "none"):
        raise ValueError(f"tracker translation must be xyz, xy or none, got {cfg.translation!r}")
    runner = runner or default_runner()
    t_start = time.perf_counter()
    with torch_threads(cfg.num_threads):
        return _track(frames, head, fps, cfg, runner, progress, total, t_start)


def _track(frames, head: HeadModel, fps: float, cfg: TrackerConfig, runner, progress: bool, total: int | None, t_start: float) -> TrackResult:
    from ..head.fitting import fit_head_to_landmarks

    bounds = expression_bounds(head)
    fit_jaw = "jaw_open" not in (head.expression_names or [])  # PCA heads: jaw is a pose
    E = head.expression_dim
    h_rows = o_rows = None
    focal = None
    prev_points = None
    size: tuple[int, int] | None = None
    rows_e, rows_jaw, rows_vm, detected, errors = [], [], [], [], []
    it: Iterable[np.ndarray] = frames
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(frames, desc="track", total=total, unit="frame", leave=False, dynamic_ncols=True, mininterval=1.0)
    for frame in it:
        H, W = frame.shape[:2]
        if size is None:
            size = (W, H)
        elif size != (W, H):
            raise TrackingError(f"frame size changed from {size} to {(W, H)} within the video")
        lms = None
        dets = runner.detect(frame)
        candidates = [dets[0]] if dets else []
        if prev_points is not None:
            candidates.append(_detection_from_points(prev_points))
        for det in candidates:
            found = runner.landmarks(frame, det, refine=True, with_iris=True)
            if found.face_score >= cfg.min_face_score:
                lms = found
                break
        if lms is None:
            rows_e.append(np.zeros(E))
            rows_jaw.append(np.zeros(3))
            rows_vm.append(torch.eye(4))
            detected.append(False)
            errors.append(np.nan)
            prev_points = None
            continue
        prev_points = lms.points
        pts = lms.with_iris() if lms.iris is not None else lms.points
        if h_rows is None:
            h_rows, o_rows = _match_rows(head, len(pts))
        ids = torch.arange(len(pts))
        fit = fit_head_to_landmarks(
            head,
            torch.from_numpy(np.asarray(pts[:, :2], dtype=np.float64)),
            ids,
            (W, H),
            init_focal_px=focal,
            fit_shape=False,
            fit_expression=True,
            fit_jaw=fit_jaw,
            iterations=cfg.fit_iterations,
            region_weights=cfg.region_weights,
        )
        if focal is None:
            focal = fit.focal_px  # later frames start from (and are pulled towards) this focal
        expr = fit.expression.numpy().astype(np.float64)
        jaw = fit.pose.jaw[0].clone()
        vm = fit.cameras.viewmats[0]
        err = fit.reprojection_error_px.mean
        if bounds is not None:
            lo, hi = bounds
            if cfg.refine_iterations > 0:
                y = torch.from_numpy(np.asarray(pts[o_rows.numpy(), :2], dtype=np.float64))
                # the fit's inliers (residual < 3 robust scales), in the same matched order
                inl = torch.ones(len(h_rows))
                if fit.inliers.numel() == len(h_rows):
                    inl = fit.inliers.double()
                vm, expr, err = _refine_bounded(head, h_rows, y, inl, vm, fit.cameras.Ks[0], expr, jaw, lo, hi, cfg.refine_iterations)
            else:
                expr = np.clip(expr, lo, hi)
        rows_e.append(expr)
        rows_jaw.append(jaw.numpy().astype(np.float64))
        rows_vm.append(vm.float())
        detected.append(True)
        errors.append(err)
    if size is None:
        raise TrackingError("the driving video holds no frames")
    valid = np.asarray(detected, dtype=bool)
    if not valid.any():
        raise TrackingError(f"no face was found in any of the {len(valid)} frames of the driving video")
    if not valid.all():
        log.warning("no face in %d of %d frames: those frames are interpolated", int((~valid).sum()), len(valid))

    # ---- pose relative to the first tracked frame -----------------------------------------
    vms = torch.stack(rows_vm).double()  # [T, 4, 4]
    first = int(np.argmax(valid))
    R0, t0 = vms[first, :3, :3], vms[first, :3, 3]
    R_rel = R0.T[None] @ vms[:, :3, :3]  # [T, 3, 3]
    rot = matrix_to_axis_angle(R_rel).numpy()
    trans = ((vms[:, :3, 3] - t0[None]) @ R0).numpy()  # R0^T (t_t - t0), row form
    expr_raw = fill_missing(np.stack(rows_e), valid)
    jaw = fill_missing(np.stack(rows_jaw), valid)
    rot = fill_missing(rot, valid)
    trans = fill_missing(trans, valid)

    # ---- smoothing ---------------------------------------------------------------------------
    expr_s = smooth_sequence(expr_raw, cfg.smoothing_sigma)
    jaw_s = smooth_sequence(jaw, cfg.smoothing_sigma)
    rot_s = smooth_sequence(rot, cfg.pose_smoothing_sigma)
    trans_s = smooth_sequence(trans, cfg.pose_smoothing_sigma)
    if bounds is not None:
        expr_s = np.clip(expr_s, *bounds)  # exact already (averages); guards rounding
    T = len(valid)
    pose = HeadPose.neutral(T)
    pose.rotation = torch.from_numpy(rot_s).float()
    pose.jaw = torch.from_numpy(jaw_s).float() if fit_jaw else torch.zeros(T, 3)
    if cfg.translation != "none":
        shift = _root_shift(head, pose.rotation).double().numpy()
        tau = trans_s - shift
        if cfg.translation == "xy":
            tau[:, 2] = 0.0
        pose.translation = torch.from_numpy(tau).float()
    return TrackResult(
        expressions=expr_s.astype(np.float32),
        pose=pose,
        fps=float(fps),
        detected=valid,
        reprojection_error_px=np.asarray(errors, dtype=np.float64),
        raw_expressions=expr_raw.astype(np.float32),
        frame_size=size,
        seconds=time.perf_counter() - t_start,
        info={
            "frames": T,
            "frames_with_face": int(valid.sum()),
            "focal_px": focal,
            "bounded": bounds is not None,
            "fit_jaw": fit_jaw,
            "mean_error_px": float(np.nanmean(errors)),
        },
    )


def track_video(
    video: Path,
    head: HeadModel,
    config: TrackerConfig | None = None,
    runner=None,
    progress: bool = False,
) -> TrackResult:
    """Track a driving video file frame by frame (decoded one frame at a time)."""
    cfg = config or TrackerConfig()
    frames, fps = iter_video_frames(Path(video), cfg.max_frames, cfg.stride)
    result = track_frames(frames, head, fps, cfg, runner=runner, progress=progress, total=cfg.max_frames)
    result.info["source"] = str(video)
    return result
