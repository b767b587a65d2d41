"""3D Gaussians bound to head-mesh triangles (GaussianAvatars-style binding).

Each Gaussian has a parent triangle and lives in that triangle's local frame: its position
offset, rotation and log-scale are expressed relative to the triangle's centroid, orientation
(edge, in-plane perpendicular, normal) and size. When the head is animated the triangles move,
and every Gaussian moves with its parent, so one set of parameters renders every expression and
pose.

Parameters sit in one ``nn.ParameterDict`` with the names gsplat's strategies expect
(``means``, ``scales``, ``quats``, ``opacities``) plus ``sh0``/``shN`` colours and ``binding``
(the parent triangle, a non-trainable integer parameter). Keeping ``binding`` inside the dict is
what lets gsplat's ``DefaultStrategy`` clone/split/prune Gaussians unchanged: its operations
rewrite every tensor in the dict, so children inherit their parent's triangle automatically.

Units: local means and scales are in multiples of the triangle's size ``k = sqrt(2 * area)``,
so densification thresholds are relative to the parent triangle (small face triangles and large
skull triangles are treated alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..head.base import HeadModel, HeadPose
from ..head.rig_mesh import MOUTH_INTERIOR_COLOURS

SH_C0 = 0.28209479177387814


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


@dataclass
class TriangleFrames:
    """Per-triangle local frames of one or more animated meshes."""

    centroids: Tensor  # [B, F, 3]
    rotations: Tensor  # [B, F, 3, 3] columns: edge dir, in-plane perpendicular, normal
    sizes: Tensor  # [B, F] sqrt(2 * area)


def triangle_frames(vertices: Tensor, faces: Tensor) -> TriangleFrames:
    """Frames of triangles ``faces`` [F, 3] on vertices [B, V, 3] (or [V, 3])."""
    if vertices.dim() == 2:
        vertices = vertices[None]
    tri = vertices[:, faces]  # [B, F, 3, 3]
    v0, v1, v2 = tri.unbind(2)
    e0 = v1 - v0
    cross = torch.linalg.cross(e0, v2 - v0)
    double_area = cross.norm(dim=-1)
    n = cross / double_area[..., None].clamp_min(1e-12)
    x = e0 / e0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    y = torch.linalg.cross(n, x)
    R = torch.stack([x, y, n], dim=-1)
    return TriangleFrames(tri.mean(2), R, double_area.clamp_min(1e-12).sqrt())


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit wxyz quaternions [..., 4] (numerically safe branch)."""
    m = R
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # [..., 4, 4]: each row proportional to the quaternion, largest first component is safest
    diag = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: Tensor) -> Tensor:
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def local_from_world(frames: TriangleFrames, means_world: Tensor, binding: Tensor, frame_index: int = 0) -> Tensor:
    """Inverse placement: world positions [N, 3] on triangles ``binding`` [N] -> local means [N, 3]."""
    c = frames.centroids[frame_index, binding]
    R = frames.rotations[frame_index, binding]
    k = frames.sizes[frame_index, binding][:, None]
    return (R.transpose(-1, -2) @ (means_world - c)[..., None])[..., 0] / k


@dataclass
class WorldGaussians:
    """Gaussians of one animated frame, ready for :func:`zero1toa.render.rasterize.rasterize`."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, unit
    scales: Tensor  # [N, 3] linear
    opacities: Tensor  # [N]
    colors: Tensor  # [N, K, 3] SH coefficients
    sh_degree: int


class BoundGaussians(nn.Module):
    """The avatar's Gaussians: parameters in triangle-local frames + the head they bind to."""

    def __init__(self, params: dict[str, Tensor], sh_degree: int) -> None:
        super().__init__()
        required = {"means", "scales", "quats", "opacities", "sh0", "shN", "binding"}
        missing = required - set(params)
        if missing:
            raise ValueError(f"Gaussian parameters lack {sorted(missing)}")
        self.sh_degree = int(sh_degree)
        self.params = nn.ParameterDict(
            {k: nn.Parameter(v, requires_grad=(k != "binding")) for k, v in params.items()}
        )
        n = self.params["means"].shape[0]
        for k, v in self.params.items():
            if v.shape[0] != n:
                raise ValueError(f"parameter {k} has {v.shape[0]} rows, means has {n}")

    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0]

    @property
    def binding(self) -> Tensor:
        return self.params["binding"]

    def colors(self) -> Tensor:
        """[N, K, 3] SH coefficients (degree ``sh_degree``)."""
        return torch.cat([self.params["sh0"], self.params["shN"]], 1)

    def to_world(self, frames: TriangleFrames, frame_index: int = 0) -> WorldGaussians:
        """Place the Gaussians on the triangles of one animated frame."""
        b = self.binding
        c = frames.centroids[frame_index, b]  # [N, 3]
        R = frames.rotations[frame_index, b]  # [N, 3, 3]
        k = frames.sizes[frame_index, b][:, None]  # [N, 1]
        means = c + (R @ (self.params["means"] * k)[..., None])[..., 0]
        scales = torch.exp(self.params["scales"]) * k
        q_local = self.params["quats"] / self.params["quats"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        q_tri = matrix_to_quat(frames.rotations[frame_index])  # [F, 4]: once per triangle, not per Gaussian
        quats = quat_multiply(q_tri[b], q_local)
        return WorldGaussians(means, quats, scales, torch.sigmoid(self.params["opacities"]), self.colors(), self.sh_degree)

    def posed(self, head: HeadModel, expression: Tensor, pose: HeadPose) -> list[WorldGaussians]:
        """World Gaussians for each of B frames of (expression [B, E], pose)."""
        with torch.no_grad():
            verts = head.animate(expression, pose)
        frames = triangle_frames(verts, head.faces)
        return [self.to_world(frames, i) for i in range(verts.shape[0])]



@dataclass
class InitConfig:
    num_gaussians: int = 20000
    sh_degree: int = 0
    init_opacity: float = 0.6
    scale_factor: float = 0.7  # Gaussian radius relative to its share of the triangle
    normal_flatten: float = 0.35  # thickness along the normal relative to in-plane size
    #: extra sampling density per part (faces need detail; the torso rarely gets seen closely)
    part_density: tuple[tuple[str, float], ...] = (
        ("face", 4.0),
        ("eyeball", 4.0),
        ("mouth", 1.0),
        ("skull", 1.0),
        ("neck", 0.6),
        ("torso", 0.4),
        ("teeth_upper", 2.0),
        ("teeth_lower", 2.0),
        ("tongue", 1.0),
    )


#: Initial colours per rig part before any photo evidence (RGB in [0, 1]).
DEFAULT_PART_COLOURS = {
    "face": (0.78, 0.6, 0.52),
    "skull": (0.35, 0.27, 0.2),
    "neck": (0.75, 0.58, 0.5),
    "torso": (0.5, 0.5, 0.5),
    "eyeball": (0.85, 0.85, 0.82),
    "mouth": (0.3, 0.08, 0.08),
    **MOUTH_INTERIOR_COLOURS,
}


def init_on_mesh(
    head: HeadModel,
    config: InitConfig,
    seed: int,
    face_labels: Tensor | None = None,
    part_names: tuple[str, ...] | None = None,
) -> BoundGaussians:
    """Scatter Gaussians over the neutral mesh, area-weighted (per-part density), min 1 per triangle."""
    gen = torch.Generator().manual_seed(seed)
    verts = head.neutral_vertices()
    faces = head.faces
    frames = triangle_frames(verts, faces)
    tri = verts[faces]  # [F, 3, 3]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    density = torch.ones_like(area)
    if face_labels is not None and part_names is not None:
        for name, factor in config.part_density:
            if name in part_names:
                density[face_labels == part_names.index(name)] = factor
    weight = area * density
    F = faces.shape[0]
    n_total = max(config.num_gaussians, F)
    extra = n_total - F
    counts = torch.ones(F, dtype=torch.long) + torch.floor(weight / weight.sum() * extra).long()
    short = n_total - int(counts.sum())
    if short > 0:  # hand the remainder to the largest weights
        counts[torch.topk(weight, short).indices] += 1
    binding = torch.repeat_interleave(torch.arange(F), counts)
    N = binding.shape[0]
    # Uniform barycentric samples (sqrt trick) within each parent triangle.
    r1 = torch.rand(N, generator=gen).sqrt()
    r2 = torch.rand(N, generator=gen)
    bary = torch.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)
    pos = (tri[binding] * bary[..., None]).sum(1)
    means_local = local_from_world(frames, pos, binding)
    k = frames.sizes[0, binding]
    radius = config.scale_factor * torch.sqrt(area[binding] / counts[binding].float()) / k
    log_s = torch.log(radius.clamp_min(1e-6))
    scales = torch.stack([log_s, log_s, log_s + math.log(config.normal_flatten)], -1)
    quats = torch.zeros(N, 4)
    quats[:, 0] = 1
    opacity = torch.full((N,), math.log(config.init_opacity / (1 - config.init_opacity)))
    rgb = torch.full((N, 3), 0.6)
    if face_labels is not None and part_names is not None:
        for name, colour in DEFAULT_PART_COLOURS.items():
            if name in part_names:
                sel = face_labels[binding] == part_names.index(name)
                rgb[sel] = torch.tensor(colour)
    K = num_sh_bases(config.sh_degree)
    params = {
        "means": means_local.float(),
        "scales": scales.float(),
        "quats": quats,
        "opacities": opacity,
        "sh0": rgb_to_sh0(rgb)[:, None, :],
        "shN": torch.zeros(N, K - 1, 3),
        "binding": binding,
    }
    return BoundGaussians(params, config.sh_degree)


@torch.no_grad()
def colour_from_texture(
    gaussians: BoundGaussians,
    head: HeadModel,
    colour_at,  # callable: surface points [N, 3] (in the pose below) -> rgb [N, 3] in [0, 1]
    faces: Tensor,  # [F] bool: the triangles whose Gaussians take the texture's colour
    expression: Tensor | None = None,  # [E]
) -> float:
    """Initialise colours from a texture of the head (the completed atlas) -> fraction coloured.

    Gaussians the photo never saw start with what the generator will show there, not with a
    flat part colour, so the first round trains from a head that already looks like one.
    """
    expr = torch.zeros(1, head.expression_dim) if expression is None else expression.reshape(1, -1).float()
    verts = head.animate(expr, HeadPose.neutral(1))
    world = gaussians.to_world(triangle_frames(verts, head.faces), 0).means  # [N, 3]
    sel = faces[gaussians.binding]
    if sel.any():
        gaussians.params["sh0"].data[sel, 0, :] = rgb_to_sh0(colour_at(world[sel]).clamp(0, 1))
    return float(sel.float().mean())


def colour_from_reference(
    gaussians: BoundGaussians,
    head: HeadModel,
    reference: Tensor,  # [3, S, S] in [0, 1]
    camera,  # Cameras, 1 camera at S x S
    mask: Tensor | None = None,  # [S, S]
    expression: Tensor | None = None,  # [E]
    pose: HeadPose | None = None,
    tolerance_m: float = 0.004,
) -> float:
    """Initialise colours from the photo where the reference camera sees a Gaussian.

    Like seeding 3DGS with coloured SfM points: a Gaussian whose centre is visible in the photo
    (z-buffer test against the head mesh, inside the mask) starts with the photo's colour there;
    the others keep their part colour. Returns the fraction of Gaussians coloured.
    """
    import torch.nn.functional as F

    from ..render.camera import project_points
    from ..render.mesh_raster import rasterize_mesh

    expr = torch.zeros(1, head.expression_dim) if expression is None else expression.reshape(1, -1).float()
    pose = HeadPose.neutral(1) if pose is None else pose
    verts = head.animate(expr, pose)
    world = gaussians.to_world(triangle_frames(verts, head.faces), 0).means
    uv, depth = project_points(world, camera)
    S = reference.shape[-1]
    zbuf = rasterize_mesh(verts[0], head.faces, camera).depth[0]
    zmin = -F.max_pool2d(-zbuf[None, None].nan_to_num(posinf=1e6), 3, stride=1, padding=1)[0, 0]
    grid = (uv[0] / S * 2 - 1)[None, None]  # [1, 1, N, 2]
    inside = (grid.abs() <= 1).all(-1)[0, 0]
    z_at = F.grid_sample(zmin[None, None], grid, mode="nearest", align_corners=False)[0, 0, 0]
    visible = inside & (depth[0] <= z_at + tolerance_m)
    if mask is not None:
        m_at = F.grid_sample(mask[None, None].float(), grid, mode="bilinear", align_corners=False)[0, 0, 0]
        visible &= m_at > 0.5
    rgb = F.grid_sample(reference[None].float(), grid, mode="bilinear", align_corners=False)[0, :, 0].T  # [N, 3]
    sh0 = gaussians.params["sh0"]
    sh0.data[visible, 0, :] = rgb_to_sh0(rgb[visible])
    return float(visible.float().mean())
