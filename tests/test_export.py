"""``zero1toa export``: 3DGS .ply of posed frames and sequences, and the export/import round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from animate_fixtures import build_animate_smoke  # noqa: E402

from zero1toa.animate.export import export_frame, export_sequence, parse_expression, read_ply_sequence  # noqa: E402
from zero1toa.avatar.ply import read_ply  # noqa: E402
from zero1toa.head.base import HeadPose  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return build_animate_smoke(tmp_path_factory.getbasetemp() / "animate_smoke_root")


@pytest.fixture(scope="module")
def avatar(smoke):
    from zero1toa.avatar.checkpoint import load_avatar

    gaussians, head, _ = load_avatar(smoke / "spatial" / "round_1" / "avatar")
    return gaussians, head


def _assert_same(ply, world):
    """A read-back .ply equals the posed Gaussians (float32 storage, log/logit round trips)."""
    assert torch.allclose(ply.means, world.means.detach(), atol=1e-6)
    assert torch.allclose(ply.scales, world.scales.detach(), rtol=1e-5, atol=1e-9)
    q_ply = torch.nn.functional.normalize(ply.quats, dim=-1)
    q_world = torch.nn.functional.normalize(world.quats.detach(), dim=-1)
    assert torch.allclose(q_ply, q_world, atol=1e-6)
    assert torch.allclose(ply.opacities, world.opacities.detach().clamp(1e-6, 1 - 1e-6), atol=1e-6)
    assert torch.allclose(ply.colors, world.colors.detach(), atol=1e-6)
    assert ply.sh_degree == world.sh_degree


def test_neutral_round_trip_and_render(smoke, avatar, tmp_path):
    from zero1toa.avatar.render import render_avatar
    from zero1toa.render.rasterize import rasterize
    from zero1toa.utils.io import read_json
    from zero1toa.render.camera import Cameras

    gaussians, head = avatar
    summary = export_frame(smoke, tmp_path / "neutral.ply")
    assert summary["label"] == "neutral" and summary["num_gaussians"] == gaussians.num_gaussians
    ply = read_ply(tmp_path / "neutral.ply")
    world = gaussians.posed(head, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))[0]
    _assert_same(ply, world)
    # the imported .ply renders the same picture as the avatar itself
    cam = Cameras.from_dict(read_json(smoke / "head" / "camera.json")).resized(64, 64)
    bg = torch.ones(1, 3)
    imported = rasterize(ply.means, ply.quats, ply.scales, ply.opacities, ply.colors, cam.viewmats, cam.Ks, 64, 64, sh_degree=ply.sh_degree, backgrounds=bg, render_mode="RGB")
    with torch.no_grad():
        own = render_avatar(gaussians, head, cam, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))
    assert torch.allclose(imported.rgb[0].permute(2, 0, 1).clamp(0, 1), own.rgb[0], atol=1e-4)


def test_named_expression_and_coefficients(smoke, avatar, tmp_path):
    gaussians, head = avatar
    s = export_frame(smoke, tmp_path, "jaw_open:0.8")  # a folder: avatar_<label>.ply inside
    assert s["ply"].endswith("avatar_jaw_open_0.8.ply")
    expr, jaw = head.expression_preset("jaw_open", 0.8)
    pose = HeadPose.neutral(1)
    pose.jaw = jaw[None]
    world = gaussians.posed(head, expr[None], pose)[0]
    ply = read_ply(s["ply"])
    _assert_same(ply, world)
    neutral = gaussians.posed(head, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))[0]
    moved = (ply.means - neutral.means).norm(dim=-1)
    assert moved.max() > 0.005  # the jaw opened (metres) ...
    assert (moved < 1e-6).float().mean() > 0.3  # ... and most of the head did not move

    s2 = export_frame(smoke, tmp_path / "mix.ply", "jaw_open=0.5,blink_left=1")
    names = head.expression_names
    assert s2["expression"][names.index("jaw_open")] == 0.5 and s2["expression"][names.index("blink_left")] == 1.0
    with pytest.raises(KeyError, match="unknown expression preset"):
        export_frame(smoke, tmp_path / "x.ply", "grin")
    with pytest.raises(ValueError, match="unknown expression coefficient"):
        parse_expression("grin=1", head)


def test_frame_of_an_expression_file(smoke, avatar, tmp_path):
    from zero1toa.progressive.sequences import load_expression_sequence, save_expression_sequence

    gaussians, head = avatar
    n = 4
    expr = np.zeros((n, head.expression_dim), np.float32)
    expr[:, head.expression_names.index("smile")] = np.linspace(0, 1, n)
    pose = HeadPose.neutral(n)
    pose.rotation[:, 1] = torch.linspace(0, 0.3, n)
    csv = save_expression_sequence(tmp_path / "seq.csv", expr, pose, head.expression_names)
    s = export_frame(smoke, tmp_path / "f2.ply", csv, frame=2)
    stored = load_expression_sequence(csv, head)  # what the CSV holds (6 decimals)
    assert np.allclose(stored.expressions[2], expr[2], atol=1e-6)
    world = gaussians.posed(head, torch.from_numpy(stored.expressions[2:3]), stored.pose[2])[0]
    _assert_same(read_ply(s["ply"]), world)
    with pytest.raises(ValueError, match="outside"):
        export_frame(smoke, tmp_path / "f9.ply", csv, frame=9)


def test_sequence_folder_round_trip(smoke, avatar, tmp_path):
    from zero1toa.progressive.sequences import load_expression_sequence

    gaussians, head = avatar
    n = 4
    expr = np.zeros((n, head.expression_dim), np.float32)
    expr[:, head.expression_names.index("jaw_open")] = np.linspace(0, 1, n)
    rotation = np.zeros((n, 3), np.float32)
    rotation[:, 1] = np.linspace(0, 0.2, n)
    npz = tmp_path / "seq.npz"
    np.savez(npz, expression=expr, rotation=rotation)
    out = tmp_path / "seq_ply"
    summary = export_sequence(smoke, out, npz, fps=30)
    assert summary["frames"] == n
    index, paths = read_ply_sequence(out)
    assert index["num_frames"] == n and index["fps"] == 30.0 and index["kind"] == "npz"
    assert [p.name for p in paths] == [f"frame_{i:05d}.ply" for i in range(n)]
    pose = HeadPose.neutral(n)
    pose.rotation = torch.from_numpy(rotation)
    worlds = gaussians.posed(head, torch.from_numpy(expr), pose)
    for i, path in enumerate(paths):
        _assert_same(read_ply(path), worlds[i])
        assert np.allclose(index["frames"][i]["expression"], expr[i])
        assert np.allclose(index["frames"][i]["pose"][:3], rotation[i])
    again = load_expression_sequence(out / "sequence.csv", head)
    assert np.allclose(again.expressions, expr, atol=1e-6)
    # a preset sequence too; a turntable moves only the camera and is refused
    export_sequence(smoke, tmp_path / "talk_ply", "talk", frames=3)
    assert len(read_ply_sequence(tmp_path / "talk_ply")[1]) == 3
    with pytest.raises(ValueError, match="moves the camera"):
        export_sequence(smoke, tmp_path / "turn_ply", "turntable", frames=3)
    assert not (tmp_path / "turn_ply").exists()


def test_cli(smoke, tmp_path):
    from flows.cli import main

    assert main(["export", str(smoke), "--format", "ply", "--out", str(tmp_path / "cli.ply"), "--expression", "smile"]) == 0
    assert read_ply(tmp_path / "cli.ply").means.shape[0] > 0
    assert main(["export", str(smoke), "--out", str(tmp_path / "cli_seq"), "--sequence", "blink", "--frames", "2", "--no-progress"]) == 0
    assert len(read_ply_sequence(tmp_path / "cli_seq")[1]) == 2
    assert main(["export", str(smoke), "--out", str(tmp_path / "bad.ply"), "--expression", "grin"]) == 1


def test_cli_default_out_and_package(smoke, avatar, capsys):
    """Without --out (the README's `zero1toa export AVATAR --format ply`) exports land in <run>/exports/,
    printed; --format package writes the animated .glb there, readable by the package reader."""
    import json

    from flows.cli import main
    from zero1toa.animate.package import pose_package, read_package

    gaussians, head = avatar
    exports = smoke / "exports"
    assert main(["export", str(smoke), "--format", "ply"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ply"] == str(exports / "avatar_neutral.ply")
    _assert_same(read_ply(exports / "avatar_neutral.ply"), gaussians.posed(head, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))[0])
    assert main(["export", str(smoke / "spatial" / "round_1"), "--sequence", "blink", "--frames", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["folder"] == str(exports / "blink_ply")  # a round folder finds its run
    assert main(["export", str(smoke), "--format", "package"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["package"] == str(exports / "avatar.glb") and summary["bytes"] == (exports / "avatar.glb").stat().st_size
    pkg = read_package(exports / "avatar.glb")
    expr, jaw = head.expression_preset("smile", 1.0)
    pose = HeadPose.neutral(1)
    pose.jaw = jaw[None]
    got = pose_package(pkg, expr.numpy(), pose.as_vector()[0].numpy())
    assert np.abs(got["means"] - gaussians.posed(head, expr[None], pose)[0].means.detach().numpy()).max() < 1e-6
    assert main(["export", str(smoke), "--format", "package", "--out", "avatar.ply"]) == 1
    assert ".glb" in capsys.readouterr().err
    assert main(["export", str(smoke), "--format", "package", "--expression", "smile"]) == 1
