"""The head's texture atlas: one image over the whole head surface, the same in every view.

Why: the embedded generator textures the head from the photo, which sees about a third of it.
Whatever fills the rest (hair at the back, the far cheek, the nape) must be *one* answer shared
by every view, every frame and every refresh, or the pseudo ground truth contradicts itself and
the avatar averages the contradictions into a smear. So the fill lives in a texture space of
the rig, computed once per avatar (``fit_head``), and the generator looks it up.

Layout: a spherical (azimuth x elevation) map around a centre on the face's mirror plane
(canonical head frame: +x the subject's left, +y up, +z forward). Column 0 is azimuth -180
degrees (the back of the head), the middle column faces forward, columns wrap; row 0 is
elevation +90. A head, its neck and its shoulders are close to star-shaped around the skull
centre, so each direction holds one surface point (the outermost, where several lie on a ray).
Mirroring the face across its symmetry plane is a column flip of this image.

The map from texels to surface points comes from rasterising the rest mesh in atlas space (so
each texel knows its triangle and barycentrics); a surface point is looked up from its
direction. Both are pure functions of the rig, so they agree everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..render.camera import Cameras, project_points
from ..render.mesh_raster import rasterize_mesh, vertex_normals

#: Head parts whose appearance the atlas holds (the eyeballs and the mouth interior have their own).
ATLAS_PARTS: tuple[str, ...] = ("face", "skull", "neck", "torso", "backdrop")

_WRAP_PAD = 4  # columns copied across the wrap border before bilinear lookups


@dataclass(frozen=True)
class AtlasLayout:
    """Where the atlas sits on the head: its size and the centre its directions start from."""

    height: int  # rows: elevation +90 (row 0) .. -90 degrees
    width: int  # columns: azimuth -180 .. +180 degrees (wraps)
    centre: tuple[float, float, float]  # canonical frame, x = 0 (the mirror plane)

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "centre": list(self.centre)}

    @staticmethod
    def from_dict(data: dict) -> "AtlasLayout":
        return AtlasLayout(int(data["height"]), int(data["width"]), tuple(float(c) for c in data["centre"]))

    def texel_coords(self, points: Tensor) -> Tensor:
        """Continuous pixel coordinates (x, y) [..., 2] of points [..., 3]; pixel j covers [j, j+1)."""
        d = points - torch.tensor(self.centre, dtype=points.dtype, device=points.device)
        az = torch.atan2(d[..., 0], d[..., 2])  # 0 forward, +pi/2 the subject's left
        el = torch.atan2(d[..., 1], d[..., [0, 2]].norm(dim=-1))
        x = (az + math.pi) / (2 * math.pi) * self.width
        y = (math.pi / 2 - el) / math.pi * self.height
        return torch.stack([x, y], -1)


def layout_for_head(head, height: int) -> AtlasLayout:
    """A layout centred on the head's skull (the rig records it), on its mirror plane."""
    centre = head.meta.get("skull_centre") if hasattr(head, "meta") else None
    if centre is None:
        c = head.template.mean(0).tolist()
        centre = [0.0, c[1], c[2]]
    return AtlasLayout(int(height), int(2 * height), (0.0, float(centre[1]), float(centre[2])))


def atlas_face_mask(head) -> Tensor:
    """[F] bool: the triangles whose appearance lives in the atlas."""
    labels = getattr(head, "face_labels", None)
    if labels is None:
        return torch.ones(head.faces.shape[0], dtype=torch.bool)
    from ..head.facemesh_rig import PART_NAMES

    keep = torch.zeros_like(labels, dtype=torch.bool)
    for name in ATLAS_PARTS:
        if name in PART_NAMES:
            keep |= labels == PART_NAMES.index(name)
    return keep


@dataclass
class AtlasSurface:
    """Which surface point every texel shows (on the mesh the atlas was built on)."""

    face_ids: Tensor  # [H, W] long into head.faces, -1 where no surface faces this direction
    barycentric: Tensor  # [H, W, 3]

    @property
    def mask(self) -> Tensor:
        return self.face_ids >= 0

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """[H, W, 3] surface points for vertex positions [V, 3] (any pose of the same mesh)."""
        tri = vertices[faces[self.face_ids.clamp_min(0)]]  # [H, W, 3, 3]
        return (tri * self.barycentric[..., None]).sum(-2)


def rasterize_atlas(vertices: Tensor, faces: Tensor, layout: AtlasLayout, face_mask: Tensor | None = None) -> AtlasSurface:
    """Rasterise a mesh [V, 3] / [F, 3] in atlas space (outermost surface per direction).

    Triangles straddling the wrap border (azimuth +-180) are drawn twice, shifted by one atlas
    width each way, so both sides of the border are covered.
    """
    faces_all = faces
    fid_all = torch.arange(faces.shape[0])
    if face_mask is not None:
        faces, fid_all = faces[face_mask], fid_all[face_mask]
    xy = layout.texel_coords(vertices.double())  # [V, 2]
    r = (vertices.double() - torch.tensor(layout.centre, dtype=torch.float64)).norm(dim=-1)
    tri_xy = xy[faces]  # [F, 3, 2]
    tri_r = r[faces]  # [F, 3]
    W = layout.width
    span = tri_xy[..., 0].amax(1) - tri_xy[..., 0].amin(1)
    seam = span > W / 2
    # Unwrap the seam triangles: move their left-side corners one width to the right.
    unwrapped = tri_xy.clone()
    sx = unwrapped[seam][..., 0]
    unwrapped[seam] = torch.stack([torch.where(sx < W / 2, sx + W, sx), unwrapped[seam][..., 1]], -1)
    copies = [(tri_xy[~seam], tri_r[~seam], fid_all[~seam])]
    for shift in (0.0, -float(W)):
        moved = unwrapped[seam].clone()
        moved[..., 0] += shift
        copies.append((moved, tri_r[seam], fid_all[seam]))
    tri = torch.cat([c[0] for c in copies])  # [T, 3, 2]
    rad = torch.cat([c[1] for c in copies])  # [T, 3]
    owner = torch.cat([c[2] for c in copies])  # [T]
    # A pseudo camera: identity pose, unit intrinsics, points at z ~ 1 with x = px * z, so the
    # projection is exactly the atlas coordinates; the outermost surface is the nearest.
    z = 1.0 + 1e-3 * (1.0 - rad / rad.max().clamp_min(1e-9))
    pts = torch.cat([tri * z[..., None], z[..., None]], -1).reshape(-1, 3).float()  # [T*3, 3]
    tri_faces = torch.arange(pts.shape[0]).reshape(-1, 3)
    cam = Cameras(torch.eye(4)[None], torch.eye(3)[None], W, layout.height)
    frags = rasterize_mesh(pts, tri_faces, cam)
    local = frags.face_ids[0]
    face_ids = torch.where(local >= 0, owner[local.clamp_min(0)], torch.full_like(local, -1))
    # Linear interpolation in atlas space is not linear on the surface (far from it near the
    # poles, where one triangle spans many azimuths): intersect each texel's own ray with the
    # triangle it landed on, so the texel's surface point lies in the texel's direction.
    face_ids, bary = _ray_barycentrics(vertices.double(), faces_all, face_ids, layout, torch.unique(owner))
    return AtlasSurface(face_ids, bary.float())


def texel_directions(layout: AtlasLayout) -> Tensor:
    """[H, W, 3] unit directions of the texel centres (float64)."""
    rows = torch.arange(layout.height, dtype=torch.float64) + 0.5
    cols = torch.arange(layout.width, dtype=torch.float64) + 0.5
    el = math.pi / 2 - rows / layout.height * math.pi
    az = cols / layout.width * 2 * math.pi - math.pi
    el, az = torch.meshgrid(el, az, indexing="ij")
    return torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)


def _moller_trumbore(o: Tensor, d: Tensor, tri: Tensor) -> tuple[Tensor, Tensor]:
    """(t [...], barycentrics [..., 3]) of rays o + t d [..., 3] against triangles [..., 3, 3] (broadcast)."""
    a, e1, e2 = tri[..., 0, :], tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    d, e2 = torch.broadcast_tensors(d, e2)
    pvec = torch.linalg.cross(d, e2)
    det = (e1 * pvec).sum(-1)
    inv = 1.0 / torch.where(det.abs() > 1e-18, det, torch.full_like(det, 1e-18))
    tvec = o - a
    u = (tvec * pvec).sum(-1) * inv
    qvec = torch.linalg.cross(tvec, e1)
    w = (d * qvec).sum(-1) * inv
    t = (e2 * qvec).sum(-1) * inv
    return t, torch.stack([1 - u - w, u, w], -1)


def _ray_barycentrics(
    vertices: Tensor, faces: Tensor, face_ids: Tensor, layout: AtlasLayout, candidates: Tensor, chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """(face ids [H, W], barycentrics [H, W, 3]) where each texel's ray from the centre meets the surface.

    Starts from the triangle the atlas-space raster assigned; texels whose ray misses it (near
    the poles) are cast against every candidate triangle, keeping the outermost hit.
    """
    d = texel_directions(layout)  # [H, W, 3]
    o = torch.tensor(layout.centre, dtype=torch.float64)
    _, bary = _moller_trumbore(o, d, vertices[faces[face_ids.clamp_min(0)]])
    miss = (face_ids >= 0) & (bary.amin(-1) < -1e-6)
    face_ids = face_ids.clone()
    if miss.any():
        # Cast the missing rays against the candidate triangles whose cone of directions (from
        # the centre) contains them: a matrix product culls all but a handful per ray.
        tri_all = vertices[faces[candidates]]  # [C, 3, 3]
        dirs = tri_all - o
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        axis = dirs.sum(1)
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [C, 3]
        cos_radius = (dirs * axis[:, None]).sum(-1).amin(1) - 1e-4  # [C]
        ys, xs = torch.nonzero(miss, as_tuple=True)
        for start in range(0, len(ys), chunk):
            y, x = ys[start : start + chunk], xs[start : start + chunk]
            ray = d[y, x]  # [n, 3]
            ri, ci = torch.nonzero(ray @ axis.T >= cos_radius[None], as_tuple=True)  # candidate pairs
            if len(ri) == 0:
                continue
            t, b = _moller_trumbore(o, ray[ri], tri_all[ci])  # [P], [P, 3]
            hit = (b.amin(-1) >= -1e-9) & (t > 0)
            ri, ci, t, b = ri[hit], ci[hit], t[hit], b[hit]
            if len(ri) == 0:
                continue
            best_t = torch.full((len(y),), -1.0, dtype=t.dtype).scatter_reduce(0, ri, t, reduce="amax")
            win = t >= best_t[ri]  # the outermost hit of each ray (ties: any)
            ri, ci, b = ri[win], ci[win], b[win]
            face_ids[y[ri], x[ri]] = candidates[ci]
            bary[y[ri], x[ri]] = b
    return face_ids, (bary.clamp_min(0) / bary.clamp_min(0).sum(-1, keepdim=True).clamp_min(1e-12))


@dataclass
class PhotoSample:
    """What the photo says about every texel."""

    rgb: np.ndarray  # [H, W, 3] float32 in [0, 1]
    confidence: np.ndarray  # [H, W] float32 in [0, 1]: seen, unforeshortened, inside the mask
    surface: AtlasSurface


def sample_photo(
    head,
    layout: AtlasLayout,
    photo: Tensor,  # [3, S, S] in [0, 1]
    camera: Cameras,  # the reference view, S x S
    mask: Tensor | None,  # [S, S] in [0, 1]
    expression: Tensor,  # [E] the photo's expression
    foreshortening_cos: tuple[float, float] = (0.2, 0.5),
    visibility_tolerance_m: float = 0.004,
) -> PhotoSample:
    """Project the photo onto the atlas: colour and confidence per texel.

    Confidence is 1 where the reference camera saw the texel's surface point (z-buffer test),
    facing it (the cosine to the camera ramps over ``foreshortening_cos``) and inside the person's
    mask; 0 where the photo is blind.
    """
    from ..head.base import HeadPose

    with torch.no_grad():
        verts = head.animate(expression[None].float(), HeadPose.neutral(1))[0]  # [V, 3]
        surface = rasterize_atlas(verts, head.faces, layout, atlas_face_mask(head))
        p = surface.points(verts, head.faces)  # [H, W, 3]
        normals = vertex_normals(verts, head.faces)
        n = surface.points(normals, head.faces)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        uv, depth = project_points(p.reshape(-1, 3), camera)
        S = photo.shape[-1]
        grid = (uv[0] / S * 2 - 1).reshape(1, layout.height, layout.width, 2)
        rgb = F.grid_sample(photo[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        zbuf = rasterize_mesh(verts, head.faces, camera).depth[0].nan_to_num(posinf=1e6)  # [S, S]
        zs = F.grid_sample(zbuf[None, None], grid, mode="nearest", padding_mode="border", align_corners=False)[0, 0]
        d = depth[0].reshape(layout.height, layout.width)
        inside = (grid[0].abs() <= 1).all(-1)
        visible = inside & (d <= zs + visibility_tolerance_m) & surface.mask
        to_cam = camera.centers()[0] - p
        cos = (n * to_cam / to_cam.norm(dim=-1, keepdim=True).clamp_min(1e-9)).sum(-1)
        e0, e1 = foreshortening_cos
        fs = ((cos - e0) / (e1 - e0)).clamp(0, 1)
        fs = fs * fs * (3 - 2 * fs)
        conf = visible.float() * fs
        if mask is not None:
            m = F.grid_sample(mask[None, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
            conf = conf * ((m - 0.3) / 0.4).clamp(0, 1)
    return PhotoSample(rgb.permute(1, 2, 0).numpy().astype(np.float32), conf.numpy().astype(np.float32), surface)


def lookup(atlas_rgb: Tensor, layout: AtlasLayout, points: Tensor) -> Tensor:
    """Bilinear atlas colours [..., 3] at surface points [..., 3] (wrapping in azimuth).

    atlas_rgb: [3, H, W]. ``points`` are on the mesh in the pose the atlas was built in (the
    generator interpolates those positions over the animated mesh, so texture sticks to skin).
    """
    H, W = layout.height, layout.width
    p = _WRAP_PAD
    padded = torch.cat([atlas_rgb[..., -p:], atlas_rgb, atlas_rgb[..., :p]], -1)  # [3, H, W + 2p]
    xy = layout.texel_coords(points)
    gx = (xy[..., 0] + p) / (W + 2 * p) * 2 - 1
    gy = xy[..., 1] / H * 2 - 1
    shape = points.shape[:-1]
    grid = torch.stack([gx, gy], -1).reshape(1, -1, 1, 2).to(padded.dtype)
    out = F.grid_sample(padded[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0]
    return out.transpose(0, 1).reshape(*shape, 3)
