"""FlameHead on synthetic FLAME files: safe loading, the forward model, presets, persistence."""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import flame_synthetic as fs  # noqa: E402

from zero1toa.head.base import HeadPose  # noqa: E402
from zero1toa.head.flame import (  # noqa: E402
    FLAME_LICENCE,
    IBUG_68,
    FlameFileError,
    FlameHead,
    FlameModelNotFoundError,
    UnsafePickleError,
    detect_flame_version,
    read_landmark_embedding,
)
from zero1toa.head.registry import UnknownHeadKindError, load_head  # noqa: E402

pytest.importorskip("scipy")  # only the synthetic writers need scipy (the loader does not)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("flame")
    arrays = fs.make_flame_arrays()
    return {
        "root": root,
        "arrays": arrays,
        "p2020": fs.write_flame_2020(root / "FLAME2020" / "generic_model.pkl", arrays),
        "p2023": fs.write_flame_2023(root / "FLAME2023" / "flame2023.pkl", arrays),
        "mp": fs.write_mediapipe_embedding(root / "mediapipe_landmark_embedding.npz", arrays),
        "lmk68": fs.write_landmark68_npy(root / "landmark_embedding.npy", arrays),
    }


@pytest.fixture(scope="module")
def head(assets) -> FlameHead:
    return FlameHead.from_file(assets["p2020"], assets["mp"], n_shape=20, n_expr=10)


def _random_pose(batch: int, scale: float, seed: int) -> HeadPose:
    g = torch.Generator().manual_seed(seed)
    return HeadPose.from_vector(torch.randn(batch, 18, generator=g) * scale)


def _reference_forward(a: dict, shape: np.ndarray, expr: np.ndarray, pose: HeadPose) -> np.ndarray:
    """FLAME written out independently in NumPy/scipy, one frame at a time."""
    from scipy.spatial.transform import Rotation

    out = []
    sd = a["shapedirs"]
    for b in range(len(pose)):
        v = a["v_template"] + sd[:, :, : shape.shape[1]] @ shape[b] + sd[:, :, 300 : 300 + expr.shape[1]] @ expr[b]
        J = a["J_regressor"] @ v
        aa = pose.joint_rotations()[b].double().numpy()
        R = Rotation.from_rotvec(aa).as_matrix()
        feat = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
        v = v + a["posedirs"] @ feat
        G = []
        for j, p in enumerate(fs.V_PARENTS):
            local = np.eye(4)
            local[:3, :3] = R[j]
            local[:3, 3] = J[j] - (J[p] if p >= 0 else 0)
            G.append(local if p < 0 else G[p] @ local)
        A = np.stack(G)
        A[:, :3, 3] -= np.einsum("jab,jb->ja", A[:, :3, :3], J)
        T = np.einsum("vj,jab->vab", a["weights"], A)
        posed = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
        out.append(posed + pose.translation[b].double().numpy())
    return np.stack(out)


# ---- loading ------------------------------------------------------------------------------


def test_loads_2020_layout_without_chumpy(assets, head):
    assert "chumpy" not in sys.modules  # nothing imported (or faked) chumpy to read the file
    assert b"chumpy.ch\nCh" in assets["p2020"].read_bytes()  # ... which really references it
    assert head.version == "2020" and head.name == "flame2020"
    assert head.file_info["chumpy_classes"] == ["chumpy.ch.Ch"]
    assert head.file_info["sparse_classes"] == ["scipy.sparse.csc.csc_matrix"]
    assert head.file_info["pickle_protocol"] == 2
    a = assets["arrays"]
    assert head.num_vertices == a["v_template"].shape[0]
    assert torch.equal(head.faces, torch.from_numpy(a["f"].astype(np.int64)))
    assert torch.allclose(head.j_regressor.double(), torch.from_numpy(a["J_regressor"]), atol=1e-7)
    assert head.shape_dim == 20 and head.expression_dim == 10
    assert head.licence == FLAME_LICENCE
    assert len(head.landmark_embedding.indices) == 105


def test_loads_2023_layout_and_matches_2020(assets, head):
    h23 = FlameHead.from_file(assets["p2023"], assets["mp"], n_shape=20, n_expr=10)
    assert h23.version == "2023" and h23.name == "flame2023"
    assert h23.file_info["pickle_protocol"] == 4
    pose = _random_pose(3, 0.3, seed=1)
    expr = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    shape = torch.randn(3, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(head.animate(expr, pose, shape), h23.animate(expr, pose, shape))


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_pickle_protocols_load(tmp_path, assets, head, protocol):
    path = fs.write_flame_2023(tmp_path / f"flame2023_p{protocol}.pkl", assets["arrays"], protocol=protocol)
    assert b"copy_reg" in path.read_bytes()  # objects come back through copy_reg._reconstructor
    h = FlameHead.from_file(path, n_shape=20, n_expr=10)
    assert h.file_info["pickle_protocol"] == 0
    pose = _random_pose(1, 0.3, seed=8)
    assert torch.equal(h.animate(torch.ones(1, 10), pose), head.animate(torch.ones(1, 10), pose))


def test_version_detection_and_override(assets):
    assert detect_flame_version(Path("x/FLAME2020/generic_model.pkl")) == "2020"
    assert detect_flame_version(Path("x/flame2023.pkl")) == "2023"
    assert detect_flame_version(Path("x/flame2023_no_jaw.pkl")) == "2023-no-jaw"
    assert detect_flame_version(Path("x/flame2023_Open.pkl")) == "2023-open"
    assert detect_flame_version(Path("assets/generic_model.pkl")) == "unknown"
    h = FlameHead.from_file(assets["p2023"], n_shape=5, n_expr=5, version="2023-no-jaw")
    assert h.version == "2023-no-jaw" and h.name == "flame2023-no-jaw"


# ---- forward model -----------------------------------------------------------------------


def test_animate_matches_independent_reference(assets, head):
    pose = _random_pose(2, 0.25, seed=4)
    g = torch.Generator().manual_seed(5)
    shape, expr = torch.randn(2, 20, generator=g), torch.randn(2, 10, generator=g)
    got = head.animate(expr, pose, shape).double().numpy()
    ref = _reference_forward(assets["arrays"], shape.double().numpy(), expr.double().numpy(), pose)
    assert np.abs(got - ref).max() < 1e-6


def test_zero_parameters_give_the_template(assets, head):
    verts = head.animate(torch.zeros(1, 10), HeadPose.neutral(1))
    assert torch.allclose(verts[0].double(), torch.from_numpy(assets["arrays"]["v_template"]), atol=1e-7)
    assert torch.allclose(head.neutral_vertices(), verts[0])


def test_jaw_rotation_moves_only_jaw_vertices(assets, head):
    pose = HeadPose.neutral(1)
    pose.jaw[0, 0] = 0.3
    moved = (head.animate(torch.zeros(1, 10), pose) - head.neutral_vertices()).norm(dim=-1)[0]
    jaw_w = torch.from_numpy(assets["arrays"]["weights"][:, 2])
    assert moved[jaw_w == 0].max() < 1e-7
    assert moved[jaw_w == 1].min() > 1e-3
    # opening the jaw (+x rotation) moves the chin down
    chin = (jaw_w == 1) & (head.v_template[:, 2] > 0.05)
    delta = head.animate(torch.zeros(1, 10), pose)[0] - head.neutral_vertices()
    assert (delta[chin, 1] < 0).all()


def test_global_rotation_is_rigid_about_the_root(head):
    pose = HeadPose.neutral(1)
    pose.rotation[0] = torch.tensor([0.1, 0.5, -0.2])
    posed = head.animate(torch.zeros(1, 10), pose)[0]
    rest = head.neutral_vertices()
    from zero1toa.head.lbs import axis_angle_to_matrix

    R = axis_angle_to_matrix(pose.rotation[0])
    root = head._j_template[0] + head._j_shapedirs[0] @ head.shape
    expected = (rest - root) @ R.T + root
    assert torch.allclose(posed, expected, atol=1e-6)


def test_translation_is_added_last(head):
    pose = _random_pose(1, 0.2, seed=6)
    shifted = HeadPose(pose.rotation, pose.neck, pose.jaw, pose.eyes, pose.translation + torch.tensor([[0.1, -0.2, 0.3]]))
    a = head.animate(torch.zeros(1, 10), pose)
    b = head.animate(torch.zeros(1, 10), shifted)
    assert torch.allclose(b - a, torch.tensor([0.1, -0.2, 0.3]).expand_as(a), atol=1e-6)


def test_animate_rejects_wrong_sizes(head):
    with pytest.raises(ValueError, match="expression must have 10"):
        head.animate(torch.zeros(1, 7), HeadPose.neutral(1))
    with pytest.raises(ValueError, match="shape must have 20"):
        head.animate(torch.zeros(1, 10), HeadPose.neutral(1), torch.zeros(1, 3))


# ---- safety and errors -------------------------------------------------------------------


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = fs.write_malicious_pickle(tmp_path / "generic_model.pkl", marker)
    with pytest.raises(UnsafePickleError, match="system"):
        FlameHead.from_file(evil)
    assert not marker.exists()


def test_malicious_embedding_is_refused(tmp_path, assets):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "landmark_embedding.npy", np.array({"x": fs._Evil(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        FlameHead.from_file(assets["p2023"], tmp_path / "landmark_embedding.npy", n_shape=2, n_expr=2)
    assert not marker.exists()


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    missing = tmp_path / "FLAME2020" / "generic_model.pkl"
    with pytest.raises(FlameModelNotFoundError) as err:
        FlameHead.from_file(missing)
    assert str(missing) in str(err.value) and "flame.is.tue.mpg.de" in str(err.value)


def test_wrong_layouts_are_clear_errors(tmp_path, assets):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(FlameFileError, match="not a FLAME model"):
        FlameHead.from_file(p)
    p = tmp_path / "partial.pkl"
    p.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": np.zeros((1, 3), dtype=np.int64)}))
    with pytest.raises(FlameFileError, match="missing keys.*shapedirs"):
        FlameHead.from_file(p)
    p = tmp_path / "truncated.pkl"
    p.write_bytes(assets["p2023"].read_bytes()[:100_000])
    with pytest.raises(FlameFileError, match="truncated"):
        FlameHead.from_file(p)
    p = tmp_path / "text.pkl"
    p.write_text("this is not a pickle")
    with pytest.raises(FlameFileError):
        FlameHead.from_file(p)


def test_embedding_for_another_topology_is_refused(tmp_path, assets):
    np.savez(tmp_path / "e.npz", lmk_face_idx=np.array([0, 10_000]), lmk_b_coords=np.full((2, 3), 1 / 3), landmark_indices=np.array([1, 2]))
    with pytest.raises(FlameFileError, match="another topology"):
        FlameHead.from_file(assets["p2023"], tmp_path / "e.npz", n_shape=2, n_expr=2)


def test_68_point_npy_embedding_loads_safely(assets):
    emb, digest, info = read_landmark_embedding(assets["lmk68"], num_faces=len(assets["arrays"]["f"]))
    assert emb.convention == IBUG_68 and emb.indices.tolist() == list(range(68))
    assert info["dynamic_contour"] == "present, not used"
    assert len(digest) == 64
    h = FlameHead.from_file(assets["p2023"], assets["lmk68"], n_shape=4, n_expr=4)
    assert h.landmarks(h.animate(torch.zeros(1, 4), HeadPose.neutral(1))).shape == (1, 68, 3)


# ---- presets -----------------------------------------------------------------------------


def _lmk(head: FlameHead, expr: torch.Tensor, jaw: torch.Tensor) -> dict[int, torch.Tensor]:
    pose = HeadPose.neutral(1)
    pose.jaw[0] = jaw
    pts = head.landmarks(head.animate(expr[None], pose))[0]
    return {int(i): pts[k] for k, i in enumerate(head.landmark_embedding.indices)}


def test_presets_move_the_landmarks_they_name(head):
    neutral = _lmk(head, *head.expression_preset("neutral"))
    smile = _lmk(head, *head.expression_preset("smile"))
    assert smile[61][1] > neutral[61][1] and smile[291][1] > neutral[291][1]
    blink = _lmk(head, *head.expression_preset("blink"))
    gap = lambda d: (d[159] - d[145]).norm() + (d[386] - d[374]).norm()  # noqa: E731
    assert gap(blink) < gap(neutral) - 0.002  # lids move towards each other (synthetic bases are weak)
    expr, jaw = head.expression_preset("jaw_open", 0.5)
    assert torch.equal(expr, torch.zeros(10)) and torch.allclose(jaw, torch.tensor([0.175, 0.0, 0.0]))
    e1, j1 = head.expression_preset("surprise", 1.0)
    e2, j2 = head.expression_preset("surprise", 2.0)
    assert torch.allclose(e2, 2 * e1) and torch.allclose(j2, 2 * j1) and j1[0] > 0
    with pytest.raises(ValueError, match="unknown expression preset"):
        head.expression_preset("wink")


def test_presets_without_mediapipe_embedding_warn_and_stay_neutral(assets):
    h = FlameHead.from_file(assets["p2023"], n_shape=5, n_expr=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expr, jaw = h.expression_preset("smile")
    assert torch.equal(expr, torch.zeros(5)) and any("MediaPipe" in str(w.message) for w in caught)


# ---- persistence -------------------------------------------------------------------------


def test_save_load_round_trip_and_registry(tmp_path, assets):
    h = FlameHead.from_file(assets["p2023"], assets["mp"], n_shape=20, n_expr=10)
    h.set_shape(torch.linspace(-1, 1, 20))
    h.save(tmp_path / "head")
    meta = json.loads((tmp_path / "head" / "head.json").read_text())
    assert meta["kind"] == "flame" and meta["version"] == "2023" and meta["n_shape"] == 20
    assert meta["model_sha256"] == h.model_sha256 and meta["embedding_sha256"] == h.embedding_sha256
    assert {"model_path", "embedding_path", "n_expr"} <= set(meta)
    back = FlameHead.load(tmp_path / "head")
    assert torch.equal(back.shape, h.shape)
    pose = _random_pose(2, 0.2, seed=7)
    assert torch.equal(back.animate(torch.ones(2, 10), pose), h.animate(torch.ones(2, 10), pose))
    via_registry = load_head(tmp_path / "head")
    assert isinstance(via_registry, FlameHead) and torch.equal(via_registry.shape, h.shape)
    from zero1toa.head.base import load_head as base_load_head

    assert isinstance(base_load_head(tmp_path / "head"), FlameHead)


def test_load_refuses_a_different_model_file(tmp_path, assets):
    model = fs.write_flame_2023(tmp_path / "flame2023.pkl", assets["arrays"])
    h = FlameHead.from_file(model, n_shape=4, n_expr=4)
    h.save(tmp_path / "head")
    fs.write_flame_2023(model, fs.make_flame_arrays(seed=9))  # another file in the same place
    with pytest.raises(FlameFileError, match="sha256"):
        FlameHead.load(tmp_path / "head")
    model.unlink()
    with pytest.raises(FlameModelNotFoundError, match="flame2023.pkl"):
        FlameHead.load(tmp_path / "head")


def test_registry_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="head.json"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"kind": "bfm"}))
    with pytest.raises(UnknownHeadKindError, match="'bfm'.*flame.*facemesh-rig"):
        load_head(tmp_path)


def test_the_embedded_generator_textures_a_flame_head(head):
    """The default generator works on any head model (FLAME has no part labels, no atlas)."""
    from zero1toa.generate.base import GenerationRequest
    from zero1toa.generate.reprojection import ReprojectionConfig, ReprojectionGenerator
    from zero1toa.render.camera import Cameras, intrinsics, look_at

    v = head.neutral_vertices()
    centre = v.mean(0)
    eye = centre + torch.tensor([0.0, 0.0, 1.0])
    cam = Cameras(look_at(eye, centre)[None], intrinsics(300.0, 64, 64)[None], 64, 64)
    photo = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    gen = ReprojectionGenerator(head, photo, cam, config=ReprojectionConfig(resolution=32, supersample=1))
    out = gen.generate(GenerationRequest(photo, torch.zeros(1, 3, 32, 32), cameras=cam.resized(32, 32), poses=HeadPose.neutral(1)))
    assert out.frames.shape == (1, 3, 32, 32) and float(out.masks.mean()) > 0.05
