"""The truth subject: an animatable head whose appearance is known from every direction.

Built deterministically from a seed and the bundled sample portrait:

1. The sample portrait goes through the project's own preprocessing and rig fitting, giving the
   built-in rig (face mesh + skull, eyes, mouth cavity, neck, torso) and the photo's camera. The
   rig's backdrop patches (flaps that only exist to cover the photo's silhouette) are dropped:
   the truth is a clean closed head.
2. Its appearance: where the photo saw a surface point (reference z-buffer test, not grazing,
   inside the person's mask) the photo's colour; everywhere else a seeded procedural solid
   texture (:mod:`.texture`) whose base colour per part is the photo's mean colour of that part,
   so seams are plausible. Colours are attached to rest-pose surface points, so they follow
   every expression.
3. It renders (a) the reference photo the pipeline is given: the photo's view, zero expression,
   512 px, an RGBA PNG (its alpha is the exact person mask), which then goes through the normal
   preprocessing like any user photo; and (b) ground truth for any camera and expression, with
   the per-pixel "seen by the photo" mask that held-out metrics split on.

Comparing a pipeline avatar with the truth needs one more thing: the pipeline fits its *own*
head and camera to the rendered photo, in its own world frame. :func:`align_heads` finds the
similarity transform from the pipeline's world to the truth's by their 468 common face-mesh
landmarks (Umeyama), and :func:`pipeline_cameras` / :func:`truth_cameras` convert cameras
between the two frames (a uniform scale of the world leaves every image unchanged, so the
converted cameras stay rigid).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..head.base import HeadModel, HeadPose
from ..head.rig_mesh import MOUTH_INTERIOR_COLOURS
from ..render.camera import Cameras, project_points
from ..render.mesh_raster import interpolate, rasterize_mesh, vertex_normals
from ..utils.io import atomic_dir, digest_obj, read_json, write_json_atomic
from .texture import PARTS, SolidAppearance

log = logging.getLogger("zero1toa.bench")

TRUTH_VERSION = "2"  # 2: the rig's mouth interior (teeth, tongue)
DEFAULT_RESOLUTION = 512


def _smoothstep(e0: float, e1: float, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


@dataclass
class TruthFrames:
    rgb: Tensor  # [F, 3, H, W] in [0, 1], composited over the background
    alpha: Tensor  # [F, 1, H, W] coverage
    seen: Tensor  # [F, 1, H, W] in [0, 1]: how much of the pixel the reference photo saw


@dataclass
class Similarity:
    """x_truth = scale * R @ x_pipeline + t."""

    scale: float
    R: Tensor  # [3, 3]
    t: Tensor  # [3]
    rms_m: float  # landmark residual after alignment (truth metres)

    def apply(self, x: Tensor) -> Tensor:
        return self.scale * x @ self.R.T + self.t


class TruthSubject:
    """The truth head + its appearance; see the module docstring."""

    def __init__(self, head: HeadModel, camera: Cameras, source: Tensor, source_mask: Tensor, appearance: SolidAppearance, meta: dict) -> None:
        self.head = head
        self.camera = camera  # the photo's view at the source resolution
        self.source = source.float()  # [3, S, S] the photo the seen regions come from
        self.source_mask = source_mask.float()  # [S, S]
        self.appearance = appearance
        self.meta = dict(meta)
        self.face_labels = head.face_labels
        self.expression = torch.zeros(head.expression_dim)  # the truth photo's expression
        self.jaw = torch.zeros(3)
        with torch.no_grad():
            rest = head.animate(self.expression[None], HeadPose.neutral(1))[0]  # [V, 3]
            self.rest = rest
            S = self.source.shape[-1]
            zcam = camera.resized(2 * S, 2 * S)
            self._zbuf = rasterize_mesh(rest, head.faces, zcam).depth[0]  # [2S, 2S]
            uv, depth = project_points(rest, camera)
            normals = vertex_normals(rest, head.faces)
            to_cam = camera.centers()[0] - rest
            cos = (normals * to_cam / to_cam.norm(dim=-1, keepdim=True)).sum(-1)
            # per vertex: rest position (texture coordinates), photo pixel, photo depth, cosine
            self._attr = torch.cat([rest, uv[0], depth[0][:, None], cos[:, None]], -1)  # [V, 7]
        from ..progressive.schedules import orbit_target

        self.target = orbit_target(head)

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def load(folder: Path) -> "TruthSubject":
        from PIL import Image

        from ..head.registry import load_head

        folder = Path(folder)
        if not (folder / "subject.json").is_file():
            raise FileNotFoundError(f"{folder} is not a truth subject (no subject.json): build one with `python benchmarks/truth.py --build-only`")
        meta = read_json(folder / "subject.json")
        if meta.get("version") != TRUTH_VERSION:
            raise ValueError(f"{folder}: truth subject version {meta.get('version')!r}, this code reads {TRUTH_VERSION}")
        head = load_head(folder / "head")
        src = torch.from_numpy(np.asarray(Image.open(folder / "source.png").convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        msk = torch.from_numpy(np.asarray(Image.open(folder / "source_mask.png").convert("L")).copy()).float() / 255
        app = SolidAppearance(torch.tensor(meta["part_colours"]), torch.tensor(meta["centre"]), meta["coarse_seed"], meta["fine_seed"])
        return TruthSubject(head, Cameras.from_dict(meta["camera"]), src, msk, app, meta)

    def digest(self) -> str:
        return self.meta["digest"]

    # ------------------------------------------------------------------ rendering
    def cameras(self, yaws_deg, elevations_deg, resolution: int) -> Cameras:
        """Cameras orbiting the truth head relative to the photo's view (yaw 0 = the photo)."""
        from ..progressive.schedules import orbit_from_reference

        yaws = np.asarray(yaws_deg, np.float64).reshape(-1)
        elev = np.broadcast_to(np.asarray(elevations_deg, np.float64), yaws.shape)
        return orbit_from_reference(self.camera, yaws, elev, self.target, resolution)

    @torch.no_grad()
    def render(
        self,
        cameras: Cameras,
        expressions: Tensor,  # [F, E] truth expression space
        jaws: Tensor,  # [F, 3]
        background: float = 1.0,
        supersample: int = 2,
        detail: SolidAppearance | None = None,
        detail_mix: float | Tensor = 0.0,  # per frame allowed: [F]
        chunk: int = 4,
    ) -> TruthFrames:
        """Ground truth for F frames. ``detail``/``detail_mix`` swap in another fine texture where
        the photo is blind (the simulated generator's re-hallucination); 0 is the truth."""
        n = len(cameras)
        mix = torch.as_tensor(detail_mix, dtype=torch.float32).reshape(-1)
        mix = mix.expand(n) if mix.numel() == 1 else mix
        outs = [self._render_chunk(cameras[s : s + chunk], expressions[s : s + chunk], jaws[s : s + chunk], background, supersample, detail, mix[s : s + chunk]) for s in range(0, n, chunk)]
        return TruthFrames(*(torch.cat([o[i] for o in outs]) for i in range(3)))

    def _render_chunk(self, cams: Cameras, expr: Tensor, jaws: Tensor, bg: float, ss: int, detail: SolidAppearance | None, mix: Tensor):
        Fn, R = len(cams), cams.width
        ss = max(1, int(ss))
        big = cams.resized(R * ss, R * ss)
        pose = HeadPose.neutral(Fn)
        pose.jaw = jaws.reshape(Fn, 3).float().clone()
        verts = self.head.animate(expr.float(), pose)  # [F, V, 3]
        frags = rasterize_mesh(verts, self.head.faces, big)
        covered = frags.mask  # [F, H, W]
        attr = interpolate(frags, self.head.faces, self._attr)  # [F, H, W, 7]
        rest, u, v, d, cos = attr[..., :3], attr[..., 3], attr[..., 4], attr[..., 5], attr[..., 6]
        S = self.source.shape[-1]
        grid = torch.stack([u / S * 2 - 1, v / S * 2 - 1], -1)
        photo = F.grid_sample(self.source[None].expand(Fn, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)
        zs = F.grid_sample(self._zbuf.nan_to_num(posinf=1e6)[None, None].expand(Fn, -1, -1, -1), grid, mode="nearest", padding_mode="border", align_corners=False)[:, 0]
        msk = F.grid_sample(self.source_mask[None, None].expand(Fn, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
        inside = (grid.abs() <= 1).all(-1)
        visible = inside & (d <= zs + 0.004) & covered
        seen = visible.float() * _smoothstep(0.15, 0.45, cos) * _smoothstep(0.3, 0.7, msk)  # [F, H, W]

        parts = self.face_labels[frags.face_ids.clamp_min(0)]  # [F, H, W]
        sel = covered.reshape(-1)
        pts = rest.reshape(-1, 3)[sel]
        prt = parts.reshape(-1)[sel]
        base, fine = self.appearance.layers(pts, prt)
        if detail is not None and bool((mix > 0).any()):
            _, alt = detail.layers(pts, prt)
            m = mix[:, None, None].expand(Fn, *covered.shape[1:]).reshape(-1)[sel][:, None]
            fine = (1 - m) * fine + m * alt
        proc = torch.zeros(Fn * covered.shape[1] * covered.shape[2], 3)
        proc[sel] = (base + fine).clamp(0, 1)
        proc = proc.reshape(Fn, *covered.shape[1:], 3).permute(0, 3, 1, 2)
        s = seen[:, None]
        colour = s * photo + (1 - s) * proc
        cov = covered[:, None].float()
        rgb = colour * cov + bg * (1 - cov)

        def down(x: Tensor) -> Tensor:
            return F.avg_pool2d(x, ss) if ss > 1 else x

        return down(rgb).clamp(0, 1), down(cov), down(s * cov)

    def reference_photo(self, resolution: int = DEFAULT_RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 [S, S, 3] straight colour, white where empty; alpha uint8 [S, S])."""
        cam = self.camera.resized(resolution, resolution)
        out = self.render(cam, self.expression[None], self.jaw[None], background=0.0)
        a = out.alpha[0, 0]
        rgb = out.rgb[0] / a.clamp_min(1e-6)
        rgb = torch.where(a[None] > 0, rgb, torch.ones_like(rgb))
        to8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
        return np.ascontiguousarray(to8(rgb.permute(1, 2, 0))), to8(a)


# ----------------------------------------------------------------------------- building


def _without_backdrop(head) -> HeadModel:
    """The rig without its backdrop patches (landmarks stay on the same face triangles)."""
    from ..head.facemesh_rig import FaceMeshRig
    from ..head.base import LandmarkEmbedding

    keep = head.face_labels != PARTS.index("backdrop")
    new_index = torch.cumsum(keep.long(), 0) - 1
    emb = head.landmark_embedding
    if not bool(keep[emb.face_ids].all()):
        raise RuntimeError("a landmark lies on a backdrop patch; the rig changed in a way the truth subject does not expect")
    emb = LandmarkEmbedding(new_index[emb.face_ids], emb.barycentric, emb.indices, emb.convention)
    return FaceMeshRig(head.template, head.faces[keep], head.skin_weights, head.joints, head.blendshapes, head.face_labels[keep], emb, {**head.meta, "truth_subject": True})


def _part_colours(head: HeadModel, camera: Cameras, photo: Tensor, mask: Tensor) -> Tensor:
    """Mean photo colour of each part where the photo saw it frontally; skin-derived fallbacks."""
    with torch.no_grad():
        rest = head.neutral_vertices()
        frags = rasterize_mesh(rest, head.faces, camera)
    fid = frags.face_ids[0]
    img = photo.permute(1, 2, 0)
    seen = (fid >= 0) & (mask > 0.5)
    labels = torch.where(fid >= 0, head.face_labels[fid.clamp_min(0)], torch.full_like(fid, -1))
    colours = torch.zeros(len(PARTS), 3)
    found = torch.zeros(len(PARTS), dtype=torch.bool)
    for p in range(len(PARTS)):
        sel = seen & (labels == p)
        if int(sel.sum()) > 50:
            colours[p] = img[sel].median(0).values
            found[p] = True
    skin = colours[PARTS.index("face")] if found[PARTS.index("face")] else torch.tensor([0.8, 0.6, 0.5])
    fallback = {
        "face": skin,
        "neck": skin * 0.92,
        "skull": torch.tensor([0.30, 0.22, 0.15]),
        "torso": torch.tensor([0.35, 0.38, 0.45]),
        "eyeball": torch.tensor([0.85, 0.82, 0.80]),
        "mouth": torch.tensor([0.45, 0.16, 0.16]),
        "backdrop": skin,
        **{name: torch.tensor(rgb) for name, rgb in MOUTH_INTERIOR_COLOURS.items()},
    }
    for p, name in enumerate(PARTS):
        if not found[p]:
            colours[p] = fallback[name]
    colours[PARTS.index("mouth")] = fallback["mouth"]  # the photo never shows the mouth's inside
    return colours


def build_truth_subject(out_dir: Path, seed: int = 0, resolution: int = DEFAULT_RESOLUTION, image: Path | None = None) -> Path:
    """Build the truth subject into ``out_dir`` (atomically) and return it.

    ``image``: the portrait it is fitted to (default: the bundled sample). The same (image, seed,
    resolution) gives the same subject, byte for byte in one environment.
    """
    from PIL import Image

    from ..preprocess.head_fit import HeadFitConfig, load_fitted_head, run_preprocess_and_fit
    from ..preprocess.pipeline import PreprocessConfig, load_preprocess
    from ..sample import write_sample_portrait

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="zero1toa-truth-") as tmp_name:
        tmp = Path(tmp_name)
        src_image = Path(image) if image is not None else write_sample_portrait(tmp / "sample.png")
        run_preprocess_and_fit(src_image, tmp / "fit", PreprocessConfig(resolution=resolution), HeadFitConfig(kind="facemesh", seed=seed))
        pre = load_preprocess(tmp / "fit" / "preprocess")
        fitted = load_fitted_head(tmp / "fit" / "head")
    if fitted.expression.abs().max() > 0 or fitted.jaw.abs().max() > 0:
        raise RuntimeError("the built-in rig was expected to fit the photo at zero expression")
    head = _without_backdrop(fitted.head)
    photo = pre.reference_tensor()
    mask = torch.from_numpy(pre.mask.copy()).float()
    colours = _part_colours(head, fitted.camera, photo, mask)
    from ..progressive.schedules import orbit_target

    centre = orbit_target(head)
    coarse_seed, fine_seed = int(digest_obj(["truth-coarse", seed])[:8], 16), int(digest_obj(["truth-fine", seed])[:8], 16)
    meta = {
        "version": TRUTH_VERSION,
        "seed": int(seed),
        "resolution": int(resolution),
        "source": str(image) if image is not None else "bundled sample portrait (skimage astronaut, public domain)",
        "camera": fitted.camera.to_dict(),
        "part_names": list(PARTS),
        "part_colours": [[round(float(c), 6) for c in row] for row in colours],
        "centre": [float(c) for c in centre],
        "coarse_seed": coarse_seed,
        "fine_seed": fine_seed,
    }
    app = SolidAppearance(colours, centre, coarse_seed, fine_seed)
    subject = TruthSubject(head, fitted.camera, photo, mask, app, meta)
    with atomic_dir(out_dir) as tmp_out:
        head.save(tmp_out / "head")
        Image.fromarray(pre.reference).save(tmp_out / "source.png")
        Image.fromarray((pre.mask * 255).round().astype(np.uint8)).save(tmp_out / "source_mask.png")
        rgb, alpha = subject.reference_photo(resolution)
        Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA").save(tmp_out / "reference.png")
        from ..utils.manifest import digest_path

        meta["digest"] = digest_obj({"meta": meta, "head": digest_path(tmp_out / "head"), "source": digest_path(tmp_out / "source.png"), "mask": digest_path(tmp_out / "source_mask.png")})
        write_json_atomic(tmp_out / "subject.json", meta)
        _write_preview(subject, tmp_out / "preview.png")
    return out_dir


def _write_preview(subject: TruthSubject, path: Path, resolution: int = 192) -> None:
    """Yaw -180..180 x {neutral, jaw_open, smile, blink}: what the truth looks like."""
    from ..render.video import contact_sheet, to_uint8_frames, write_png

    yaws = [-180.0, -120.0, -60.0, -30.0, 0.0, 30.0, 60.0, 120.0]
    names = ["neutral", "jaw_open", "smile", "blink"]
    rows = []
    for name in names:
        e, j = subject.head.expression_preset(name)
        n = len(yaws)
        out = subject.render(subject.cameras(yaws, 0.0, resolution), e[None].expand(n, -1), j[None].expand(n, -1))
        rows.append(list(to_uint8_frames(out.rgb)))
    write_png(path, contact_sheet(rows, names, [f"yaw {y:+.0f}" for y in yaws]))


# ----------------------------------------------------------------------------- frames


def align_heads(pipeline_head: HeadModel, pipeline_expression: Tensor, pipeline_jaw: Tensor, truth: TruthSubject) -> Similarity:
    """Similarity from the pipeline's world to the truth's, by the common face-mesh landmarks."""
    pose = HeadPose.neutral(1)
    pose.jaw = pipeline_jaw.reshape(1, 3).float()
    with torch.no_grad():
        lp = pipeline_head.landmarks(pipeline_head.animate(pipeline_expression.reshape(1, -1).float(), pose))[0]
        lt = truth.head.landmarks(truth.rest[None])[0]
    ip = pipeline_head.landmark_embedding.indices.tolist()
    it = {int(m): r for r, m in enumerate(truth.head.landmark_embedding.indices.tolist())}
    pairs = [(r, it[m]) for r, m in enumerate(ip) if m < 468 and m in it]
    if len(pairs) < 10:
        raise ValueError(f"the pipeline's head shares only {len(pairs)} face-mesh landmarks with the truth; cannot align")
    P = lp[[a for a, _ in pairs]].double()
    Q = lt[[b for _, b in pairs]].double()
    mp, mq = P.mean(0), Q.mean(0)
    Pc, Qc = P - mp, Q - mq
    U, S, Vt = torch.linalg.svd(Qc.T @ Pc / len(P))
    D = torch.eye(3, dtype=torch.float64)
    if torch.det(U @ Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    scale = float((S * D.diagonal()).sum() / Pc.pow(2).sum(1).mean())
    t = mq - scale * R @ mp
    rms = float((scale * Pc @ R.T - Qc).pow(2).sum(1).mean().sqrt())
    return Similarity(scale, R.float(), t.float(), rms)


def pipeline_cameras(truth_cams: Cameras, sim: Similarity) -> Cameras:
    """Cameras in the pipeline's world that see exactly what ``truth_cams`` see of the truth."""
    V = truth_cams.viewmats.clone()
    Rc, tc = V[:, :3, :3], V[:, :3, 3]
    out = V.clone()
    out[:, :3, :3] = Rc @ sim.R
    out[:, :3, 3] = (Rc @ sim.t + tc) / sim.scale
    return Cameras(out, truth_cams.Ks.clone(), truth_cams.width, truth_cams.height)


def truth_cameras(pipeline_cams: Cameras, sim: Similarity) -> Cameras:
    """The inverse of :func:`pipeline_cameras`."""
    V = pipeline_cams.viewmats.clone()
    Rp, tp = V[:, :3, :3], V[:, :3, 3]
    out = V.clone()
    out[:, :3, :3] = Rp @ sim.R.T
    out[:, :3, 3] = sim.scale * tp - Rp @ sim.R.T @ sim.t
    return Cameras(out, pipeline_cams.Ks.clone(), pipeline_cams.width, pipeline_cams.height)


def copy_reference_photo(truth_dir: Path, dest: Path) -> Path:
    """The photo the pipeline is given (a plain RGBA PNG)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(truth_dir) / "reference.png", dest)
    return dest
