"""The mesh rasterizer: exact coverage of pixel centres, nearest surface wins, perspective-correct barycentrics."""

from __future__ import annotations

import torch

from zero1toa.render.camera import Cameras, intrinsics, look_at
from zero1toa.render.mesh_raster import interpolate, rasterize_mesh


def _camera(size=32):
    view = look_at(torch.tensor([0.0, 0.0, 2.0]), torch.zeros(3))
    return Cameras(view[None], intrinsics(40.0, size, size)[None], size, size)


def _point_in_triangle(p, a, b, c):
    def s(p1, p2, p3):
        return (p1[0] - p3[0]) * (p2[1] - p3[1]) - (p2[0] - p3[0]) * (p1[1] - p3[1])

    d1, d2, d3 = s(p, a, b), s(p, b, c), s(p, c, a)
    return not ((d1 < 0 or d2 < 0 or d3 < 0) and (d1 > 0 or d2 > 0 or d3 > 0))


def test_coverage_matches_pixel_centre_tests():
    cam = _camera()
    verts = torch.tensor([[-0.6, -0.5, 0.0], [0.7, -0.2, 0.0], [0.1, 0.8, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize_mesh(verts, faces, cam)
    from zero1toa.render.camera import project_points

    uv = project_points(verts, cam)[0][0]
    expected = torch.zeros(32, 32, dtype=torch.bool)
    for i in range(32):
        for j in range(32):
            expected[i, j] = _point_in_triangle((j + 0.5, i + 0.5), *uv.tolist())
    mismatch = (frags.mask[0] != expected).sum().item()
    assert mismatch <= 2, f"{mismatch} pixels differ from the centre test"  # edge-exact ties only


def test_nearest_surface_wins_and_depth_is_correct():
    cam = _camera()
    quad = torch.tensor([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=torch.float32)
    verts = torch.cat([quad, quad + torch.tensor([0.0, 0.0, 0.5])])  # second quad nearer the camera
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    frags = rasterize_mesh(verts, faces, cam)
    centre = frags.face_ids[0, 16, 16].item()
    assert centre in (2, 3)
    assert abs(frags.depth[0, 16, 16].item() - 1.5) < 1e-4


def test_barycentrics_are_perspective_correct():
    cam = _camera(64)
    # a slanted triangle: interpolating world z must give the true depth-derived z
    verts = torch.tensor([[-0.5, -0.5, -1.0], [0.5, -0.5, 0.5], [0.0, 0.5, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize_mesh(verts, faces, cam)
    z_interp = interpolate(frags, faces, verts[:, 2:3])[0, ..., 0]
    m = frags.mask[0]
    assert torch.allclose(z_interp[m], 2.0 - frags.depth[0][m], atol=1e-4)
