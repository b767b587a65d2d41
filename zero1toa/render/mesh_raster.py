"""A small vectorised triangle rasterizer (z-buffer, perspective-correct barycentrics).

The Gaussian renderer draws the avatar; this one draws the *head mesh*: the embedded generator
textures the mesh from the photo, preprocessing previews the fitted mesh, and visibility tests
("which triangles did the reference photo see?") need a z-buffer. It is pure torch, runs on any
device, and is not differentiable (nothing trains through it).

Method: scanline enumeration, vectorised: every triangle yields one item per bounding-box row,
each row its exact span of covered pixel centres, and ``repeat_interleave`` expands the spans
into fragments (only covered pixels, no bounding-box waste). The nearest fragment per pixel
wins through one ``scatter_reduce(amin)`` over a packed (depth, triangle id) integer key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .camera import Cameras

_ID_BITS = 24  # triangle ids up to 16M
_DEPTH_SCALE = float(2**36)  # depth quantisation (relative to far)


@dataclass
class Fragments:
    face_ids: Tensor  # [C, H, W] long, -1 where no triangle
    barycentric: Tensor  # [C, H, W, 3] perspective-correct
    depth: Tensor  # [C, H, W] camera z, +inf where empty

    @property
    def mask(self) -> Tensor:
        return self.face_ids >= 0


def rasterize_mesh(
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    near: float = 1e-3,
    far: float = 100.0,
    max_fragments: int = 40_000_000,
) -> Fragments:
    """Rasterize a mesh into every camera.

    vertices: [V, 3] shared by all cameras or [C, V, 3] one (animated) mesh per camera.
    faces: [F, 3] long.
    """
    C, H, W = len(cameras), cameras.height, cameras.width
    device = cameras.device
    if vertices.dim() == 2:
        vertices = vertices[None].expand(C, -1, -1)
    if vertices.shape[0] != C:
        raise ValueError(f"{vertices.shape[0]} vertex sets for {C} cameras")
    R = cameras.viewmats[:, :3, :3]
    t = cameras.viewmats[:, :3, 3]
    cam = vertices.float() @ R.transpose(1, 2) + t[:, None]  # [C, V, 3]
    z = cam[..., 2]
    pix = cam @ cameras.Ks.transpose(1, 2)
    uv = pix[..., :2] / z.clamp_min(near)[..., None]

    tri_uv = uv[:, faces]  # [C, F, 3, 2]
    tri_z = z[:, faces]  # [C, F, 3]
    valid = (tri_z > near).all(-1) & (tri_z < far).all(-1)
    # Bounding boxes in pixel indices (pixel j covers [j, j+1), centre j + 0.5).
    lo = torch.floor(tri_uv.amin(2) - 0.5).clamp_min(0)
    hi = torch.ceil(tri_uv.amax(2) - 0.5)
    x0, y0 = lo[..., 0].clamp(max=W - 1), lo[..., 1].clamp(max=H - 1)
    x1, y1 = hi[..., 0].clamp(max=W - 1), hi[..., 1].clamp(max=H - 1)
    bw = (x1 - x0 + 1).clamp_min(0)
    bh = (y1 - y0 + 1).clamp_min(0)
    valid &= (bw > 0) & (bh > 0) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)
    # Degenerate (zero-area) triangles produce no fragments.
    e1 = tri_uv[..., 1, :] - tri_uv[..., 0, :]
    e2 = tri_uv[..., 2, :] - tri_uv[..., 0, :]
    area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # [C, F]
    valid &= area.abs() > 1e-12

    # Scanline enumeration: one (triangle, row) pair per bounding-box row, then the exact
    # horizontal span of the triangle on that row's pixel centres; only covered pixels follow.
    cam_idx, tri_idx = torch.nonzero(valid, as_tuple=True)
    rows_per = bh[cam_idx, tri_idx].long()
    n_rows = int(rows_per.sum())
    face_ids = torch.full((C * H * W,), -1, dtype=torch.long, device=device)
    empty = Fragments(face_ids.view(C, H, W), torch.zeros(C, H, W, 3, device=device), torch.full((C, H, W), float("inf"), device=device))
    if n_rows == 0:
        return empty
    row_owner = torch.repeat_interleave(torch.arange(len(cam_idx), device=device), rows_per)
    row_local = torch.arange(n_rows, device=device) - (torch.cumsum(rows_per, 0) - rows_per)[row_owner]
    rc, rt = cam_idx[row_owner], tri_idx[row_owner]
    ry = y0[rc, rt].long() + row_local
    yc = ry.float() + 0.5
    tv = tri_uv[rc, rt]  # [Rw, 3, 2]
    pa, pb = tv, tv.roll(-1, dims=1)  # edges a->b
    ya, yb = pa[..., 1], pb[..., 1]
    crosses = (torch.minimum(ya, yb) <= yc[:, None]) & (torch.maximum(ya, yb) >= yc[:, None]) & (ya != yb)
    tpar = (yc[:, None] - ya) / torch.where(ya != yb, yb - ya, torch.ones_like(ya))
    xs = pa[..., 0] + tpar * (pb[..., 0] - pa[..., 0])
    inf = torch.tensor(float("inf"), device=device)
    xl = torch.where(crosses, xs, inf).amin(1)
    xr = torch.where(crosses, xs, -inf).amax(1)
    jl = torch.ceil(xl - 0.5 - 1e-6).clamp(min=0)
    jr = torch.floor(xr - 0.5 + 1e-6).clamp(max=W - 1)
    span = torch.where(torch.isfinite(xl) & torch.isfinite(xr), (jr - jl + 1).clamp_min(0), torch.zeros_like(jl)).long()
    total = int(span.sum())
    if total > max_fragments:
        raise MemoryError(f"mesh rasterization would enumerate {total} fragments (limit {max_fragments})")
    if total == 0:
        return empty
    owner = torch.repeat_interleave(torch.arange(n_rows, device=device), span)
    local = torch.arange(total, device=device) - (torch.cumsum(span, 0) - span)[owner]
    ci, ti = rc[owner], rt[owner]
    px = jl[owner].long() + local
    py = ry[owner]
    p = torch.stack([px.float() + 0.5, py.float() + 0.5], -1)  # [M, 2]

    a, b, c = tri_uv[ci, ti].unbind(1)  # [M, 2] each
    ar = area[ci, ti]

    def edge(p0: Tensor, p1: Tensor, q: Tensor) -> Tensor:
        return (p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[:, 0] - p0[:, 0])

    w0 = edge(b, c, p) / ar
    w1 = edge(c, a, p) / ar
    w2 = edge(a, b, p) / ar
    inside = (w0 >= -1e-4) & (w1 >= -1e-4) & (w2 >= -1e-4)  # spans are exact; slack for rounding
    zs = tri_z[ci, ti]  # [M, 3]
    # Perspective-correct: interpolate 1/z in screen space.
    inv = torch.stack([w0 / zs[:, 0], w1 / zs[:, 1], w2 / zs[:, 2]], -1)
    depth = 1.0 / inv.sum(-1).clamp_min(1e-12)
    keep = inside & (depth > near) & (depth < far)
    pix_index = (ci * H + py) * W + px
    pix_index, depth_k, ti_k, inv_k = pix_index[keep], depth[keep], ti[keep], inv[keep]

    key = (depth_k / far * _DEPTH_SCALE).long() * (1 << _ID_BITS) + ti_k
    best = torch.full((C * H * W,), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
    best.scatter_reduce_(0, pix_index, key, reduce="amin")
    winner = key == best[pix_index]
    face_ids[pix_index[winner]] = ti_k[winner]
    bary = torch.zeros(C * H * W, 3, device=device)
    bary[pix_index[winner]] = inv_k[winner] / inv_k[winner].sum(-1, keepdim=True)
    depth_img = torch.full((C * H * W,), float("inf"), device=device)
    depth_img[pix_index[winner]] = depth_k[winner]
    return Fragments(face_ids.view(C, H, W), bary.view(C, H, W, 3), depth_img.view(C, H, W))


def interpolate(fragments: Fragments, faces: Tensor, attributes: Tensor, background: float = 0.0) -> Tensor:
    """Interpolate per-vertex attributes [V, D] or [C, V, D] at every pixel -> [C, H, W, D]."""
    C, H, W = fragments.face_ids.shape
    if attributes.dim() == 2:
        attributes = attributes[None].expand(C, -1, -1)
    D = attributes.shape[-1]
    fid = fragments.face_ids.clamp_min(0)  # [C, H, W]
    tri_vertices = faces[fid]  # [C, H, W, 3]
    cidx = torch.arange(C, device=fid.device)[:, None, None, None].expand_as(tri_vertices)
    vals = attributes[cidx, tri_vertices]  # [C, H, W, 3, D]
    out = (vals * fragments.barycentric[..., None]).sum(-2)
    return torch.where(fragments.mask[..., None], out, torch.full_like(out, background)) if D else out


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit normals [..., F, 3] of triangles (right-handed winding)."""
    tri = vertices[..., faces, :]  # [..., F, 3, 3]
    n = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [..., V, 3]."""
    tri = vertices[..., faces, :]
    n = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    out = torch.zeros_like(vertices)
    for k in range(3):
        out.index_add_(-2, faces[:, k], n)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade_mesh(vertices: Tensor, faces: Tensor, cameras: Cameras, colors: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Simple headlight-shaded render for previews: (rgb [C, H, W, 3], mask [C, H, W])."""
    C = len(cameras)
    if vertices.dim() == 2:
        vertices = vertices[None].expand(C, -1, -1)
    frags = rasterize_mesh(vertices, faces, cameras)
    normals = vertex_normals(vertices, faces)  # [C, V, 3]
    n = interpolate(frags, faces, normals)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # direction from the surface towards the camera, in world space
    centres = cameras.centers()  # [C, 3]
    pos = interpolate(frags, faces, vertices)
    view = centres[:, None, None, :] - pos
    view = view / view.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lambert = (n * view).sum(-1).abs().clamp(0, 1)
    base = torch.full((C, cameras.height, cameras.width, 3), 0.8, device=vertices.device)
    if colors is not None:
        base = interpolate(frags, faces, colors if colors.dim() == 3 else colors[None].expand(C, -1, -1))
    rgb = base * (0.25 + 0.75 * lambert[..., None])
    rgb = torch.where(frags.mask[..., None], rgb, torch.ones_like(rgb))
    return rgb, frags.mask
