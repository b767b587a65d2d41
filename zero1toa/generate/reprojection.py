"""The embedded, weight-free pseudo ground-truth generator (the default run's generator).

Why: no diffusion weights can be downloaded on the machines this project targets, yet the
default run must build a real avatar. This generator makes pseudo ground truth the honest way a
one-image method can without a learned prior:

1. **Projective texturing with visibility.** The fitted head mesh is textured from the
   reference photo: a surface point takes the photo's colour where the reference camera saw it
   (z-buffer test), unforeshortened (normal towards the reference camera), unstretched (the
   animated triangle is not much larger than in the photo) and inside the foreground mask.
2. **The rest comes from the avatar.** What the photo never saw (the sides and back of the head,
   the inside of the mouth, closed eyelids, stretched skin) is filled from ``init_frames``, the
   avatar's current renders, cross-faded at the seam with the texturing confidence. That is
   SymGEN's co-evolution: the dataset improves as the avatar does, and the avatar is trained on
   the dataset. Without init frames, unseen regions get the mean photo colour of their head
   part (hair colour for the skull, skin for the neck).
3. **Silhouette carving.** The rig is built a little larger than the person's mask; surface
   points the photo saw outside the mask are background in every view (a one-view visual hull),
   so the reference view reproduces the photo's silhouette exactly and other views agree.
4. ``strength`` blends the result with ``init_frames`` (0 keeps them, 1 is the full refresh).

Deterministic: no randomness at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..head.base import HeadModel, HeadPose
from ..head.rig_mesh import MOUTH_INTERIOR_COLOURS
from ..render.camera import Cameras, project_points
from ..render.mesh_raster import interpolate, rasterize_mesh, vertex_normals
from ..texture.atlas import atlas_face_mask, lookup
from ..texture.completion import TextureAtlas
from .base import GenerationRequest, GenerationResult, GeneratorInfo, VideoGenerator


@dataclass
class ReprojectionConfig:
    resolution: int = 256
    frames_per_call: int = 16
    background: float = 1.0  # frames are composited over this grey level
    supersample: int = 2  # render at this multiple and box-downsample (antialiasing)
    visibility_tolerance_m: float = 0.004  # z-buffer slack when testing reference visibility
    # Texture density in a target view relative to the photo is ~ cos_ref / cos_target: confidence
    # ramps from 0 to 1 over this ratio range (the photo's grazing areas are fine where the target
    # also sees them at a grazing angle, and under-sampled where the target sees them frontally).
    foreshortening_ratio: tuple[float, float] = (0.25, 0.6)
    stretch_power: float = 1.0  # confidence *= (area_ref / area_now) ** power where stretched
    seam_blur_px: int = 3  # box blur of the confidence map, in output pixels
    # Where the photo is blind, how much comes from the head's completed texture atlas (1) rather
    # than the avatar's current render (0, the co-evolution of SymGEN's refreshes alone).
    completion_weight: float = 1.0
    cache_mb: int = 1536  # generated layers kept for refreshes of the same views (0: none)


#: Colours of rig parts a photo rarely shows (linear RGB in [0, 1]).
BUILT_IN_APPEARANCE: dict[str, tuple[float, float, float]] = {
    "mouth": (0.16, 0.05, 0.06),  # the cavity's walls, in shadow
    **MOUTH_INTERIOR_COLOURS,
}


@dataclass
class _Layers:
    """A generated window before its init frames: generated = base + blind_init * init."""

    base: Tensor  # [F, 3, H, W]
    blind_init: Tensor  # [F, 1, H, W]
    fill: Tensor  # [F, 3, H, W] what blind pixels show without init frames
    coverage: Tensor  # [F, 1, H, W]
    confidence: Tensor  # [F, 1, H, W]

    def rounded(self) -> "_Layers":
        return _Layers(*(t.half() for t in (self.base, self.blind_init, self.fill, self.coverage, self.confidence)))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.base, self.blind_init, self.fill, self.coverage, self.confidence))


_LAYER_CACHE: "OrderedDict[tuple[str, str], _Layers]" = OrderedDict()


def _digest(*items) -> str:
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Tensor):
            h.update(str(tuple(item.shape)).encode())
            h.update(item.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(item).encode())
    return h.hexdigest()


def _fingerprint(*items) -> str:
    return _digest(*[torch.zeros(0) if i is None else i for i in items])


def _request_key(request: GenerationRequest) -> str:
    poses = request.poses.as_vector() if request.poses is not None else None
    return _digest(
        request.cameras.viewmats, request.cameras.Ks, request.landmark_maps.shape[-1],
        request.expressions if request.expressions is not None else "reference", poses if poses is not None else "reference",
    )  # fmt: skip


def _smoothstep(e0: float, e1: float, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _triangle_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    tri = vertices[..., faces, :]
    return 0.5 * torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]).norm(dim=-1)


class ReprojectionGenerator(VideoGenerator):
    """Projective texturing of the fitted head + the avatar's renders where the photo is blind."""

    def __init__(
        self,
        head: HeadModel,
        reference: Tensor,  # [3, S, S] in [0, 1]
        reference_camera: Cameras,  # 1 camera at the reference resolution
        reference_mask: Tensor | None = None,  # [S, S] in [0, 1]
        reference_expression: Tensor | None = None,  # [E]
        reference_pose: HeadPose | None = None,
        face_labels: Tensor | None = None,  # [F] part id per triangle, for the no-init fill
        config: ReprojectionConfig | None = None,
        completion: TextureAtlas | None = None,  # the head's completed texture (fit_head)
    ) -> None:
        self.cfg = config or ReprojectionConfig()
        self.head = head
        self.completion = completion
        self.reference = reference.float()
        S = reference.shape[-1]
        self.ref_camera = reference_camera
        self.ref_mask = torch.ones(S, S) if reference_mask is None else reference_mask.float()
        self.ref_expression = torch.zeros(head.expression_dim) if reference_expression is None else reference_expression.float()
        self.ref_pose = HeadPose.neutral(1) if reference_pose is None else reference_pose
        self.info = GeneratorInfo(
            name="reprojection",
            resolution=self.cfg.resolution,
            frames_per_call=self.cfg.frames_per_call,
            overlap=0,
            deterministic=True,
            weights="none (projective texturing of the reference photo)",
            geometry_exact=True,
        )
        with torch.no_grad():
            v_ref = head.animate(self.ref_expression[None], self.ref_pose)[0]  # [V, 3]
            self._v_ref = v_ref
            frags = rasterize_mesh(v_ref, head.faces, reference_camera)
            # The visibility z-buffer at the supersampled resolution, so visibility tests near
            # depth edges (jaw over neck) are as fine as the frames being generated.
            zcam = reference_camera.resized(S * max(1, self.cfg.supersample), S * max(1, self.cfg.supersample))
            self._zbuf_ref = rasterize_mesh(v_ref, head.faces, zcam).depth[0]  # [S*ss, S*ss]
            uv, depth = project_points(v_ref, reference_camera)
            normals = vertex_normals(v_ref, head.faces)
            to_cam = reference_camera.centers()[0] - v_ref
            cos = (normals * to_cam / to_cam.norm(dim=-1, keepdim=True)).sum(-1)
            # per-vertex attributes interpolated in target views: ref pixel (u, v), ref depth, cos
            self._ref_attr = torch.cat([uv[0], depth[0][:, None], cos[:, None]], -1)  # [V, 4]
            self._area_ref = _triangle_areas(v_ref, head.faces)  # [F]
            self._part_colour = self._part_colours(frags.face_ids[0], face_labels)
            self._lid_faces, self._lid_colour = self._eyelids(frags.face_ids[0], face_labels)
            # Triangles whose blind pixels come from the atlas (the rest: eyes, mouth interior).
            self._atlas_faces = atlas_face_mask(head) if completion is not None else None
            self._atlas_rgb = completion.rgb_tensor() if completion is not None else None
        self._fingerprint = _fingerprint(
            self.reference, self.ref_mask, self._v_ref, head.faces, self._atlas_rgb, repr(self.cfg), reference_camera.viewmats, reference_camera.Ks
        )

    def _part_colours(self, face_ids: Tensor, face_labels: Tensor | None) -> Tensor:
        """Mean visible photo colour per part -> per-triangle fill colour [F, 3]."""
        nF = self.head.faces.shape[0]
        fill = torch.full((nF, 3), self.cfg.background)
        img = self.reference.permute(1, 2, 0)  # [S, S, 3]
        seen = (face_ids >= 0) & (self.ref_mask > 0.5)
        overall = img[seen].mean(0) if seen.any() else torch.full((3,), 0.5)
        fill[:] = overall
        if face_labels is None:
            return fill
        labels_img = torch.where(face_ids >= 0, face_labels[face_ids.clamp_min(0)], torch.full_like(face_ids, -1))
        from ..head.facemesh_rig import PART_NAMES

        for part in face_labels.unique():
            sel = seen & (labels_img == part)
            if sel.sum() > 20:
                fill[face_labels == part] = img[sel].mean(0)
        # The mouth interior: a dark cavity and tongue always; teeth from the photo where it shows
        # them (an open mouth), else a neutral ivory.
        for name, rgb in BUILT_IN_APPEARANCE.items():
            if name not in PART_NAMES:
                continue
            part = PART_NAMES.index(name)
            if name.startswith("teeth") and int((seen & (labels_img == part)).sum()) > 20:
                continue
            fill[face_labels == part] = torch.tensor(rgb)
        return fill

    def _eyelids(self, face_ids: Tensor, face_labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """([F] bool, [F, 3]): the triangles a blink stretches over the eye, and their skin colour.

        A closing lid stretches the photo's lid margin (lashes, the top of the iris) over the
        eye. Those triangles get a stronger stretch penalty and, where the photo's texture thins
        out, the lid's own skin colour: the median photo colour of the lid (robust to the lashes).
        Found from the rig's blink blendshapes, so no topology is assumed.
        """
        nF = self.head.faces.shape[0]
        lids = torch.zeros(nF, dtype=torch.bool)
        colour = torch.zeros(nF, 3)
        names = list(getattr(self.head, "expression_names", []) or [])
        shapes = getattr(self.head, "blendshapes", None)
        if shapes is None or not names:
            return lids, colour
        from ..head.facemesh_rig import PART_NAMES

        img = self.reference.permute(1, 2, 0)  # [S, S, 3]
        for name in ("blink_left", "blink_right"):
            if name not in names:
                continue
            move = shapes[names.index(name)].norm(dim=-1)[self.head.faces].mean(1)  # [F] metres
            if float(move.max()) <= 0:
                continue
            sel = move > 0.3 * move.max()
            if face_labels is not None and "face" in PART_NAMES:
                sel &= face_labels == PART_NAMES.index("face")
            seen = (face_ids >= 0) & sel[face_ids.clamp_min(0)] & (self.ref_mask > 0.5)
            if int(seen.sum()) < 10:
                continue
            lids |= sel
            colour[sel] = img[seen].median(0).values
        return lids, colour

    # ------------------------------------------------------------------ generation
    def _layers_cached(self, request: GenerationRequest) -> "_Layers":
        """The window's layers, from the cache when these views were generated before.

        SymGEN refreshes every clip several times per round with new init frames but the same
        cameras and expressions; everything but the init is a function of those, so it is kept
        (half precision, a bounded LRU shared by generators of the same photo, head and
        settings in this process). Cached and fresh results are bit-identical: layers are
        always rounded to half precision before use.
        """
        if request.cameras is None:
            raise ValueError("the reprojection generator renders the head: the request needs cameras")
        key = (self._fingerprint, _request_key(request))
        hit = _LAYER_CACHE.get(key)
        if hit is not None:
            _LAYER_CACHE.move_to_end(key)
            return hit
        layers = self._layers(request)
        _LAYER_CACHE[key] = layers
        limit = self.cfg.cache_mb * 2**20
        while _LAYER_CACHE and sum(v.nbytes for v in _LAYER_CACHE.values()) > limit:
            _LAYER_CACHE.popitem(last=False)
        return layers

    def _layers(self, request: GenerationRequest) -> "_Layers":
        if request.cameras is None:
            raise ValueError("the reprojection generator renders the head: the request needs cameras")
        cfg = self.cfg
        Fn = request.num_frames
        R = request.landmark_maps.shape[-1]
        ss = max(1, cfg.supersample)
        cams = request.cameras.resized(R * ss, R * ss)
        expr = request.expressions if request.expressions is not None else self.ref_expression[None].expand(Fn, -1)
        poses = request.poses if request.poses is not None else HeadPose.cat([self.ref_pose] * Fn)
        with torch.no_grad():
            verts = self.head.animate(expr.float(), poses)  # [F, V, 3]
            frags = rasterize_mesh(verts, self.head.faces, cams)
            normals = vertex_normals(verts, self.head.faces)  # [F, V, 3]
            to_cam = cams.centers()[:, None, :] - verts
            cos_tgt = (normals * to_cam / to_cam.norm(dim=-1, keepdim=True)).sum(-1, keepdim=True)  # [F, V, 1]
            attrs = torch.cat([self._ref_attr[None].expand(Fn, -1, -1), cos_tgt, self._v_ref[None].expand(Fn, -1, -1)], -1)
            pix = interpolate(frags, self.head.faces, attrs)  # [F, H, W, 8]
            u, v, d, cos, cos_t = pix[..., :5].unbind(-1)
            p_ref = pix[..., 5:]  # [F, H, W, 3] the pixel's surface point in the photo's pose
            S = self.reference.shape[-1]
            grid = torch.stack([u / S * 2 - 1, v / S * 2 - 1], -1)  # align_corners=False convention
            tex = F.grid_sample(self.reference[None].expand(Fn, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)
            # Visibility in the reference: our depth vs the reference z-buffer at that point.
            zref = self._zbuf_ref[None, None].nan_to_num(posinf=1e6)
            zs = F.grid_sample(zref.expand(Fn, -1, -1, -1), grid, mode="nearest", padding_mode="border", align_corners=False)[:, 0]
            inside = (grid.abs() <= 1).all(-1)
            visible = inside & (d <= zs + cfg.visibility_tolerance_m) & frags.mask
            msk = F.grid_sample(self.ref_mask[None, None].expand(Fn, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
            area_now = _triangle_areas(verts, self.head.faces)  # [F, nF]
            ratio = (self._area_ref[None] / area_now.clamp_min(1e-12)).clamp(max=1.0) ** cfg.stretch_power
            fid = frags.face_ids.clamp_min(0)
            stretch = torch.gather(ratio, 1, fid.reshape(Fn, -1)).reshape_as(fid)
            # |cos|: only surfaces that pass the visibility test get here, whatever their winding.
            density = cos.abs() / cos_t.abs().clamp_min(0.05)
            conf = visible.float() * _smoothstep(*cfg.foreshortening_ratio, density) * stretch
            lid = self._lid_faces[fid] & frags.mask  # a closing eyelid: its margin thins out faster
            conf = torch.where(lid, conf * stretch * stretch, conf)
            conf = torch.where(frags.mask, conf, torch.zeros_like(conf))
            # Silhouette carving: a surface point the photo saw *outside* the person's mask is not
            # part of the person (the rig is built slightly larger than the mask on purpose), so
            # it is background in every view. Points the photo never saw are kept.
            keep = 1.0 - visible.float() * (1.0 - _smoothstep(0.3, 0.7, msk))
            coverage = frags.mask.float() * keep

            fill_part = self._part_colour[fid]  # [F, H, W, 3]
            from_atlas = torch.zeros_like(frags.mask)
            if self._atlas_rgb is not None:
                # Blind pixels of skin, hair, neck and clothes: the completed atlas at the pixel's
                # surface point, the same texel in every view and frame.
                from_atlas = self._atlas_faces[fid] & frags.mask
                fill_part = torch.where(from_atlas[..., None], lookup(self._atlas_rgb, self.completion.layout, p_ref), fill_part)
            fill_part = torch.where(lid[..., None], self._lid_colour[fid], fill_part)
            fill_part = fill_part.permute(0, 3, 1, 2)
            tex = torch.where(frags.mask[:, None], tex, torch.full_like(tex, cfg.background))

            def down(x: Tensor) -> Tensor:
                return F.avg_pool2d(x, ss) if ss > 1 else x

            coverage_full = coverage[:, None]
            conf = down(conf[:, None])
            coverage = down(coverage_full)
            tex = down(tex * coverage_full)  # premultiplied by coverage
            fill_part = down(fill_part * coverage_full)
            atlas_share = down(from_atlas[:, None].float() * coverage_full)  # coverage that the atlas fills
            if cfg.seam_blur_px > 1:
                k = cfg.seam_blur_px
                conf = F.avg_pool2d(F.pad(conf, (k // 2, (k - 1) // 2, k // 2, (k - 1) // 2), mode="replicate"), k, stride=1)
            conf = torch.minimum(conf, coverage)
            tex_un = tex / coverage.clamp_min(1e-6)
            fill_un = fill_part / coverage.clamp_min(1e-6)
            # Blind pixels: the completed atlas (where it applies) mixed with the avatar's render
            # by completion_weight; seen pixels: the photo; outside the head: background. As
            # layers, generated = base + blind_init * init, so a refresh (new init frames) of the
            # same views needs no new rasterisation (see _layers_cached).
            a = torch.zeros_like(coverage)
            if self._atlas_rgb is not None and cfg.completion_weight > 0:
                a = cfg.completion_weight * atlas_share / coverage.clamp_min(1e-6)
            base = conf * tex_un + (coverage - conf) * a * fill_un + (1 - coverage) * cfg.background  # [F, 3, H, W]
            blind_init = (coverage - conf) * (1 - a)  # [F, 1, H, W]: where the init (else fill) shows
        return _Layers(base, blind_init, fill_un, coverage, conf).rounded()

    def _generate_window(self, request: GenerationRequest) -> GenerationResult:
        layers = self._layers_cached(request)
        if request.init_frames is not None:
            init = request.init_frames.float()
            generated = layers.base.float() + layers.blind_init.float() * init
            out = init + request.strength * (generated - init)
        else:
            out = layers.base.float() + layers.blind_init.float() * layers.fill.float()
        coverage, conf = layers.coverage.float(), layers.confidence.float()
        return GenerationResult(out.clamp(0, 1), coverage, {"confidence": conf})
