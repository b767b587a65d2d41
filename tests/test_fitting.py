"""Camera/shape/expression fitting to 2D landmarks, on synthetic ground truth."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import flame_synthetic as fs  # noqa: E402

from zero1toa.head.base import HeadModel, HeadPose, LandmarkEmbedding  # noqa: E402
from zero1toa.head.fitting import FitConfig, fit_head_to_landmarks, region_names  # noqa: E402
from zero1toa.head.flame import FlameHead  # noqa: E402
from zero1toa.head.lbs import axis_angle_to_matrix  # noqa: E402
from zero1toa.render.camera import Cameras, focal_from_fov, intrinsics, look_at, project_points  # noqa: E402

pytest.importorskip("scipy")  # the synthetic FLAME writer pickles a scipy sparse matrix

W = H = 512
EYE = torch.tensor([0.1, 0.04, 0.8])  # camera centre: slightly left of and above the face


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> FlameHead:
    root = tmp_path_factory.mktemp("flame_fit")
    arrays = fs.make_flame_arrays()
    model = fs.write_flame_2023(root / "flame2023.pkl", arrays)
    emb = fs.write_mediapipe_embedding(root / "mediapipe_landmark_embedding.npz", arrays)
    return FlameHead.from_file(model, emb, n_shape=20, n_expr=10)


@pytest.fixture(scope="module")
def truth(head) -> dict:
    g = torch.Generator().manual_seed(0)
    shape, expr = torch.randn(20, generator=g) * 0.5, torch.randn(10, generator=g) * 0.5
    cam = Cameras(look_at(EYE, torch.zeros(3))[None], intrinsics(focal_from_fov(20.0, W), W, H)[None], W, H)
    X = head.landmarks(head.animate(expr[None], HeadPose.neutral(1), shape[None]))[0]
    uv = project_points(X, cam)[0][0]
    return {"shape": shape, "expr": expr, "cam": cam, "uv": uv, "ids": head.landmark_embedding.indices.clone()}


def _fitted_uv(head: HeadModel, r) -> torch.Tensor:
    verts = head.animate(r.expression[None], r.pose, r.shape[None] if r.shape.numel() else None)
    return project_points(head.landmarks(verts)[0], r.cameras)[0][0]


def _rotation_error_deg(a: Cameras, b: Cameras) -> float:
    Ra, Rb = a.viewmats[0, :3, :3], b.viewmats[0, :3, :3]
    c = float(((Ra.T @ Rb).trace() - 1) / 2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def test_noise_free_fit_is_sub_pixel_and_recovers_the_camera(head, truth):
    r = fit_head_to_landmarks(head, truth["uv"], truth["ids"], (W, H), fit_shape=True, fit_expression=True)
    assert r.reprojection_error_px.mean < 1.0 and r.reprojection_error_px.max < 1.5
    assert r.init_error_px > 3 * r.reprojection_error_px.mean  # refinement did the work
    assert (r.cameras.centers()[0] - EYE).norm() < 0.01  # metres
    assert _rotation_error_deg(r.cameras, truth["cam"]) < 0.5
    assert abs(r.focal_px - truth["cam"].Ks[0, 0, 0]) / truth["cam"].Ks[0, 0, 0] < 0.02
    assert r.shape.shape == (20,) and r.expression.shape == (10,)
    assert torch.equal(r.pose.as_vector(), torch.zeros(1, 18))  # the camera carries the rigid pose
    assert len(r.cameras) == 1 and (r.cameras.width, r.cameras.height) == (W, H)
    assert r.reprojection_error_px.per_landmark.shape == (105,) and r.inliers.all()
    json.dumps(r.to_dict())  # manifests can store it


def test_robust_to_ten_percent_outliers(head, truth):
    g = torch.Generator().manual_seed(1)
    y = truth["uv"] + 0.3 * torch.randn(truth["uv"].shape, generator=g)
    bad = torch.randperm(len(y), generator=g)[: len(y) // 10]
    y[bad] += (torch.rand(len(bad), 2, generator=g) - 0.5) * 100 + 20 * torch.sign(torch.rand(len(bad), 2, generator=g) - 0.5)
    r = fit_head_to_landmarks(head, y, truth["ids"], (W, H))
    good = torch.ones(len(y), dtype=torch.bool)
    good[bad] = False
    err_vs_truth = (_fitted_uv(head, r) - truth["uv"]).norm(dim=1)
    assert err_vs_truth[good].mean() < 1.0 and err_vs_truth[good].max() < 2.0
    assert _rotation_error_deg(r.cameras, truth["cam"]) < 1.0
    assert not r.inliers[bad].any() and r.inliers[good].all()
    assert r.reprojection_error_px.median < 1.0  # the mean includes the outliers


def test_deterministic(head, truth):
    y = truth["uv"] + 0.5
    a = fit_head_to_landmarks(head, y, truth["ids"], (W, H), seed=3)
    b = fit_head_to_landmarks(head, y, truth["ids"], (W, H), seed=3)
    assert torch.equal(a.cameras.viewmats, b.cameras.viewmats) and torch.equal(a.cameras.Ks, b.cameras.Ks)
    assert torch.equal(a.shape, b.shape) and torch.equal(a.expression, b.expression)
    assert a.iterations_run == b.iterations_run


def test_focal_stays_within_the_field_of_view_bounds(head, truth):
    X = head.landmarks(head.animate(truth["expr"][None], HeadPose.neutral(1), truth["shape"][None]))[0]
    f_min, f_max = focal_from_fov(50.0, W), focal_from_fov(10.0, W)
    # near-orthographic photo (2.5 deg) with a very wide initial guess (100 deg)
    tele = Cameras(look_at(torch.tensor([0.0, 0.0, 6.0]), torch.zeros(3))[None], intrinsics(focal_from_fov(2.5, W), W, H)[None], W, H)
    r = fit_head_to_landmarks(head, project_points(X, tele)[0][0], truth["ids"], (W, H), init_focal_px=focal_from_fov(100.0, W))
    assert f_min <= r.focal_px <= f_max and r.focal_px > 0.9 * f_max
    # very wide photo (80 deg) from close by
    wide = Cameras(look_at(torch.tensor([0.0, 0.0, 0.25]), torch.zeros(3))[None], intrinsics(focal_from_fov(80.0, W), W, H)[None], W, H)
    r = fit_head_to_landmarks(head, project_points(X, wide)[0][0], truth["ids"], (W, H))
    assert f_min <= r.focal_px <= f_max
    # custom range
    r = fit_head_to_landmarks(head, truth["uv"], truth["ids"], (W, H), config=FitConfig(fov_range_deg=(30.0, 40.0)))
    assert focal_from_fov(40.0, W) <= r.focal_px <= focal_from_fov(30.0, W)


def test_camera_only_fit_keeps_the_heads_identity(head, truth):
    r = fit_head_to_landmarks(head, truth["uv"], truth["ids"], (W, H), fit_shape=False, fit_expression=False, fit_jaw=True)
    assert torch.equal(r.shape, head.shape) and torch.equal(r.expression, torch.zeros(10))
    assert r.reprojection_error_px.median < 10.0  # shape/expression differences remain


def test_region_weights_can_ignore_a_region(head, truth):
    lips = {int(i) for i in truth["ids"]} & {0, 13, 14, 17, 61, 78, 291, 308}
    y = truth["uv"].clone()
    rows = [k for k, i in enumerate(truth["ids"].tolist()) if i in lips]
    y[rows] += torch.tensor([0.0, 60.0])  # consistently wrong lips
    r = fit_head_to_landmarks(head, y, truth["ids"], (W, H), region_weights={"lips": 0.0})
    err = (_fitted_uv(head, r) - truth["uv"]).norm(dim=1)
    others = torch.ones(len(y), dtype=torch.bool)
    others[rows] = False
    assert err[others].mean() < 1.0
    assert "lips" in region_names() and "face_oval" in region_names()
    with pytest.raises(ValueError, match="unknown region"):
        fit_head_to_landmarks(head, y, truth["ids"], (W, H), region_weights={"ears": 1.0})


def test_input_errors_are_clear(head, truth):
    with pytest.raises(ValueError, match="at least 6"):
        fit_head_to_landmarks(head, truth["uv"][:5], truth["ids"][:5], (W, H))
    with pytest.raises(ValueError, match="repeat"):
        fit_head_to_landmarks(head, truth["uv"][:2].repeat(4, 1), truth["ids"][:2].repeat(4), (W, H))
    with pytest.raises(ValueError, match="ibug68"):
        fit_head_to_landmarks(head, truth["uv"], truth["ids"], (W, H), convention="ibug68")


class _TinyRig(HeadModel):
    """A non-FLAME head: no shape space, two named expressions, 60 landmarks numbered 0..59."""

    name, version, licence = "tiny-rig", "1", "test"

    def __init__(self) -> None:
        a = fs.make_flame_arrays(n_lat=10, n_lon=16, seed=4)
        g = torch.Generator().manual_seed(4)
        self.template = torch.from_numpy(a["v_template"]).float()
        self.faces = torch.from_numpy(a["f"].astype("int64"))
        front = torch.nonzero(self.template[self.faces].mean(1)[:, 2] > 0.03).flatten()
        self.basis = torch.randn(2, len(self.template), 3, generator=g) * 3e-3
        choice = front[torch.randint(len(front), (60,), generator=g)]
        bary = torch.rand(60, 3, generator=g) + 0.1
        self.landmark_embedding = LandmarkEmbedding(choice, bary / bary.sum(1, keepdim=True), torch.arange(60))

    @property
    def num_vertices(self) -> int:
        return len(self.template)

    @property
    def expression_dim(self) -> int:
        return 2

    @property
    def expression_names(self) -> list[str]:
        return ["a", "b"]

    def animate(self, expression, pose, shape=None):
        assert shape is None
        v = self.template[None] + torch.einsum("be,evc->bvc", expression, self.basis)
        R = axis_angle_to_matrix(pose.rotation)
        return v @ R.transpose(1, 2) + pose.translation[:, None]

    def save(self, path):
        raise NotImplementedError


def test_works_for_any_head_model():
    rig = _TinyRig()
    expr = torch.tensor([0.7, -0.4])
    cam = Cameras(look_at(torch.tensor([-0.15, -0.05, 0.7]), torch.zeros(3))[None], intrinsics(focal_from_fov(22.0, W), W, H)[None], W, H)
    uv = project_points(rig.landmarks(rig.animate(expr[None], HeadPose.neutral(1)))[0], cam)[0][0]
    ids = torch.arange(60)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(5))  # detections in any order
    r = fit_head_to_landmarks(rig, uv[perm], ids[perm], (W, H))
    assert r.shape.numel() == 0 and r.reprojection_error_px.mean < 1.0
    assert torch.allclose(r.expression, expr, atol=0.05)
