"""The built-in rig's mouth interior: a closed cavity, teeth on the skull and the jaw, a tongue.

The sample portrait smiles with its teeth showing: the "open photo mouth" case. Two closed ones:
the same face with the jaw rotated shut (by the rig's own jaw) and the inner lips brought
together, lifted back to landmarks and built into a second rig; and Grace Hopper's portrait, a
real closed mouth whose face mesh still leaves a sliver between the lips.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from zero1toa.head import topology as T
from zero1toa.head.base import HeadPose
from zero1toa.head.facemesh_rig import EXPRESSION_NAMES, JAW_OPEN_RAD, PART_NAMES, FaceMeshRig, build_facemesh_rig
from zero1toa.head.lbs import axis_angle_to_matrix
from zero1toa.head.rig_mesh import JAW, NECK, split_loop
from zero1toa.preprocess.head_fit import load_fitted_head
from zero1toa.preprocess.pipeline import load_preprocess
from zero1toa.render.camera import Cameras, orbit_from_reference, project_points
from zero1toa.render.mesh_raster import rasterize_mesh

INTERIOR = ("teeth_upper", "teeth_lower", "tongue")
MOUTH_PARTS = ("mouth", *INTERIOR)


@pytest.fixture(scope="module")
def fitted(fitted_run):
    return load_fitted_head(fitted_run / "head"), load_preprocess(fitted_run / "preprocess")


@pytest.fixture(scope="module")
def open_rig(fitted) -> FaceMeshRig:
    return fitted[0].head


@pytest.fixture(scope="module")
def hopper_build(tmp_path_factory):
    """Grace Hopper's portrait (matplotlib's sample data): a real photo with the mouth closed."""
    import matplotlib

    from zero1toa.preprocess.pipeline import PreprocessConfig, preprocess_image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = tmp_path_factory.mktemp("hopper") / "preprocess"
    preprocess_image(photo, out, PreprocessConfig(resolution=256))
    pre = load_preprocess(out)
    return build_facemesh_rig(pre.landmarks, pre.resolution, iris_px=pre.iris, mask=pre.mask)


@pytest.fixture(scope="module")
def closed_build(fitted):
    """The sample face with its mouth closed, built like the pipeline builds a rig (mask included)."""
    pre = fitted[1]
    landmarks = _closed_mouth_landmarks(pre.landmarks, pre.resolution)
    return build_facemesh_rig(landmarks, pre.resolution, iris_px=pre.iris, mask=pre.mask)


def _closed_mouth_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """[468, 3] the same face with the jaw rotated until the inner lips meet at the midline."""
    build = build_facemesh_rig(landmarks, size)
    rig, cam = build.rig, build.camera
    lo, hi = 0.0, 0.6
    for _ in range(30):  # bisect the closing jaw angle
        angle = 0.5 * (lo + hi)
        pose = HeadPose.neutral(1)
        pose.jaw[0, 0] = -angle
        verts = rig.animate(torch.zeros(1, rig.expression_dim), pose)[0, : T.NUM_FACEMESH]
        uv, depth = project_points(verts, cam)
        gap = float(uv[0, T.LOWER_LIP_INNER, 1] - uv[0, T.UPPER_LIP_INNER, 1])
        lo, hi = (angle, hi) if gap > 0.3 else (lo, angle)
    # back to the face mesh's pixel convention: z in pixels relative to the face's distance D
    D, f = rig.meta["camera_distance_m"], float(cam.Ks[0, 0, 0])
    out = np.concatenate([uv[0].double().numpy(), ((depth[0].double().numpy() - D) * f / D)[:, None]], 1)
    upper, lower = split_loop(T.facemesh_topology().loops["mouth"], 78, 308)
    if T.UPPER_LIP_INNER not in upper:
        upper, lower = lower, upper
    order = np.argsort(out[upper, 0])
    out[lower[1:-1], 1] = np.interp(out[lower[1:-1], 0], out[upper, 0][order], out[upper, 1][order]) + 0.05
    return out


def _vertices_of(rig: FaceMeshRig, *parts: str) -> torch.Tensor:
    sel = torch.zeros_like(rig.face_labels, dtype=torch.bool)
    for part in parts:
        sel |= rig.face_labels == PART_NAMES.index(part)
    return rig.faces[sel].unique()


def _pose(neck: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> HeadPose:
    pose = HeadPose.neutral(1)
    pose.neck = torch.tensor([neck])
    return pose


def _expression(rig: FaceMeshRig, **values: float) -> torch.Tensor:
    e = torch.zeros(1, rig.expression_dim)
    for name, value in values.items():
        e[0, EXPRESSION_NAMES.index(name)] = value
    return e


def _labels(rig: FaceMeshRig, cams: Cameras, expression: torch.Tensor) -> torch.Tensor:
    """[C, H, W] part id per pixel (-1 where empty)."""
    verts = rig.animate(expression.expand(len(cams), -1), HeadPose.neutral(len(cams)))
    fid = rasterize_mesh(verts, rig.faces, cams).face_ids
    return torch.where(fid >= 0, rig.face_labels[fid.clamp_min(0)], torch.full_like(fid, -1))


def _rotate(points: torch.Tensor, axis_angle: tuple[float, float, float], centre: torch.Tensor) -> torch.Tensor:
    R = axis_angle_to_matrix(torch.tensor(axis_angle))
    return (points - centre) @ R.T + centre


def test_upper_teeth_move_rigidly_with_the_skull(open_rig):
    rig = open_rig
    idx = _vertices_of(rig, "teeth_upper")
    assert len(idx) > 0
    v0 = rig.neutral_vertices()[idx]
    assert torch.equal(rig.skin_weights[idx], torch.nn.functional.one_hot(torch.tensor(NECK), 5).float().expand(len(idx), -1))
    assert torch.equal(rig.blendshapes[:, idx], torch.zeros_like(rig.blendshapes[:, idx]))
    opened = rig.animate(_expression(rig, jaw_open=1.0), _pose())[0, idx]
    assert torch.equal(opened, v0), "jaw_open moved the upper teeth"
    neck = (0.3, -0.2, 0.1)
    turned = rig.animate(torch.zeros(1, rig.expression_dim), _pose(neck))[0, idx]
    assert torch.allclose(turned, _rotate(v0, neck, rig.joints[NECK]), atol=1e-5)
    assert (turned - v0).norm(dim=-1).min() > 0.01


def test_lower_teeth_and_tongue_move_rigidly_with_the_jaw(open_rig):
    rig = open_rig
    idx = _vertices_of(rig, "teeth_lower", "tongue")
    v0 = rig.neutral_vertices()[idx]
    assert torch.equal(rig.skin_weights[idx], torch.nn.functional.one_hot(torch.tensor(JAW), 5).float().expand(len(idx), -1))
    jaw = (JAW_OPEN_RAD, 0.0, 0.0)
    opened = rig.animate(_expression(rig, jaw_open=1.0), _pose())[0, idx]
    expected = _rotate(v0, jaw, rig.joints[JAW])
    assert torch.allclose(opened, expected, atol=1e-5)
    assert (opened - v0).norm(dim=-1).min() > 0.01  # the jaw's rotation carries them centimetres
    neck = (0.3, -0.2, 0.1)
    both = rig.animate(_expression(rig, jaw_open=1.0), _pose(neck))[0, idx]
    assert torch.allclose(both, _rotate(expected, neck, rig.joints[NECK]), atol=1e-5)


def test_expressions_never_bend_the_teeth_or_the_tongue(open_rig):
    rig = open_rig
    idx = _vertices_of(rig, *INTERIOR)
    v0 = rig.neutral_vertices()[idx]
    others = {name: 1.0 for name in EXPRESSION_NAMES if name != "jaw_open"}
    moved = rig.animate(_expression(rig, **others), _pose())[0, idx]
    assert torch.equal(moved, v0)


def test_cavity_closes_the_mouth_and_faces_the_opening(fitted):
    rig, cam = fitted[0].head, fitted[0].camera
    faces = rig.faces.tolist()
    labels = rig.face_labels.tolist()
    cavity = [t for t, p in zip(faces, labels) if p == PART_NAMES.index("mouth")]
    face = [t for t, p in zip(faces, labels) if p == PART_NAMES.index("face")]

    def edges(tris):
        return [(t[k], t[(k + 1) % 3]) for t in tris for k in range(3)]

    in_cavity = Counter(frozenset(e) for e in edges(cavity))
    in_face = Counter(frozenset(e) for e in edges(face))
    loop = T.facemesh_topology().loops["mouth"]
    lip_edges = {frozenset((loop[i], loop[(i + 1) % len(loop)])) for i in range(len(loop))}
    assert lip_edges <= set(in_cavity)
    for e, n in in_cavity.items():
        if e in lip_edges:
            assert n == 1 and in_face[e] == 1, f"lip edge {sorted(e)}: {in_face[e]} face and {n} cavity triangles"
        else:
            assert n == 2 and in_face[e] == 0, f"cavity edge {sorted(e)} has {n} cavity triangles"
    directed = Counter(edges(cavity + face))
    assert all(directed[e] == 1 for e in edges(cavity)), "the cavity is not wound consistently with the face"

    # upper half on the skull, lower half on the jaw (the corners split), like the inner lips
    idx = _vertices_of(rig, "mouth")
    w, y = rig.skin_weights[idx], rig.template[idx, 1]
    assert torch.allclose(w[:, NECK] + w[:, JAW], torch.ones(len(idx)))
    assert set(w[:, JAW].unique().tolist()) == {0.0, 0.5, 1.0}
    assert y[w[:, JAW] == 1].max() < y[w[:, JAW] == 0].min()

    # opened, the cavity is seen from inside: the triangles the camera sees face it
    verts = rig.animate(_expression(rig, jaw_open=1.0), _pose())[0]
    frags = rasterize_mesh(verts, rig.faces, cam)
    fid = frags.face_ids[0][frags.mask[0]]
    seen = fid[rig.face_labels[fid] == PART_NAMES.index("mouth")]
    assert len(seen) > 100
    tri = verts[rig.faces[seen]]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing = ((cam.centers()[0] - tri.mean(1)) * normal).sum(-1) > 0
    assert facing.float().mean() > 0.98


def _inside_lips(rig: FaceMeshRig, cams: Cameras, expression: torch.Tensor) -> torch.Tensor:
    """[C, H, W] pixels inside the projected inner lip loop."""
    import cv2

    verts = rig.animate(expression.expand(len(cams), -1), HeadPose.neutral(len(cams)))
    uv, _ = project_points(verts[:, list(T.facemesh_topology().loops["mouth"])], cams)
    masks = []
    for c in range(len(cams)):
        img = np.zeros((cams.height, cams.width), np.uint8)
        cv2.fillPoly(img, [np.round(uv[c].numpy()).astype(np.int32)], 1)
        masks.append(torch.from_numpy(img.astype(bool)))
    return torch.stack(masks)


def _views(build, resolution: int = 160) -> Cameras:
    """The reference view and eight around it (yaw -50..50 x elevation -25..25)."""
    from zero1toa.progressive.schedules import orbit_target

    yaws, elevations = np.meshgrid([-50.0, 0.0, 50.0], [-25.0, 0.0, 25.0])
    return orbit_from_reference(build.camera, yaws.ravel(), elevations.ravel(), orbit_target(build.rig), resolution)


def test_teeth_hide_behind_closed_lips(closed_build, hopper_build):
    rig = closed_build.rig
    assert abs(closed_build.diagnostics["mouth_gap_m"]) < 1e-3
    labels = _labels(rig, _views(closed_build), torch.zeros(1, rig.expression_dim))
    for part in MOUTH_PARTS:
        shown = (labels == PART_NAMES.index(part)).sum((1, 2))
        assert int(shown.max()) == 0, f"{part} shows through the closed lips: {shown.tolist()} px per view"
    # A closed mouth in a real photo: the face mesh leaves a sliver between the lips, through
    # which the photo's view sees the dark cavity, never a tooth.
    rig = hopper_build.rig
    assert 0 < hopper_build.diagnostics["mouth_gap_m"] < 0.015 * rig.meta["face_width_m"]
    labels = _labels(rig, hopper_build.camera, torch.zeros(1, rig.expression_dim))
    for part in INTERIOR:
        assert int((labels == PART_NAMES.index(part)).sum()) == 0, f"{part} shows in the photo's view"


def test_teeth_show_when_the_jaw_opens(closed_build, hopper_build):
    for build in (closed_build, hopper_build):
        rig = build.rig
        front = _labels(rig, build.camera, _expression(rig, jaw_open=1.0))[0]
        px = int(torch.isin(front, torch.tensor([PART_NAMES.index(p) for p in ("teeth_upper", "teeth_lower")])).sum())
        assert px >= 30, f"{px} teeth pixels through the open mouth"


def test_the_interior_is_seen_only_through_the_mouth_opening(closed_build, hopper_build):
    """Nothing of the mouth pokes through the lips or the chin, closed or open, from any side.

    With the lip loop capped (a fan to its centre), every ray that sees the interior must cross
    the cap first: interior pixels of the whole rig are cap pixels of the face plus the cap.
    """
    loop = list(T.facemesh_topology().loops["mouth"])
    for build in (closed_build, hopper_build):
        rig, cams = build.rig, _views(build)
        n = rig.num_vertices
        face = rig.faces[rig.face_labels == PART_NAMES.index("face")]
        cap = torch.tensor([[loop[i], loop[(i + 1) % len(loop)], n] for i in range(len(loop))])
        interior = torch.tensor([PART_NAMES.index(p) for p in MOUTH_PARTS])
        for magnitude in (0.0, 1.0):
            e = _expression(rig, jaw_open=magnitude)
            verts = rig.animate(e.expand(len(cams), -1), HeadPose.neutral(len(cams)))  # [C, V, 3]
            capped = torch.cat([verts, verts[:, loop].mean(1, keepdim=True)], 1)
            fid = rasterize_mesh(verts, rig.faces, cams).face_ids
            seen = (fid >= 0) & torch.isin(rig.face_labels[fid.clamp_min(0)], interior)
            through = rasterize_mesh(capped, torch.cat([face, cap]), cams).face_ids >= len(face)
            leaks = (seen & ~through).sum((1, 2))
            assert int(leaks.max()) <= 2, f"jaw_open={magnitude}: interior pixels outside the opening per view {leaks.tolist()}"


def test_open_mouth_shows_only_the_mouth_interior(fitted):
    """Through the lips one sees cavity, teeth and tongue, never the neck or the back of the head."""
    rig, cam = fitted[0].head, fitted[0].camera
    allowed = torch.tensor([PART_NAMES.index(p) for p in ("face", *MOUTH_PARTS)])
    for magnitude in (0.0, 1.0):
        e = _expression(rig, jaw_open=magnitude)
        labels = _labels(rig, cam, e)[0][_inside_lips(rig, cam, e)[0]]
        assert torch.isin(labels, allowed).all(), f"jaw_open={magnitude}: {sorted(set(labels.tolist()))}"
        if magnitude == 0.0:  # the photo smiles with its upper teeth showing; so does the rig
            assert (labels == PART_NAMES.index("teeth_upper")).float().mean() > 0.3


def test_no_triangle_is_degenerate(open_rig, closed_build, hopper_build):
    for rig in (open_rig, closed_build.rig, hopper_build.rig):
        f = rig.faces
        assert ((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])).all()
        tri = rig.neutral_vertices().double()[f]
        area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
        assert area.min() > 1e-8, f"smallest triangle {area.min():.2e} m^2"
        sel = torch.isin(rig.face_labels, torch.tensor([PART_NAMES.index(p) for p in MOUTH_PARTS]))
        t = tri[sel]
        cos = []
        for k in range(3):
            a, b = t[:, (k + 1) % 3] - t[:, k], t[:, (k + 2) % 3] - t[:, k]
            cos.append((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))
        smallest = torch.rad2deg(torch.acos(torch.stack(cos).clamp(-1, 1))).min()
        assert smallest > 3.0, f"a mouth triangle has a {smallest:.1f} degree angle"


def test_teeth_and_tongue_are_closed_and_face_outwards(open_rig):
    rig = open_rig
    v = rig.neutral_vertices().double()
    for part in INTERIOR:
        tris = rig.faces[rig.face_labels == PART_NAMES.index(part)]
        directed = Counter((int(t[k]), int(t[(k + 1) % 3])) for t in tris for k in range(3))
        assert all(n == 1 and directed[(b, a)] == 1 for (a, b), n in directed.items()), f"{part} is not closed"
        a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
        assert (a * torch.linalg.cross(b, c)).sum() / 6 > 0, f"{part} is wound inwards"


def test_landmarks_stay_on_the_face_and_eyes(open_rig):
    on = open_rig.face_labels[open_rig.landmark_embedding.face_ids]
    assert torch.isin(on, torch.tensor([PART_NAMES.index("face"), PART_NAMES.index("eyeball")])).all()


def test_part_labels_keep_their_indices():
    assert PART_NAMES[:7] == ("face", "skull", "neck", "torso", "eyeball", "mouth", "backdrop")
    assert set(INTERIOR) <= set(PART_NAMES[7:])


def test_a_rig_saved_before_the_mouth_interior_fails_to_load(open_rig, tmp_path):
    from zero1toa.head.registry import load_head

    open_rig.save(tmp_path / "rig")
    back = FaceMeshRig.load(tmp_path / "rig")
    assert torch.equal(back.face_labels, open_rig.face_labels)
    info = json.loads((tmp_path / "rig" / "head.json").read_text())
    info["version"] = "1"
    (tmp_path / "rig" / "head.json").write_text(json.dumps(info))
    for load in (FaceMeshRig.load, load_head):
        with pytest.raises(ValueError, match="rig version 1 is not supported"):
            load(tmp_path / "rig")
