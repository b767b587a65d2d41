"""The built-in rig: built from the portrait's face mesh, it reprojects, closes the head, animates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zero1toa.head import topology as T
from zero1toa.head.base import HeadPose
from zero1toa.head.facemesh_rig import EXPRESSION_NAMES, PART_NAMES, FaceMeshRig
from zero1toa.head.lbs import axis_angle_to_matrix
from zero1toa.preprocess.head_fit import load_fitted_head
from zero1toa.preprocess.pipeline import load_preprocess
from zero1toa.render.camera import project_points
from zero1toa.render.mesh_raster import rasterize_mesh


@pytest.fixture(scope="module")
def fitted(fitted_run):
    return load_fitted_head(fitted_run / "head"), load_preprocess(fitted_run / "preprocess")


def test_rig_reprojects_onto_detected_landmarks(fitted):
    fh, pre = fitted
    v = fh.head.neutral_vertices()[None]
    lmk = fh.head.landmarks(v)[0]
    ids = fh.head.landmark_embedding.indices
    uv, _ = project_points(lmk[ids < 468], fh.camera)
    err = (uv[0] - torch.from_numpy(pre.landmarks[:, :2]).float()).norm(dim=-1)
    assert err.mean() < 0.5, f"mean reprojection error {err.mean():.3f} px"
    assert fh.info["reprojection_error_px"]["mean"] < 0.5


def test_rig_covers_the_mask_and_is_closed(fitted):
    fh, pre = fitted
    frags = rasterize_mesh(fh.head.neutral_vertices(), fh.head.faces, fh.camera)
    mask = torch.from_numpy(pre.mask) > 0.5
    gaps = int((mask & ~frags.mask[0]).sum())
    # no hole along the silhouette (each would be a notch in every view's outline); was 0.6 %
    assert gaps <= 1e-4 * int(mask.sum()), f"{gaps} foreground pixels have no rig surface"
    # the back of the head exists: a camera behind the head sees skull triangles
    from zero1toa.progressive.schedules import orbit_from_reference, orbit_target

    back = orbit_from_reference(fh.camera, [180.0], [0.0], orbit_target(fh.head), 128)
    f = rasterize_mesh(fh.head.neutral_vertices(), fh.head.faces, back)
    labels = fh.head.face_labels[f.face_ids[0][f.mask[0]]]
    assert (labels == PART_NAMES.index("skull")).float().mean() > 0.3


def test_triangles_face_outwards(fitted):
    fh, _ = fitted
    rig = fh.head
    v = rig.neutral_vertices()
    tri = v[rig.faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = torch.tensor(rig.meta["skull_centre"], dtype=torch.float32)
    skull = rig.face_labels == PART_NAMES.index("skull")
    out = ((tri[skull].mean(1) - centre) * n[skull]).sum(-1)
    assert (out > 0).float().mean() > 0.99
    face = rig.face_labels == PART_NAMES.index("face")
    assert (n[face][:, 2] > 0).float().mean() > 0.9  # the face looks forward (+z)


def _lmk(rig: FaceMeshRig, name: str, magnitude: float = 1.0) -> torch.Tensor:
    e, j = rig.expression_preset(name, magnitude) if name in ("neutral", "blink", "surprise", "pucker") else (torch.zeros(rig.expression_dim), torch.zeros(3))
    if name in EXPRESSION_NAMES:
        e = torch.zeros(rig.expression_dim)
        e[EXPRESSION_NAMES.index(name)] = magnitude
    pose = HeadPose.neutral(1)
    pose.jaw = j[None]
    return rig.landmarks(rig.animate(e[None], pose))[0]


def test_jaw_open_opens_the_mouth_and_keeps_the_upper_face(fitted):
    rig = fitted[0].head
    neutral, open_ = _lmk(rig, "neutral"), _lmk(rig, "jaw_open")
    gap0 = (neutral[T.UPPER_LIP_INNER] - neutral[T.LOWER_LIP_INNER]).norm()
    gap1 = (open_[T.UPPER_LIP_INNER] - open_[T.LOWER_LIP_INNER]).norm()
    assert gap1 > gap0 + 0.01, f"lip gap {gap0:.4f} -> {gap1:.4f} m"
    assert open_[T.CHIN, 1] < neutral[T.CHIN, 1] - 0.01  # chin drops
    assert (open_[T.FOREHEAD_TOP] - neutral[T.FOREHEAD_TOP]).norm() < 1e-5
    assert (open_[T.NOSE_TIP] - neutral[T.NOSE_TIP]).norm() < 1e-3  # under a millimetre


def test_blink_closes_one_eye_only(fitted):
    rig = fitted[0].head
    neutral, blink = _lmk(rig, "neutral"), _lmk(rig, "blink_right")
    right_open = (neutral[159] - neutral[145]).norm()
    right_closed = (blink[159] - blink[145]).norm()
    assert right_closed < 0.35 * right_open
    assert (blink[386] - neutral[386]).norm() < 1e-4  # the left eye does not move


def test_smile_lifts_mouth_corners(fitted):
    rig = fitted[0].head
    neutral, smile = _lmk(rig, "neutral"), _lmk(rig, "smile")
    for corner in (T.MOUTH_CORNER_LEFT, T.MOUTH_CORNER_RIGHT):
        assert smile[corner, 1] > neutral[corner, 1] + 0.003
    assert smile[T.MOUTH_CORNER_LEFT, 0] > neutral[T.MOUTH_CORNER_LEFT, 0]  # outwards (+x is subject's left)
    assert smile[T.MOUTH_CORNER_RIGHT, 0] < neutral[T.MOUTH_CORNER_RIGHT, 0]


def test_global_rotation_is_rigid_and_neck_keeps_the_torso(fitted):
    rig = fitted[0].head
    v0 = rig.neutral_vertices()
    pose = HeadPose.neutral(1)
    pose.rotation = torch.tensor([[0.0, math.radians(30), 0.0]])
    v1 = rig.animate(torch.zeros(1, rig.expression_dim), pose)[0]
    R = axis_angle_to_matrix(pose.rotation[0])
    root = rig.joints[0]
    expected = (v0 - root) @ R.T + root
    assert torch.allclose(v1, expected, atol=1e-5)
    pose = HeadPose.neutral(1)
    pose.neck = torch.tensor([[0.3, 0.0, 0.0]])
    v2 = rig.animate(torch.zeros(1, rig.expression_dim), pose)[0]
    torso = rig.faces[rig.face_labels == PART_NAMES.index("torso")].unique()
    assert torch.allclose(v2[torso], v0[torso], atol=1e-6)
    assert (v2[T.FOREHEAD_TOP] - v0[T.FOREHEAD_TOP]).norm() > 0.01


def test_save_load_round_trip(fitted, tmp_path):
    rig = fitted[0].head
    rig.save(tmp_path / "rig")
    back = FaceMeshRig.load(tmp_path / "rig")
    e = torch.rand(2, rig.expression_dim)
    pose = HeadPose.neutral(2)
    pose.jaw[:, 0] = 0.1
    assert torch.equal(back.animate(e, pose), rig.animate(e, pose))
    assert torch.equal(back.faces, rig.faces)


def test_degenerate_landmarks_are_rejected():
    from zero1toa.head.facemesh_rig import build_facemesh_rig

    with pytest.raises(ValueError, match="468"):
        build_facemesh_rig(np.zeros((100, 3)), 256)
    with pytest.raises(ValueError, match="degenerate"):
        build_facemesh_rig(np.zeros((468, 3)), 256)
