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
    # the ARKit mapping the page plays dropped captures with: arkit_basis's matrices and name table
    from zero1toa.animate.arkit import _CANONICAL, arkit_basis

    basis, block = arkit_basis(head), pkg.meta["arkit"]
    for key in ("expression", "jaw", "eyes"):
        assert np.array_equal(pkg.arrays[block["arrays"][key]], getattr(basis, key).numpy()), key
    assert block["keys"] == _CANONICAL and block["rotation"]["units"] == "halfturns" and block["unmapped"] == basis.unmapped
    assert block["rotation"]["groups"]["head"] == {"columns": ["HeadYaw", "HeadPitch", "HeadRoll"], "joint": "neck", "pose_offset": 3}
    assert read_package(build_package(gaussians, head, camera, arkit_angles="degrees")).meta["arkit"]["rotation"]["units"] == "degrees"
    with pytest.raises(ValueError, match="angles must be one of"):
        build_package(gaussians, head, camera, arkit_angles="turns")


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
    assert pkg.arrays["arkit_expression"].shape == (52, 10) and pkg.meta["arkit"]["approximate"]  # through FLAME's fitted presets
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


ARKIT_CSV = __import__("pathlib").Path(__file__).parent / "data" / "arkit_capture.csv"


def _messy_arkit_capture(path):
    """tests/data/arkit_capture.csv made awkward: other tools' column names (``mouthSmile_L``,
    ``blendShape.JawOpen``, lowercase, a quoted header cell), an unknown column, no right-eye
    rotation columns (that eye falls back to ``eyeLook*``), jaw sideways and eyeLook values,
    coefficients outside [0, 1], a non-number row, a short row and a blank line."""
    import csv

    rows = list(csv.reader(ARKIT_CSV.open(newline="")))
    header, data = rows[0], rows[1:]
    rename = {"MouthSmileLeft": "mouthSmile_L", "JawOpen": "blendShape.JawOpen", "EyeBlinkRight": "eyeblinkright", "EyeLookUpRight": "eyeLookUp_R"}
    drop = {"RightEyeYaw", "RightEyePitch", "RightEyeRoll"}
    keep = [i for i, c in enumerate(header) if c not in drop]
    col = {c: keep.index(i) for i, c in enumerate(header) if i in keep}
    out = [[rename.get(header[i], header[i]) for i in keep] + ["Confidence"]]
    for t, row in enumerate(data):
        r = [row[i] for i in keep] + ["0.9"]
        r[col["JawLeft"]] = f"{0.1 * t:.3f}"
        r[col["EyeLookUpRight"]] = f"{0.08 * t:.3f}"
        r[col["EyeLookInRight"]] = f"{0.05 * (11 - t):.3f}"
        if t == 3:
            r[col["JawOpen"]] = "1.4"  # clipped to 1
            r[col["BrowInnerUp"]] = "-0.2"  # clipped to 0
        out.append(r)
    out.insert(5, out[5][:-3])  # a short row
    out.insert(8, list(out[8]))
    out[8][col["MouthPucker"]] = "abc"  # not a number
    lines = [",".join(r) for r in out]
    lines[0] = lines[0].replace("HeadYaw", '"HeadYaw"')
    lines.insert(10, "")
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def _page_arkit(page, text, angles=None):
    arg = json.dumps(text) + (f", {json.dumps(angles)}" if angles else "")
    out = page.evaluate(f"window.zero1toaViewer.parseCSV({arg})")
    T = out["frames"]
    return out, np.array(out["expression"]).reshape(T, -1), np.array(out["pose"]).reshape(T, 18)


@needs_chromium
def test_browser_plays_arkit_capture(avatar, tmp_path, caplog):
    """A Live Link Face CSV dropped on the page plays as ``zero1toa animate --drive capture.csv``
    poses it: expressions, neck/jaw/eye pose and fps match ``load_arkit_sequence`` (float32 vs
    float64 only), bad rows / unknown columns / clipping are reported, and a held frame's
    screenshot matches ``render_avatar`` of the same frame."""
    import logging

    from zero1toa.animate.arkit import load_arkit_sequence
    from zero1toa.avatar.render import render_avatar
    from zero1toa.progressive.schedules import orbit_target
    from zero1toa.render.camera import orbit_from_reference
    from zero1toa.viewer.browser import open_viewer

    gaussians, head, camera = avatar
    messy = _messy_arkit_capture(tmp_path / "messy.csv")
    path = _page_and_python(avatar, tmp_path)
    with open_viewer(path, SIZE, SIZE) as page:
        for csv_path, angles in ((ARKIT_CSV, None), (messy, None), (messy, "radians")):
            with caplog.at_level(logging.WARNING, logger="zero1toa.animate.arkit"):
                seq, capture = load_arkit_sequence(csv_path, head, angles=angles or "halfturns")
            out, expr, pose = _page_arkit(page, csv_path.read_text(), angles)
            label = f"{csv_path.name} {angles}"
            assert out["kind"] == "arkit" and out["frames"] == len(seq), label
            assert out["capture_fps"] == capture.fps == 60.0, label
            assert np.abs(expr - seq.expressions).max() < 1e-5, label
            assert np.abs(pose - seq.pose.as_vector().numpy()).max() < 1e-5, label
            assert len(out["skipped"]) == len(capture.skipped_rows) and out["skipped"] == capture.skipped_rows, label
            assert out["unknown"] == capture.unknown_columns and out["clipped"] == capture.clipped, label
        # the messy file exercised what it should: jaw sideways, the right eye from eyeLook*, the left from its columns
        ref = seq.pose.as_vector().numpy()
        assert np.abs(ref[:, 6:9]).max() > 0.05 and np.abs(ref[:, 12:15]).max() > 0.1 and np.abs(ref[:, 9:12]).max() > 0.01
        assert capture.clipped == 3 and capture.unknown_columns == ["Confidence"] and len(capture.skipped_rows) == 2
        assert "line 9, column MouthPucker: 'abc' is not a number" in capture.skipped_rows
        # the status line names what was skipped, ignored and clipped (Python warns the same)
        played = page.evaluate(f"window.zero1toaViewer.playCSV({json.dumps(messy.read_text())}, 'messy.csv')")
        expected = ["ARKit capture, 12 frames at 60 fps", "skipped 2 row(s): " + "; ".join(capture.skipped_rows),
                    "ignored column(s) that are not ARKit blendshapes or Live Link Face rotations: Confidence", "clipped 3 blendshape value(s)"]  # fmt: skip
        for text in expected:
            assert text in played["status"], (text, played["status"])
        assert "line 6" in caplog.text and "Confidence" in caplog.text
        # one frame of the real capture, held, against the Python renderer
        seq, _ = load_arkit_sequence(ARKIT_CSV, head)
        f = int(np.argmax(np.abs(seq.pose.neck.numpy()).sum(1)))
        played = page.evaluate(f"window.zero1toaViewer.playCSV({json.dumps(ARKIT_CSV.read_text())}, 'arkit_capture.csv', {f}) && window.zero1toaViewer.getState()")
        assert np.abs(np.array(played["pose"]) - seq.pose.as_vector()[f].numpy()).max() < 1e-5
        cam = orbit_from_reference(camera, [0.0], [0.0], orbit_target(head), SIZE)
        with torch.no_grad():
            ref_img = render_avatar(gaussians, head, cam, torch.from_numpy(seq.expressions[f : f + 1]), seq.pose[f : f + 1], background=1.0).rgb[0].permute(1, 2, 0).numpy()
            neutral = render_avatar(gaussians, head, cam, torch.zeros(1, head.expression_dim), HeadPose.neutral(1), background=1.0).rgb[0].permute(1, 2, 0).numpy()
        shot = page.screenshot(SIZE, SIZE)
        assert psnr(neutral, ref_img) < 35.0  # the frame's turned head and open jaw are visible
        assert psnr(shot, ref_img) > 40.0, psnr(shot, ref_img)
