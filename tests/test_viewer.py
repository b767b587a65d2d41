"""The animated package (.glb) and ``zero1toa view``'s page, checked against the project's own posing
and renderer: a numpy reader of the package reposes the avatar like ``BoundGaussians.posed``, and
headless Chromium (SwiftShader WebGL2) draws what ``render_avatar`` draws."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from animate_fixtures import build_animate_smoke  # noqa: E402

from zero1toa.animate.package import build_package, pose_package, read_package  # noqa: E402
from zero1toa.avatar.gaussians import quat_to_matrix  # noqa: E402
from zero1toa.head.base import HeadPose  # noqa: E402
from zero1toa.viewer.browser import find_chromium, psnr  # noqa: E402

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package `chromium`, or set ZERO1TOA_CHROMIUM)")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return build_animate_smoke(tmp_path_factory.getbasetemp() / "animate_smoke_root")


@pytest.fixture(scope="module")
def avatar(smoke):
    from zero1toa.animate.animate import reference_view, resolve_checkpoint
    from zero1toa.avatar.checkpoint import load_avatar

    resolved = resolve_checkpoint(smoke)
    gaussians, head, info = load_avatar(resolved.avatar_dir)
    camera, _ = reference_view(resolved, head, info)
    return gaussians, head, camera


def _frames(head):
    """(label, expression [E], pose [18]) cases: presets, jaw, neck, global rotation, translation."""
    out = []
    for name, pose_values in (("neutral", {}), ("smile", {"neck": [0.1, 0.3, -0.05]}), ("jaw_open", {"rotation": [0.05, -0.2, 0.0]}), ("surprise", {"translation": [0.01, -0.02, 0.03]})):
        e, jaw = head.expression_preset(name, 1.0)
        pose = HeadPose.neutral(1)
        pose.jaw = jaw[None] + torch.tensor([[0.08, 0.0, 0.02]])
        for key, value in pose_values.items():
            getattr(pose, key)[0] = torch.tensor(value)
        out.append((name, e, pose))
    return out


def _assert_posed_match(pkg, gaussians, head, cases, mean_tol=1e-6):
    neutral = None
    for name, e, pose in cases:
        ref = gaussians.posed(head, e[None], pose)[0]
        got = pose_package(pkg, e.numpy(), pose.as_vector()[0].numpy())
        means = ref.means.detach().double().numpy()
        assert np.abs(got["means"] - means).max() < mean_tol, name  # metres: float32 offsets, float64 posing
        R = quat_to_matrix(ref.quats.detach()).double().numpy()
        assert np.abs(got["rotations"] - R).max() < 2e-3, name  # float16 local quaternions
        scales = ref.scales.detach().double().numpy()
        assert (np.abs(got["scales"] - scales) / scales).max() < 2e-3, name  # float16 log-scales
        assert np.abs(got["opacities"] - ref.opacities.detach().numpy()).max() < 2e-3
        assert np.abs(got["sh"] - ref.colors.detach().numpy()).max() < 5e-3
        if neutral is None:
            neutral = got["means"]
        else:  # the case really moved the head (a test of a frozen reader would pass otherwise)
            assert np.linalg.norm(got["means"] - neutral, axis=-1).max() > 0.003, name


def test_package_reposes_like_the_avatar(avatar):
    gaussians, head, camera = avatar
    data = build_package(gaussians, head, camera)
    pkg = read_package(data)
    assert pkg.meta["counts"]["gaussians"] == gaussians.num_gaussians
    assert pkg.meta["expression_names"] == head.expression_names
    _assert_posed_match(pkg, gaussians, head, _frames(head))
    # drive presets travel as the frames zero1toa.animate.drive makes
    from zero1toa.animate.drive import preset_sequence

    talk = preset_sequence("talk", head, 48)
    assert np.allclose(pkg.arrays["drive_talk_expression"], talk.expressions.numpy(), atol=1e-6)
    assert np.allclose(pkg.arrays["drive_talk_pose"], talk.pose.as_vector().numpy(), atol=1e-6)
    assert pkg.arrays["drive_turntable_yaw_deg"][-1] == pytest.approx(360.0)


def test_package_is_a_gltf_binary(avatar):
    gaussians, head, camera = avatar
    data = build_package(gaussians, head, camera)
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20 : 20 + jlen])
    assert jtype == 0x4E4F534A and gltf["asset"]["version"] == "2.0"
    prim = gltf["meshes"][0]["primitives"][0]
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    assert pos["count"] == head.num_vertices and pos["componentType"] == 5126 and len(pos["min"]) == 3
    assert gltf["accessors"][prim["indices"]]["count"] == head.faces.numel()
    assert len(prim["targets"]) == head.expression_dim == len(gltf["meshes"][0]["extras"]["targetNames"])
    for view in gltf["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= gltf["buffers"][0]["byteLength"]
    # a morph target accessor is the blendshape itself (what a glTF engine would blend)
    t1 = gltf["accessors"][prim["targets"][1]["POSITION"]]
    view = gltf["bufferViews"][t1["bufferView"]]
    bin_start = 20 + jlen + 8
    start = bin_start + view["byteOffset"] + t1["byteOffset"]
    smile_dir = np.frombuffer(data[start : start + 12 * head.num_vertices], "<f4").reshape(-1, 3)
    assert np.array_equal(smile_dir, head.blendshapes[1].numpy())
    # the glTF skin alone (nodes, inverse bind matrices, JOINTS_k / WEIGHTS_k) skins like the package's equations
    def acc(i):
        a = gltf["accessors"][i]
        v = gltf["bufferViews"][a["bufferView"]]
        dt = {5126: "<f4", 5123: "<u2", 5125: "<u4"}[a["componentType"]]
        width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a["type"]]
        start = bin_start + v["byteOffset"] + a.get("byteOffset", 0)
        return np.frombuffer(data[start : start + a["count"] * width * np.dtype(dt).itemsize], dt).reshape(a["count"], width)

    from zero1toa.head.lbs import axis_angle_to_matrix
    from zero1toa.animate.package import pose_vertices

    skin = gltf["skins"][0]
    aa = torch.tensor([[0.05, -0.1, 0.0], [0.1, 0.3, -0.05], [0.2, 0.0, 0.03], [0.0, 0.1, 0.0], [0.0, -0.1, 0.0]])
    node_rot = {1 + j: axis_angle_to_matrix(aa[j]).double().numpy() for j in range(5)}
    world = {}

    def walk(n, parent):
        local = np.eye(4)
        local[:3, :3] = node_rot[n]
        local[:3, 3] = gltf["nodes"][n]["translation"]
        world[n] = parent @ local
        for c in gltf["nodes"][n].get("children", []):
            walk(c, world[n])

    walk(skin["skeleton"], np.eye(4))
    ibm = acc(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)
    joint_mats = np.stack([world[n] @ ibm[i] for i, n in enumerate(skin["joints"])])
    rest = np.concatenate([acc(prim["attributes"]["POSITION"]), np.ones((head.num_vertices, 1))], 1)
    skinned = np.zeros((head.num_vertices, 4))
    for k in range(2):
        ids, w = acc(prim["attributes"][f"JOINTS_{k}"]).astype(int), acc(prim["attributes"][f"WEIGHTS_{k}"])
        skinned += np.einsum("vi,viab,vb->va", w, joint_mats[ids], rest)
    pose = np.concatenate([aa.reshape(-1).numpy(), np.zeros(3)])
    assert np.abs(skinned[:, :3] - pose_vertices(read_package(data), np.zeros(head.expression_dim), pose)).max() < 1e-6
    with pytest.raises(ValueError, match="truncated"):
        read_package(data[:-8])
    with pytest.raises(ValueError, match="glTF 2.0"):
        read_package(b"PK\x03\x04" + data[4:])


def test_package_poses_flame(tmp_path):
    """FLAME: pose correctives and expression-dependent joints travel and are applied."""
    pytest.importorskip("scipy")
    import flame_synthetic as fs

    from zero1toa.avatar.gaussians import InitConfig, init_on_mesh
    from zero1toa.head.flame import FlameHead

    arrays = fs.make_flame_arrays()
    head = FlameHead.from_file(fs.write_flame_2020(tmp_path / "generic_model.pkl", arrays), fs.write_mediapipe_embedding(tmp_path / "mp.npz", arrays), n_shape=20, n_expr=10)
    head.set_shape(torch.linspace(-1, 1, 20))
    g = init_on_mesh(head, InitConfig(num_gaussians=800), seed=0)
    gen = torch.Generator().manual_seed(1)
    for key in ("means", "scales", "quats"):
        g.params[key].data += 0.2 * torch.randn(g.params[key].shape, generator=gen)
    pkg = read_package(build_package(g, head))
    assert "pose_dirs" in pkg.arrays and "joint_expr_dirs" in pkg.arrays
    cases = []
    for i in range(3):
        e = torch.randn(10, generator=gen)
        pose = HeadPose.from_vector(torch.randn(1, 18, generator=gen) * 0.2)
        cases.append((f"random_{i}", e, pose))
    _assert_posed_match(pkg, g, head, cases, mean_tol=5e-6)  # float16 pose correctives: ~1e-6 m


def test_view_page_is_self_contained(smoke, tmp_path):
    from zero1toa.viewer.page import write_view

    s = write_view(smoke)
    assert s["html"].endswith("exports/avatar.html")
    text = open(s["html"], encoding="utf-8").read()
    assert "<script src" not in text and "http://" not in text and "https://" not in text
    assert "zero1toa-package" in text and s["package_bytes"] * 4 // 3 < len(text)
    with pytest.raises(ValueError, match="html"):
        write_view(smoke, tmp_path / "avatar.png")


def _page_and_python(avatar, tmp_path, mutate=None):
    """The viewer page of the smoke avatar (optionally with its script edited) + what to compare."""
    from zero1toa.animate.package import build_package
    from zero1toa.viewer import page as page_mod

    gaussians, head, camera = avatar
    html = page_mod.build_page(build_package(gaussians, head, camera), "test")
    if mutate:
        html = mutate(html)
    path = tmp_path / "avatar.html"
    path.write_text(html, encoding="utf-8")
    return path


SIZE = 96
CAMERAS = ((0.0, 0.0), (35.0, 10.0), (-50.0, -8.0))  # (yaw, elevation) degrees, orbiting the head
EXPRESSIONS = ("neutral", "smile")


def _python_render(avatar, yaw, elev, name):
    from zero1toa.avatar.render import render_avatar
    from zero1toa.progressive.schedules import orbit_target
    from zero1toa.render.camera import orbit_from_reference

    gaussians, head, camera = avatar
    e, jaw = head.expression_preset(name, 1.0)
    pose = HeadPose.neutral(1)
    pose.jaw = jaw[None]
    cam = orbit_from_reference(camera, [yaw], [elev], orbit_target(head), SIZE)
    with torch.no_grad():
        img = render_avatar(gaussians, head, cam, e[None], pose, background=1.0).rgb[0].permute(1, 2, 0).numpy()
    return img, e, pose


def _shoot(page, e, pose, yaw, elev):
    page.evaluate(f"window.zero1toaViewer.setState({{yaw: {yaw}, elev: {elev}, expression: {json.dumps(e.tolist())}, pose: {json.dumps(pose.as_vector()[0].tolist())}}}) && 1")
    return page.screenshot(SIZE, SIZE)


@needs_chromium
def test_browser_matches_python_renderer(avatar, tmp_path):
    """3 cameras x 2 expressions: the page's screenshots against render_avatar (measured ~61 dB)."""
    from zero1toa.viewer.browser import open_viewer

    path = _page_and_python(avatar, tmp_path)
    with open_viewer(path, SIZE, SIZE) as page:
        scores = []
        for yaw, elev in CAMERAS:
            for name in EXPRESSIONS:
                ref, e, pose = _python_render(avatar, yaw, elev, name)
                shot = _shoot(page, e, pose, yaw, elev)
                assert shot.std() > 20, "the page drew a (nearly) uniform image"
                scores.append(psnr(shot, ref))
        assert min(scores) > 40.0, scores
        bench = page.evaluate("window.zero1toaViewer.benchmark(3)")
        assert bench["fps"] > 0 and bench["gaussians"] == avatar[0].num_gaussians
        # the page plays the project's CSV format like load_expression_sequence reads it
        from zero1toa.progressive.sequences import load_expression_sequence, save_expression_sequence

        head = avatar[1]
        expr = np.random.default_rng(0).uniform(0, 1, (4, head.expression_dim)).astype(np.float32)
        poses = HeadPose.from_vector(torch.from_numpy(np.random.default_rng(1).normal(0, 0.1, (4, 18)).astype(np.float32)))
        csv = save_expression_sequence(tmp_path / "seq.csv", expr, poses, head.expression_names)
        seq = load_expression_sequence(csv, head)
        parsed = page.evaluate(f"window.zero1toaViewer.parseCSV({json.dumps(csv.read_text())})")
        assert parsed["frames"] == 4
        assert np.allclose(np.array(parsed["expression"]).reshape(4, -1), seq.expressions, atol=1e-6)
        assert np.allclose(np.array(parsed["pose"]).reshape(4, 18), seq.pose.as_vector().numpy(), atol=1e-6)
        with pytest.raises(Exception, match="unknown CSV columns mouthSmile"):
            page.evaluate("window.zero1toaViewer.parseCSV('mouthSmile,smile\\n0.5,0.1\\n')")


@needs_chromium
def test_broken_pages_fail(avatar, tmp_path):
    """The comparison bites: a splat footprint 4x too narrow scores low, a page without its script never gets ready."""
    from zero1toa.viewer.browser import BrowserError, open_viewer

    sharp = _page_and_python(avatar, tmp_path, lambda h: h.replace("float sigma = 0.5 * (", "float sigma = 2.0 * (", 1))
    with open_viewer(sharp, SIZE, SIZE) as page:
        ref, e, pose = _python_render(avatar, 35.0, 10.0, "smile")
        assert psnr(_shoot(page, e, pose, 35.0, 10.0), ref) < 30.0
    blank = _page_and_python(avatar, tmp_path, lambda h: h.replace('document.getElementById("zero1toa-package")', 'document.getElementById("nothing")', 1))
    with pytest.raises(BrowserError, match="the viewer failed"):
        open_viewer(blank, SIZE, SIZE, timeout=30).close()


def test_report_links_the_viewer_page(tmp_path_factory, tmp_path):
    """``zero1toa report`` links ``<run>/exports/avatar.html`` relative to itself, or says how to make it."""
    import re

    from zero1toa.evaluate.report import build_report
    from zero1toa.viewer.page import default_view_path, write_view

    run = build_animate_smoke(tmp_path_factory.getbasetemp() / "animate_smoke_root")
    page = default_view_path(run)
    page.unlink(missing_ok=True)
    text = build_report([run], tmp_path / "report.html").read_text()
    assert f"zero1toa view {run}" in text and "class='viewer'" not in text
    write_view(run)
    text = build_report([run], tmp_path / "report.html").read_text()
    href = re.search(r"<a class='viewer' href='([^']+)'", text).group(1)
    assert (tmp_path / href).resolve() == page.resolve()
