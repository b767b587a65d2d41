"""The second DAG node: fit a head model to a preprocessed portrait.

``fit_head``: the preprocess outputs -> a head model (the built-in rig made from the portrait's own
face mesh, or a user-supplied FLAME fitted to the landmarks), the reference camera, the fit's
reprojection error, and a preview PNG (landmarks and the fitted mesh over the crop). It writes its
folder atomically with a manifest; on any error earlier artifacts stay valid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..head.facemesh_rig import RigConfig, build_facemesh_rig
from ..texture.completion import CompletionConfig, TextureAtlas, complete_head_texture
from ..render.camera import Cameras, project_points
from ..utils.io import atomic_dir, read_json, write_json_atomic
from ..identity import code_digest
from ..utils.manifest import Manifest, Timer, digest_path, upstream_digest
from .pipeline import PreprocessConfig, PreprocessOutputs, _jsonable, load_preprocess, preprocess_image

log = logging.getLogger("zero1toa.preprocess")

@dataclass
class HeadFitConfig:
    kind: str = "facemesh"  # facemesh (built-in rig) | flame
    flame_model: str | None = None  # path to the user's FLAME pickle (kind=flame)
    flame_embedding: str | None = None  # path to FLAME's mediapipe_landmark_embedding.npz
    rig: RigConfig = field(default_factory=RigConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)  # the head's texture atlas
    fit_iterations: int = 100
    fit_shape: bool = True  # FLAME only
    fit_expression: bool = True  # FLAME only
    warn_error_px: float = 4.0  # warn when the mean reprojection error exceeds this
    seed: int = 0


@dataclass
class FittedHead:
    head: object  # HeadModel
    camera: Cameras  # reference camera at the crop resolution
    expression: torch.Tensor  # [E] expression of the photo
    jaw: torch.Tensor  # [3]
    info: dict
    completion: TextureAtlas | None = None  # the completed head texture (built-in rig only)


def _build_head(pre: PreprocessOutputs, cfg: HeadFitConfig):
    """The head model for this portrait, before camera fitting."""
    if cfg.kind == "facemesh":
        build = build_facemesh_rig(pre.landmarks, pre.resolution, iris_px=pre.iris, mask=pre.mask, config=cfg.rig)
        return build.rig, build.camera, build.diagnostics
    if cfg.kind == "flame":
        from ..head.flame import FlameHead

        if not cfg.flame_model:
            raise ValueError("head.kind=flame needs head.flame_model: the path of your FLAME model file (e.g. flame2023.pkl)")
        head = FlameHead.from_file(Path(cfg.flame_model), Path(cfg.flame_embedding) if cfg.flame_embedding else None)
        return head, None, {}
    raise ValueError(f"unknown head kind {cfg.kind!r}; use facemesh or flame")


def fit_head(preprocess_dir: Path, out_dir: Path, config: HeadFitConfig | None = None) -> dict:
    """Build/fit the head model and the reference camera -> ``out_dir`` (model/, camera.json, fit.json, preview.png)."""
    from ..head.fitting import fit_head_to_landmarks

    cfg = config or HeadFitConfig()
    timer = Timer()
    pre = load_preprocess(preprocess_dir)
    S = pre.resolution
    with timer("build"):
        head, rig_camera, diagnostics = _build_head(pre, cfg)
    pts = np.concatenate([pre.landmarks, pre.iris]) if pre.iris is not None else pre.landmarks
    ids = torch.arange(len(pts))
    init_focal = float(rig_camera.Ks[0, 0, 0]) if rig_camera is not None else None
    is_flame = cfg.kind == "flame"
    with timer("fit"):
        fit = fit_head_to_landmarks(
            head,
            torch.from_numpy(pts[:, :2]),
            ids,
            (S, S),
            init_focal_px=init_focal,
            fit_shape=is_flame and cfg.fit_shape,
            fit_expression=is_flame and cfg.fit_expression,
            fit_jaw=is_flame,
            iterations=cfg.fit_iterations,
            seed=cfg.seed,
        )
    if is_flame and fit.shape.numel():
        head.set_shape(fit.shape)
    err = fit.reprojection_error_px
    warnings = []
    if err.mean > cfg.warn_error_px:
        msg = f"mean landmark reprojection error {err.mean:.2f} px exceeds {cfg.warn_error_px} px: check preview.png"
        log.warning(msg)
        warnings.append({"code": "poor_fit", "message": msg})
    fit_info = {
        "head_kind": head.name,
        "head_version": head.version,
        "head_licence": head.licence,
        "focal_px": fit.focal_px,
        "reprojection_error_px": {"mean": err.mean, "median": err.median, "max": err.max},
        "init_error_px": fit.init_error_px,
        "iterations": fit.iterations_run,
        "inlier_fraction": float(fit.inliers.float().mean()),
        "expression": fit.expression.tolist(),
        "jaw": fit.pose.jaw[0].tolist(),
        "rig_diagnostics": diagnostics,
    }
    atlas = None
    if cfg.completion.enabled and cfg.kind == "facemesh":
        with timer("completion"):
            photo = torch.from_numpy(pre.reference.copy()).permute(2, 0, 1).float() / 255.0
            atlas = complete_head_texture(head, photo, fit.cameras, torch.from_numpy(pre.mask.copy()).float(), fit.expression, cfg.completion)
        fit_info["completion"] = atlas.info
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        head.save(tmp / "model")
        if atlas is not None:
            atlas.save(tmp / "completion")
            Image.fromarray(atlas.preview()).save(tmp / "completion_preview.png")
        write_json_atomic(tmp / "camera.json", fit.cameras.to_dict())
        write_json_atomic(tmp / "fit.json", fit_info)
        preview = render_fit_preview(pre, head, fit.cameras, fit.expression, fit.pose)
        Image.fromarray(preview).save(tmp / "preview.png")
        manifest = Manifest(
            node="fit_head",
            params=_jsonable(asdict(cfg)),
            inputs={"preprocess": upstream_digest(Path(preprocess_dir))},
            outputs={name: digest_path(tmp / name) for name in ("model", "camera.json", "fit.json", "completion") if (tmp / name).exists()},
            code_version=code_digest("fit_head"),
            seed=cfg.seed,
            timings=timer.timings,
            warnings=warnings,
            metrics={"reprojection_error_px": err.mean, "reprojection_error_max_px": err.max},
            extra={"licence": head.licence},
        )
        manifest.write(tmp)
    return manifest.to_dict()


def load_fitted_head(folder: Path) -> FittedHead:
    from ..head.registry import load_head

    folder = Path(folder)
    if not (folder / "camera.json").exists():
        raise FileNotFoundError(f"{folder} has no fitted head: run the fit_head step first")
    head = load_head(folder / "model")
    fit = read_json(folder / "fit.json")
    return FittedHead(
        head=head,
        camera=Cameras.from_dict(read_json(folder / "camera.json")),
        expression=torch.tensor(fit["expression"], dtype=torch.float32),
        jaw=torch.tensor(fit["jaw"], dtype=torch.float32),
        info=fit,
        completion=TextureAtlas.load(folder / "completion") if (folder / "completion" / "atlas.json").exists() else None,
    )


def render_fit_preview(pre: PreprocessOutputs, head, camera: Cameras, expression: torch.Tensor, pose) -> np.ndarray:
    """Crop | crop with the shaded fitted mesh blended in, detected (green) and fitted (red) landmarks."""
    import cv2

    from ..render.mesh_raster import shade_mesh

    with torch.no_grad():
        verts = head.animate(expression[None].float(), pose)
        rgb, covered = shade_mesh(verts, head.faces, camera)
        lmk = head.landmarks(verts)
        uv, _ = project_points(lmk[0], camera)
    crop = pre.reference.copy()
    shaded = (rgb[0].numpy() * 255).astype(np.uint8)
    m = covered[0].numpy()
    blend = crop.copy()
    blend[m] = (0.45 * crop[m] + 0.55 * shaded[m]).astype(np.uint8)
    S = crop.shape[0]
    r = max(1, S // 256)
    for x, y in pre.landmarks[:, :2]:
        cv2.circle(blend, (int(round(x)), int(round(y))), r, (0, 255, 0), -1, cv2.LINE_AA)
    for x, y in uv[0].numpy():
        cv2.circle(blend, (int(round(x)), int(round(y))), max(1, r // 2), (255, 0, 0), -1, cv2.LINE_AA)
    return np.concatenate([crop, blend], 1)


def run_preprocess_and_fit(image_path: Path, run_dir: Path, pre_cfg: PreprocessConfig | None = None, fit_cfg: HeadFitConfig | None = None) -> dict:
    """Both nodes, as ``zero1toa preprocess IMAGE --out RUN_DIR`` runs them."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    m1 = preprocess_image(image_path, run_dir / "preprocess", pre_cfg)
    m2 = fit_head(run_dir / "preprocess", run_dir / "head", fit_cfg)
    return {"preprocess": m1, "fit_head": m2, "seconds": time.perf_counter() - t0}
