"""Fit a pinhole camera (and a head's identity/expression) to the 2D landmarks of one photo.

Works for any :class:`HeadModel`: it animates the head, reads its landmarks through
``head.landmarks`` and matches them to the detections by ``head.landmark_embedding.indices``
(only landmarks both sides have are used; FLAME's MediaPipe embedding has 105 of the 468).

**Where the rigid head pose lives.** The head stays at the origin of its own space in the
neutral global pose (root/neck rotation and translation zero); the fitted camera carries the
whole rigid transform (``viewmat = [R | t]``, world = head space). Every later stage already
thinks in head space: Gaussians are bound to the head's triangles, the progressive schedules
orbit cameras around the head, and the reference view then is simply one more camera of that
orbit. Only the jaw (when ``fit_jaw``) is returned as pose. ``FitResult.pose`` is therefore
neutral apart from the jaw; render the head with it and ``FitResult.cameras``.

Method:
1. Closed-form start: a robust (Geman-McClure IRLS) affine fit of the neutral 3D landmarks to
   the 2D ones, projected to the nearest scaled rotation (weak perspective), turned into a
   perspective camera at the initial focal length.
2. Levenberg-Marquardt with iteratively reweighted least squares, first on the camera alone,
   then on camera + focal + shape + expression (+ jaw). The loss is Geman-McClure on pixel
   residuals normalised by the face size, its scale annealed from wide to narrow (one stage per
   scale) so outliers lose their pull once the fit is close; L2 priors on shape, expression
   and jaw and a log-focal prior towards the initial focal enter as extra residuals. The focal
   is bounded by construction to a field of view in ``fov_range_deg`` (over the image's larger
   side): a face photo is close to weak perspective, so the landmarks hardly constrain the
   focal, and depth and focal would otherwise trade off freely.

Jacobians: the camera part is analytic. The head part (landmarks w.r.t. shape, expression,
jaw) comes from one batched finite-difference pass through ``head.animate`` (one frame per
parameter), which is exact for blendshape models (landmarks are linear in the coefficients at
a fixed pose); it is recomputed only when a step's predicted landmark motion disagrees with
the real one (nonlinear heads, jaw). LM rather than a first-order optimiser because the
parameters act on very different scales (a radian of rotation moves landmarks by the face
size, an expression coefficient by a pixel or two) and LBFGS needed hundreds of iterations to
reach sub-pixel error on the same problems.

The camera rotates about the landmarks' centroid and its depth follows from an image-scale
parameter, so the focal changes only the perspective strength. Nothing is random: two runs
with the same inputs give identical results (``seed`` is recorded only).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..render.camera import Cameras, focal_from_fov, intrinsics, project_points
from ..utils.threads import torch_threads
from .base import MEDIAPIPE_468, HeadModel, HeadPose
from .lbs import axis_angle_to_matrix


@dataclass
class FitConfig:
    """Tunables of :func:`fit_head_to_landmarks`; residuals are in units of the face size."""

    fov_range_deg: tuple[float, float] = (10.0, 50.0)  # bounds on the fitted field of view
    init_fov_deg: float = 20.0  # used when no init_focal_px is given
    robust_scale: float = 0.01  # Geman-McClure scale, fraction of the face size (~2 px at 200 px)
    anneal: tuple[float, ...] = (8.0, 3.0, 1.0)  # robust-scale multipliers, one full stage each
    shape_prior: float = 1e-6  # per unit^2 of shape coefficient (data term: mean squared residual)
    expression_prior: float = 1e-6
    jaw_prior: float = 1e-4  # per rad^2
    focal_prior: float = 1e-4  # per (log focal ratio)^2
    rigid_iterations: int = 15  # LM iterations on the camera alone (part of `iterations`)
    irls_iterations: int = 12  # for the closed-form start
    fd_step: float = 1e-2  # finite-difference step for the head Jacobian (coefficient units / rad)
    # torch threads while fitting (None: leave as is). The linear algebra is tiny (<= ~160 x 210);
    # extra threads only spin, and on busy cores that made the same fit 2-20x slower.
    num_threads: int | None = 1


@dataclass
class ReprojectionError:
    """Pixel distances between the fitted landmarks and the detections (all matched landmarks)."""

    mean: float
    median: float
    max: float
    per_landmark: Tensor  # [L] pixels
    landmark_ids: Tensor  # [L] numbers in the convention

    def to_dict(self) -> dict:
        return {"mean": self.mean, "median": self.median, "max": self.max}


@dataclass
class FitResult:
    cameras: Cameras  # 1 camera; carries the rigid head pose (see module docstring)
    pose: HeadPose  # neutral except the jaw
    shape: Tensor  # [S] (empty for heads without a shape space)
    expression: Tensor  # [E]
    focal_px: float
    reprojection_error_px: ReprojectionError
    iterations_run: int  # LM iterations over all stages
    inliers: Tensor  # [L] bool: residual below 3 robust scales
    init_error_px: float  # mean error of the closed-form start (diagnostic)
    seconds: float
    seed: int
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly summary for manifests (tensors as lists)."""
        return {
            "cameras": self.cameras.to_dict(),
            "pose": self.pose.as_vector()[0].tolist(),
            "shape": self.shape.tolist(),
            "expression": self.expression.tolist(),
            "focal_px": self.focal_px,
            "reprojection_error_px": self.reprojection_error_px.to_dict(),
            "inlier_fraction": float(self.inliers.float().mean()) if self.inliers.numel() else 0.0,
            "iterations_run": self.iterations_run,
            "init_error_px": self.init_error_px,
            "seconds": self.seconds,
            "seed": self.seed,
            **self.info,
        }


@lru_cache(maxsize=1)
def _facemesh_parts() -> dict[str, frozenset[int]]:
    path = Path(__file__).resolve().parents[1] / "data" / "facemesh_topology.json"
    parts = json.loads(path.read_text(encoding="utf-8"))["parts"]
    return {name: frozenset(i for edge in edges for i in edge) for name, edges in parts.items()}


def region_names() -> list[str]:
    """Region names accepted by ``region_weights`` (MediaPipe face-mesh parts)."""
    return sorted(_facemesh_parts())


def _match(head: HeadModel, landmark_ids: Tensor, convention: str) -> tuple[Tensor, Tensor]:
    """(head rows [M], observation rows [M]) of the landmarks both sides have."""
    emb = head.landmark_embedding
    if emb.convention != convention:
        raise ValueError(f"{head.name}'s landmarks follow {emb.convention!r}, the detections {convention!r}")
    ids = [int(i) for i in landmark_ids.reshape(-1).tolist()]
    if len(set(ids)) != len(ids):
        raise ValueError("landmark_ids repeat: each detected landmark must have its own number")
    where = {i: k for k, i in enumerate(ids)}
    pairs = [(h, where[int(i)]) for h, i in enumerate(emb.indices.tolist()) if int(i) in where]
    if len(pairs) < 6:
        raise ValueError(
            f"only {len(pairs)} of the detected landmarks exist on {head.name} (it has "
            f"{len(emb.indices)} in {emb.convention}); at least 6 are needed to fit a camera"
        )
    h_rows, o_rows = zip(*pairs)
    return torch.tensor(h_rows), torch.tensor(o_rows)


def _face_size_px(points: Tensor) -> float:
    """Robust size of the detected face: diagonal of the 5-95% box of the landmarks."""
    lo = torch.quantile(points, 0.05, dim=0)
    hi = torch.quantile(points, 0.95, dim=0)
    return max(float((hi - lo).norm()), 1.0)


def _robust_affine(X: Tensor, y: Tensor, w0: Tensor, scale: float, iterations: int) -> tuple[Tensor, Tensor]:
    """IRLS fit of y [L,2] ~ X [L,3] @ A.T + b with Geman-McClure weights; float64."""
    Xh = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)  # [L, 4]
    w = w0.clone()
    P = torch.zeros(4, 2, dtype=X.dtype)
    for _ in range(max(1, iterations)):
        sw = w.sqrt()[:, None]
        # normal equations on a 4x4 system: MKL's lstsq varies in the last digits from call to call
        # (its blocked path depends on buffer alignment), which made identical runs differ
        Xw = Xh * sw
        P = torch.linalg.solve(Xw.T @ Xw, Xw.T @ (y * sw))  # [4, 2]
        r = (Xh @ P - y).norm(dim=1)
        sigma = max(scale, 2.0 * float(r.median()))
        w = w0 / (1 + (r / sigma) ** 2) ** 2
    return P[:3].T, P[3]


def _skew(v: Tensor) -> Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape, 3)


class _Camera:
    """Pinhole camera rotating about a fixed centroid; float64; analytic Jacobians.

    p = R (X - c) + T with T = (tx, ty, f / s): ``s`` is the image scale (px per metre) at the
    centroid's depth, so changing the focal keeps the face's size and only alters perspective.
    Parameters (7): rotation update omega (left, applied then folded into R), tx, ty, log s,
    focal logit (f = f_min + (f_max - f_min) sigmoid).
    """

    def __init__(self, R: Tensor, centroid: Tensor, tx: float, ty: float, s: float, f: float, f_min: float, f_max: float, cx: float, cy: float) -> None:
        self.R, self.c = R.clone(), centroid.clone()
        u = (f - f_min) / (f_max - f_min)
        self.v = torch.tensor([tx, ty, math.log(s), math.log(u / (1 - u))], dtype=torch.float64)
        self.f_min, self.f_max, self.cx, self.cy = f_min, f_max, cx, cy

    def copy(self) -> "_Camera":
        other = object.__new__(_Camera)
        other.__dict__.update(self.__dict__)
        other.R, other.v = self.R.clone(), self.v.clone()
        return other

    @property
    def focal(self) -> float:
        return self.f_min + (self.f_max - self.f_min) * float(torch.sigmoid(self.v[3]))

    def dfocal(self) -> float:
        sg = float(torch.sigmoid(self.v[3]))
        return (self.f_max - self.f_min) * sg * (1 - sg)

    def apply(self, delta: Tensor) -> None:
        """delta [7]: omega (3), then the 4 other parameters."""
        self.R = axis_angle_to_matrix(delta[:3]) @ self.R
        self.v = self.v + delta[3:]

    def project(self, X: Tensor, jacobians: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """X [M, 3] -> uv [M, 2]; with jacobians: d uv/d params [M, 2, 7], d uv/d X [M, 2, 3]."""
        f, s = self.focal, math.exp(float(self.v[2]))
        q = (X - self.c) @ self.R.T  # [M, 3]
        T = torch.stack([self.v[0], self.v[1], torch.tensor(f / s, dtype=X.dtype)])
        p = q + T
        z = p[:, 2:].clamp_min(1e-9)
        xy = p[:, :2] / z
        uv = f * xy + torch.tensor([self.cx, self.cy], dtype=X.dtype)
        if not jacobians:
            return uv, None, None
        M = len(X)
        D = torch.zeros(M, 2, 3, dtype=X.dtype)  # d uv / d p
        D[:, 0, 0] = f / z[:, 0]
        D[:, 1, 1] = f / z[:, 0]
        D[:, :, 2] = -f * xy / z
        J = torch.zeros(M, 2, 7, dtype=X.dtype)
        J[:, :, :3] = D @ (-_skew(q))  # left rotation update
        J[:, :, 3] = D[:, :, 0]
        J[:, :, 4] = D[:, :, 1]
        J[:, :, 5] = D[:, :, 2] * (-f / s)
        df = self.dfocal()
        J[:, :, 6] = df * (xy + D[:, :, 2] / s)  # through f in the projection and in T_z
        return uv, J, D @ self.R

    def viewmat(self) -> Tensor:
        vm = torch.eye(4, dtype=torch.float64)
        vm[:3, :3] = self.R
        vm[:3, 3] = torch.stack([self.v[0], self.v[1], torch.tensor(self.focal / math.exp(float(self.v[2])))]) - self.R @ self.c
        return vm


def fit_head_to_landmarks(
    head: HeadModel,
    landmarks_2d: Tensor,
    landmark_ids: Tensor,
    image_size: tuple[int, int],
    init_focal_px: float | None = None,
    fit_shape: bool = True,
    fit_expression: bool = True,
    iterations: int = 100,
    seed: int = 0,
    region_weights: dict[str, float] | None = None,
    *,
    landmark_weights: Tensor | None = None,
    fit_jaw: bool = False,
    convention: str = MEDIAPIPE_468,
    config: FitConfig | None = None,
) -> FitResult:
    """Fit one camera (and optionally shape, expression, jaw) to detected landmarks.

    landmarks_2d: [L, 2] pixels, x right / y down, in the Cameras frame (pixel (i, j) covers
    [j, j+1) x [i, i+1)); landmark_ids: [L] numbers in ``convention``; image_size: (W, H).
    region_weights: multipliers per MediaPipe part (see :func:`region_names`), e.g.
    ``{"face_oval": 0.3}``; landmark_weights: [L] per-detection multipliers (e.g. confidences).
    ``iterations`` bounds the LM iterations over all stages (most fits stop well before). The
    fitted shape is returned, not applied: call ``head.set_shape(result.shape)`` on heads that
    keep an identity.
    """
    cfg = config or FitConfig()
    with torch_threads(cfg.num_threads):
        return _fit(head, landmarks_2d, landmark_ids, image_size, init_focal_px, fit_shape, fit_expression, iterations, seed, region_weights, landmark_weights, fit_jaw, convention, cfg)


def _fit(
    head: HeadModel,
    landmarks_2d: Tensor,
    landmark_ids: Tensor,
    image_size: tuple[int, int],
    init_focal_px: float | None,
    fit_shape: bool,
    fit_expression: bool,
    iterations: int,
    seed: int,
    region_weights: dict[str, float] | None,
    landmark_weights: Tensor | None,
    fit_jaw: bool,
    convention: str,
    cfg: FitConfig,
) -> FitResult:
    t_start = time.perf_counter()
    W, H = int(image_size[0]), int(image_size[1])
    f64 = torch.float64
    y_all = torch.as_tensor(landmarks_2d, dtype=f64).reshape(-1, 2)
    ids_all = torch.as_tensor(landmark_ids).reshape(-1).long()
    if len(ids_all) != len(y_all):
        raise ValueError(f"{len(y_all)} landmarks but {len(ids_all)} landmark ids")
    if not torch.isfinite(y_all).all():
        raise ValueError("landmarks_2d contains non-finite values")
    h_rows, o_rows = _match(head, ids_all, convention)
    y = y_all[o_rows]  # [M, 2]
    ids = ids_all[o_rows]
    M = len(ids)

    w0 = torch.ones(M, dtype=f64)
    if landmark_weights is not None:
        lw = torch.as_tensor(landmark_weights, dtype=f64).reshape(-1)
        if len(lw) != len(y_all):
            raise ValueError(f"landmark_weights has {len(lw)} values for {len(y_all)} landmarks")
        w0 = w0 * lw[o_rows].clamp_min(0)
    if region_weights:
        if convention != MEDIAPIPE_468:
            raise ValueError("region_weights name MediaPipe face-mesh parts; they need convention mediapipe468")
        parts = _facemesh_parts()
        for name, value in region_weights.items():
            if name not in parts:
                raise ValueError(f"unknown region {name!r}; known: {', '.join(sorted(parts))}")
            in_part = torch.tensor([int(i) in parts[name] for i in ids.tolist()])
            w0[in_part] *= float(value)
    if float(w0.sum()) <= 0:
        raise ValueError("all landmark weights are zero")
    w0 = w0 / w0.sum()  # the data term is a weighted mean

    # Focal bounds over the larger image side; the initial focal is clamped into them.
    side = max(W, H)
    lo_fov, hi_fov = cfg.fov_range_deg
    f_min, f_max = focal_from_fov(hi_fov, side), focal_from_fov(lo_fov, side)
    f0 = focal_from_fov(cfg.init_fov_deg, side) if init_focal_px is None else float(init_focal_px)
    f0 = min(max(f0, f_min + 1e-3 * (f_max - f_min)), f_max - 1e-3 * (f_max - f_min))
    face_px = _face_size_px(y)
    sigma_px = cfg.robust_scale * face_px

    # ---- the head's parameters: shape (S), expression (E), jaw (3) ------------------------
    dev = head.faces.device
    S = head.shape_dim if fit_shape else 0
    E = head.expression_dim if fit_expression else 0
    Jn = 3 if fit_jaw else 0
    P = S + E + Jn
    own_shape = getattr(head, "shape", None)
    own_shape = own_shape.detach().float().cpu() if isinstance(own_shape, Tensor) and own_shape.numel() == head.shape_dim else None
    beta0 = own_shape.clone() if (S and own_shape is not None) else torch.zeros(S)
    theta = torch.cat([beta0.double(), torch.zeros(E + Jn, dtype=f64)])  # [P]
    rows = h_rows.to(dev)

    def head_landmarks(th: Tensor) -> Tensor:
        """th [B, P] -> landmarks [B, M, 3] float64 (frames evaluated in one batch)."""
        B = th.shape[0]
        th32 = th.to(device=dev, dtype=torch.float32)
        pose = HeadPose.neutral(B, dev)
        expr = torch.zeros(B, head.expression_dim, device=dev)
        if E:
            expr = th32[:, S:S + E]
        if Jn:
            pose.jaw = th32[:, S + E:]
        shape = th32[:, :S] if S else None
        with torch.no_grad():
            verts = head.animate(expr, pose, shape)
            return head.landmarks(verts)[:, rows].double().cpu()

    def head_jacobian(th: Tensor, X_at: Tensor) -> Tensor:
        """d landmarks / d head params [M, 3, P] by one batched forward difference."""
        h = torch.full((P,), cfg.fd_step, dtype=f64)
        batch = th[None].repeat(P, 1) + torch.diag(h)
        G = torch.empty(M, 3, P, dtype=f64)
        for lo in range(0, P, 64):  # chunks bound memory for big heads
            hi = min(P, lo + 64)
            G[:, :, lo:hi] = ((head_landmarks(batch[lo:hi]) - X_at[None]) / h[lo:hi, None, None]).permute(1, 2, 0)
        return G

    # ---- closed-form start ----------------------------------------------------------------
    X = head_landmarks(theta[None])[0]  # [M, 3]
    A, b = _robust_affine(X, y, w0, sigma_px, cfg.irls_iterations)
    U, Sv, Vh = torch.linalg.svd(A, full_matrices=False)  # A [2, 3] = U diag(Sv) Vh
    r12 = U @ Vh  # nearest rows that are orthonormal
    R0 = torch.stack([r12[0], r12[1], torch.linalg.cross(r12[0], r12[1])])
    s0 = float(Sv.mean())
    centroid = (X * w0[:, None]).sum(0)
    # weak perspective: u = s * r1.(X - c) + (s * r1.c + b_u); the camera puts c at (tx, ty)
    uc = (A @ centroid + b).tolist()
    cam = _Camera(R0, centroid, (uc[0] - W / 2) / s0, (uc[1] - H / 2) / s0, s0, f0, f_min, f_max, W / 2, H / 2)
    init_error = float((cam.project(X)[0] - y).norm(dim=1).mean())

    # ---- LM with IRLS ---------------------------------------------------------------------
    lam = torch.cat([
        torch.full((S,), cfg.shape_prior, dtype=f64),
        torch.full((E,), cfg.expression_prior, dtype=f64),
        torch.full((Jn,), cfg.jaw_prior, dtype=f64),
    ])
    log_f0 = math.log(f0)

    def cost(c: _Camera, X_: Tensor, th: Tensor, sigma_n: float) -> float:
        r2 = ((c.project(X_)[0] - y) / face_px).pow(2).sum(1)
        data = (w0 * sigma_n**2 * r2 / (r2 + sigma_n**2)).sum()
        return float(data + (lam * th**2).sum() + cfg.focal_prior * (math.log(c.focal) - log_f0) ** 2)

    # below this (metres, all landmarks together) a mismatch is float32 rounding, not curvature
    fd_tolerance = 1e-5 * math.sqrt(M) * float((X.max(0).values - X.min(0).values).norm())
    state = {"G": None, "jacobian_passes": 0, "iterations": 0}

    def run_stage(cam: _Camera, theta: Tensor, X: Tensor, full: bool, n_iter: int, mult: float) -> tuple[_Camera, Tensor, Tensor, float]:
        """LM iterations at one robust scale; returns the improved (camera, theta, X, cost)."""
        sigma_n = cfg.robust_scale * mult
        mu = 1e-3
        n_cam = 7 if full else 6  # the focal joins with the head parameters
        n_head = P if full else 0
        current = cost(cam, X, theta, sigma_n)
        for _ in range(n_iter):
            state["iterations"] += 1
            fresh = False
            if n_head and state["G"] is None:
                state["G"] = head_jacobian(theta, X)
                state["jacobian_passes"] += 1
                fresh = True
            G = state["G"]
            uv, Jc, JX = cam.project(X, jacobians=True)
            r = (uv - y) / face_px  # [M, 2]
            r2 = r.pow(2).sum(1)
            w = w0 * sigma_n**4 / (r2 + sigma_n**2) ** 2  # IRLS weights of Geman-McClure
            Jrow = Jc[:, :, :n_cam]
            if n_head:
                Jrow = torch.cat([Jrow, JX @ G], 2)  # [M, 2, n_cam + P]
            Jf = (Jrow / face_px).reshape(2 * M, -1)
            wf = w.repeat_interleave(2)
            Ahat = Jf.T @ (Jf * wf[:, None])
            g = Jf.T @ (wf * r.reshape(-1))
            # priors enter as extra residuals
            if n_cam == 7:
                df = cam.dfocal() / cam.focal
                Ahat[6, 6] += cfg.focal_prior * df * df
                g[6] += cfg.focal_prior * df * (math.log(cam.focal) - log_f0)
            if n_head:
                idx = torch.arange(n_cam, n_cam + P)
                Ahat[idx, idx] += lam
                g[n_cam:] += lam * theta
            accepted, improvement = False, 0.0
            delta = torch.zeros(1, dtype=f64)
            while mu < 1e12:
                delta = -torch.linalg.solve(Ahat + torch.diag(Ahat.diagonal().clamp_min(1e-12) * mu), g)
                trial = cam.copy()
                d_cam = torch.zeros(7, dtype=f64)
                d_cam[:n_cam] = delta[:n_cam]
                trial.apply(d_cam)
                th_new = theta + delta[n_cam:] if n_head else theta
                X_new = head_landmarks(th_new[None])[0] if n_head else X
                new = cost(trial, X_new, th_new, sigma_n)
                if new <= current:
                    accepted = True
                    if n_head:
                        predicted = (G @ delta[n_cam:]).reshape(M, 3)
                        actual = X_new - X
                        if (actual - predicted).norm() > 0.05 * actual.norm() + fd_tolerance:
                            state["G"] = None  # the head is not linear here: re-differentiate
                    cam, theta, X = trial, th_new, X_new
                    improvement, current = current - new, new
                    mu = max(mu / 3, 1e-9)
                    break
                mu *= 4
            if not accepted and n_head and not fresh:
                state["G"], mu = None, 1e-3  # a stale head Jacobian may be to blame: retry fresh
                continue
            if not accepted or improvement <= 1e-12 * max(current, 1e-30) or float(delta.abs().max()) < 1e-10:
                break
        return cam, theta, X, current

    budget = max(1, int(iterations))
    n_rigid = min(cfg.rigid_iterations, budget)
    cam, theta, X, _ = run_stage(cam, theta, X, False, n_rigid, cfg.anneal[0])
    rest = budget - n_rigid
    for k, mult in enumerate(cfg.anneal):
        n = rest // len(cfg.anneal) + (1 if k < rest % len(cfg.anneal) else 0)
        if n > 0:
            cam, theta, X, _ = run_stage(cam, theta, X, True, n, mult)
    iterations_run, jacobian_passes = state["iterations"], state["jacobian_passes"]

    # ---- result ---------------------------------------------------------------------------
    vm = cam.viewmat().float()
    cams = Cameras(vm[None], intrinsics(cam.focal, W, H)[None], W, H)
    pose = HeadPose.neutral(1)
    if Jn:
        pose.jaw = theta[S + E:].float()[None].clone()
    X_final = head_landmarks(theta[None])[0].float()
    uv, _ = project_points(X_final, cams)
    err = (uv[0].double() - y).norm(dim=1).float()
    if S:
        shape_out = theta[:S].float().clone()
    elif own_shape is not None:
        shape_out = own_shape.clone()  # the head's own identity, unchanged
    else:
        shape_out = torch.zeros(head.shape_dim)
    expression = theta[S:S + E].float().clone() if E else torch.zeros(head.expression_dim)
    return FitResult(
        cameras=cams,
        pose=pose,
        shape=shape_out,
        expression=expression,
        focal_px=cam.focal,
        reprojection_error_px=ReprojectionError(
            mean=float(err.mean()), median=float(err.median()), max=float(err.max()), per_landmark=err, landmark_ids=ids.clone()
        ),
        iterations_run=iterations_run,
        inliers=err < 3 * sigma_px,
        init_error_px=init_error,
        seconds=time.perf_counter() - t_start,
        seed=int(seed),
        info={
            "landmarks_used": M,
            "face_size_px": face_px,
            "focal_bounds_px": [f_min, f_max],
            "head": head.name,
            "head_jacobian_passes": jacobian_passes,
        },
    )
