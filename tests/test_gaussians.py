"""Gaussians bound to triangles: binding invariants, densification keeps the binding, .ply and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from zero1toa.avatar.checkpoint import CheckpointError, load_avatar, save_avatar
from zero1toa.avatar.gaussians import InitConfig, init_on_mesh, local_from_world, matrix_to_quat, quat_to_matrix, triangle_frames
from zero1toa.avatar.ply import export_ply, read_ply
from zero1toa.avatar.render import render_avatar
from zero1toa.head.base import HeadPose
from zero1toa.head.facemesh_rig import PART_NAMES
from zero1toa.preprocess.head_fit import load_fitted_head
from zero1toa.progressive.schedules import orbit_from_reference


@pytest.fixture(scope="module")
def rig_and_camera(fitted_run):
    fh = load_fitted_head(fitted_run / "head")
    return fh.head, fh.camera


@pytest.fixture()
def gaussians(rig_and_camera):
    head, _ = rig_and_camera
    return init_on_mesh(head, InitConfig(num_gaussians=3000), seed=0, face_labels=head.face_labels, part_names=PART_NAMES)


def test_quaternion_matrix_round_trip():
    q = torch.nn.functional.normalize(torch.randn(100, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-5)


def test_init_places_every_gaussian_on_its_triangle(gaussians, rig_and_camera):
    head, _ = rig_and_camera
    assert gaussians.num_gaussians >= 3000
    assert set(gaussians.binding.unique().tolist()) == set(range(head.faces.shape[0]))  # every triangle used
    assert gaussians.params["means"][:, 2].abs().max() < 1e-5  # on the triangle plane


def test_local_offsets_are_invariant_under_animation(gaussians, rig_and_camera):
    head, _ = rig_and_camera
    e = torch.zeros(2, head.expression_dim)
    e[1, 0] = 1.0  # jaw open
    e[1, 1] = 0.8  # smile
    pose = HeadPose.neutral(2)
    pose.neck[1] = torch.tensor([0.2, 0.3, 0.0])
    verts = head.animate(e, pose)
    frames = triangle_frames(verts, head.faces)
    for i in range(2):
        world = gaussians.to_world(frames, i)
        local = local_from_world(frames, world.means, gaussians.binding, i)
        assert torch.allclose(local, gaussians.params["means"], atol=1e-4)
    # and the animated frame really moved the jaw-bound Gaussians
    w0, w1 = gaussians.to_world(frames, 0).means, gaussians.to_world(frames, 1).means
    assert (w1 - w0).norm(dim=-1).max() > 0.01


def test_rigid_head_rotation_rotates_the_render(gaussians, rig_and_camera):
    head, camera = rig_and_camera
    root = head.joints[0]
    pose = HeadPose.neutral(1)
    pose.rotation = torch.tensor([[0.0, math.radians(-20.0), 0.0]])
    cam = camera.resized(64, 64)
    rotated = render_avatar(gaussians, head, cam, torch.zeros(1, head.expression_dim), pose)
    # turning the head by -20 deg about y == moving the camera by +20 deg yaw around the root joint
    orbit = orbit_from_reference(camera, [20.0], [0.0], root, 64)
    moved = render_avatar(gaussians, head, orbit, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))
    front = render_avatar(gaussians, head, cam, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))
    assert (rotated.rgb - moved.rgb).abs().max() < 2e-3
    assert (rotated.rgb - front.rgb).abs().mean() > 0.01  # it did change


def test_densification_children_inherit_their_parent_triangle(gaussians):
    from gsplat.strategy import ops

    params = gaussians.params
    optimizers = {
        k: torch.optim.Adam([{"params": p, "lr": 1e-3, "name": k}]) for k, p in params.items() if p.requires_grad
    }
    n = gaussians.num_gaussians
    parents = torch.arange(0, n, 7)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[parents] = True
    bind_before = gaussians.binding.clone()
    ops.duplicate(params, optimizers, {}, mask)
    assert gaussians.num_gaussians == n + len(parents)
    assert torch.equal(gaussians.binding[n:], bind_before[parents])
    n2 = gaussians.num_gaussians
    ops.split(params, optimizers, {}, torch.cat([mask, torch.zeros(n2 - n, dtype=torch.bool)]))
    # split removes the parents and appends two children each, bound to the parent's triangle
    assert gaussians.num_gaussians == n2 + len(parents)
    assert torch.equal(gaussians.binding[-2 * len(parents):], bind_before[parents].repeat(2))
    assert gaussians.binding.dtype == torch.long and not gaussians.binding.requires_grad


def test_ply_round_trip(gaussians, rig_and_camera, tmp_path):
    head, _ = rig_and_camera
    gaussians.params["shN"] = torch.nn.Parameter(torch.randn(gaussians.num_gaussians, 3, 3) * 0.1)
    gaussians.sh_degree = 1
    world = gaussians.posed(head, torch.zeros(1, head.expression_dim), HeadPose.neutral(1))[0]
    path = export_ply(tmp_path / "a.ply", world)
    back = read_ply(path)
    assert back.sh_degree == 1
    assert torch.allclose(back.means, world.means, atol=1e-6)
    assert torch.allclose(back.scales, world.scales, rtol=1e-5)
    assert torch.allclose(back.opacities, world.opacities.clamp(1e-6, 1 - 1e-6), atol=1e-5)
    assert torch.allclose(back.colors, world.colors.detach(), atol=1e-6)
    q0 = torch.nn.functional.normalize(world.quats, dim=-1)
    assert torch.allclose(back.quats.abs(), q0.abs().detach(), atol=1e-6)
    header = path.read_bytes()[:1200].decode("ascii", "ignore")
    for prop in ("property float f_dc_0", "property float f_rest_8", "property float opacity", "property float rot_3"):
        assert prop in header


def test_avatar_folder_round_trip_and_bad_files(gaussians, rig_and_camera, tmp_path):
    head, _ = rig_and_camera
    folder = save_avatar(tmp_path / "avatar", gaussians, head, {"round": "spatial_1"})
    g2, h2, info = load_avatar(folder)
    assert info["round"] == "spatial_1"
    for k, v in gaussians.params.items():
        assert torch.equal(g2.params[k], v.detach())
    (folder / "gaussians.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="gaussians.safetensors"):
        load_avatar(folder)
    with pytest.raises(CheckpointError, match="avatar folder"):
        load_avatar(tmp_path / "missing")


def test_training_checkpoint_rejects_foreign_files(tmp_path):
    from zero1toa.avatar.checkpoint import load_train_state

    bad = tmp_path / "checkpoint.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(CheckpointError, match="not a zero1toa training checkpoint"):
        load_train_state(bad)
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_train_state(bad)


def test_separable_ssim_matches_kornia():
    import kornia

    from zero1toa.train.losses import ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 56, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert abs(ssim(x, y).item() - kornia.metrics.ssim(x, y, 11).mean().item()) < 1e-5


def test_training_views_render_exactly_the_pixels_of_their_target(gaussians, rig_and_camera):
    """train.view_px: a window's camera renders that window of the full frame; the downsampled
    whole frame matches its target's size (so the loss compares the same pixels)."""
    from zero1toa.train.samples import SampleTensors
    from zero1toa.train.trainer import training_view

    head, camera = rig_and_camera
    R, v = 96, 48
    cam = camera.resized(R, R)
    pose = HeadPose.neutral(1)
    expr = torch.zeros(1, head.expression_dim)
    full = render_avatar(gaussians, head, cam, expr, pose, 1.0).rgb.detach()  # [1, 3, R, R]
    mask = torch.zeros(1, 1, R, R)
    mask[..., 10:30, 60:80] = 1.0  # the window must land on the foreground
    t = SampleTensors(full, mask, cam.viewmats, cam.Ks, expr, torch.zeros(1, 3), R)
    gen = torch.Generator().manual_seed(0)
    whole, target, m = training_view(t, 0, v, step=0, gen=gen)
    assert (whole.width, target.shape[-1], m.shape[-1]) == (v, v, v)
    crop_cam, target, m = training_view(t, 0, v, step=1, gen=gen)
    assert target.shape[-2:] == (v, v) and float(m.mean()) > 0.1  # centred near the foreground
    window = render_avatar(gaussians, head, crop_cam, expr, pose, 1.0).rgb.detach()
    assert torch.allclose(window, target, atol=2e-4)  # the window's render is that part of the frame
    same, *_ = training_view(t, 0, 0, step=1, gen=gen)
    assert same.width == R  # view_px = 0: the whole frame
