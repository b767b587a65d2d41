"""The first DAG node: preprocess a portrait (the head fit is :mod:`zero1toa.preprocess.head_fit`).

``preprocess_image``: any photo -> the aligned square reference crop, its foreground mask, the
468 face-mesh landmarks (+ iris) in crop pixels, and the crop transform.

It writes its folder atomically with a manifest; on any error nothing is left half-written and
earlier artifacts stay valid.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils.io import atomic_dir, read_json, sha256_file, write_json_atomic
from ..identity import code_digest
from ..utils.manifest import Manifest, Timer, digest_path
from .align import align_crop, transform_points
from .errors import PreprocessWarning
from .facemesh import FaceMeshRunner, default_runner, find_face
from .image_io import load_image
from .mask import foreground_mask

log = logging.getLogger("zero1toa.preprocess")



@dataclass
class PreprocessConfig:
    resolution: int = 512  # side of the square reference crop
    margin: float = 2.2  # crop side in face heights (forehead to chin)
    face_center_y: float = 0.55  # where the face centre lands vertically (fraction of the crop)
    min_face_px: int = 64  # smaller faces are rejected
    mask_method: str = "auto"  # auto | alpha | selfie_segmentation | grabcut
    relandmark_in_crop: bool = True  # run the face mesh again on the crop (sharper landmarks)


@dataclass
class PreprocessOutputs:
    reference: np.ndarray  # [S, S, 3] uint8
    mask: np.ndarray  # [S, S] float32 in [0, 1]
    landmarks: np.ndarray  # [468, 3] crop pixels (z relative depth, same scale)
    iris: np.ndarray | None  # [10, 3]
    info: dict

    @property
    def resolution(self) -> int:
        return self.reference.shape[0]

    def reference_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.reference.copy()).permute(2, 0, 1).float() / 255.0


def preprocess_image(
    image_path: Path,
    out_dir: Path,
    config: PreprocessConfig | None = None,
    runner: FaceMeshRunner | None = None,
) -> dict:
    """Photo -> ``out_dir`` (reference.png, mask.png, landmarks.json, crop.json, manifest.json)."""
    cfg = config or PreprocessConfig()
    image_path = Path(image_path)
    timer = Timer()
    warnings: list[PreprocessWarning] = []
    with timer("load"):
        loaded = load_image(image_path)
    warnings += loaded.warnings
    runner = runner or default_runner()
    with timer("detect"):
        face = find_face(loaded.rgb, image_path, warnings, runner=runner, min_face_px=cfg.min_face_px)
    with timer("align"):
        crop = align_crop(
            loaded.rgb, face.landmarks.points, cfg.resolution, alpha=loaded.alpha, margin=cfg.margin, face_center_y=cfg.face_center_y
        )
        points = transform_points(face.landmarks.points, crop.matrix)
        iris = transform_points(face.landmarks.iris, crop.matrix) if face.landmarks.iris is not None else None
        source = "original photo, mapped into the crop"
        if cfg.relandmark_in_crop:
            try:
                again = find_face(crop.image, image_path, None, runner=runner, min_face_px=8)
                points = again.landmarks.points.astype(np.float64)
                iris = again.landmarks.iris
                source = "face mesh re-run on the crop"
            except Exception as exc:  # keep the mapped landmarks; say why
                log.warning("%s: re-landmarking the crop failed (%s); using the mapped landmarks", image_path, exc)
    with timer("mask"):
        mask, method = foreground_mask(crop.image, crop.alpha, points, method=cfg.mask_method)
        mask = (mask * crop.valid).astype(np.float32)
    # No path in here: the same photo at another path (a flow's copy, DVC's input) must give the
    # same artifact digests; the path goes to the manifest, which digests exclude.
    info = {
        "source_sha256": sha256_file(image_path),
        "source_size": [loaded.width, loaded.height],
        "source_mode": loaded.original_mode,
        "exif_transposed": loaded.exif_transposed,
        "crop_matrix": crop.matrix.tolist(),
        "crop_inverse": crop.inverse.tolist(),
        "roll_deg": crop.roll_deg,
        "scale": crop.scale,
        "padded_fraction": crop.padded_fraction,
        "mask_method": method,
        "mask_fraction": float((mask > 0.5).mean()),
        "landmark_source": source,
        "yaw_deg": face.yaw_deg,
        "num_faces": face.num_faces,
        "face_box": face.detection.box.tolist(),
        "face_score": float(face.landmarks.face_score),
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        Image.fromarray(crop.image).save(tmp / "reference.png")
        Image.fromarray((mask * 255).round().astype(np.uint8)).save(tmp / "mask.png")
        write_json_atomic(
            tmp / "landmarks.json",
            {
                "convention": "mediapipe468 (+ iris 468-477); crop pixels, x right, y down, z relative depth",
                "points": np.asarray(points, dtype=float).round(4).tolist(),
                "iris": None if iris is None else np.asarray(iris, dtype=float).round(4).tolist(),
            },
        )
        write_json_atomic(tmp / "crop.json", info)
        manifest = Manifest(
            node="preprocess",
            params=asdict(cfg),
            inputs={"image": info["source_sha256"]},
            outputs={name: digest_path(tmp / name) for name in ("reference.png", "mask.png", "landmarks.json", "crop.json")},
            code_version=code_digest("preprocess"),
            timings=timer.timings,
            warnings=[w.to_dict() for w in warnings],
            metrics={"mask_fraction": info["mask_fraction"], "yaw_deg": face.yaw_deg},
            extra={"source_image": str(image_path)},
        )
        manifest.write(tmp)
    return manifest.to_dict()


def load_preprocess(folder: Path) -> PreprocessOutputs:
    folder = Path(folder)
    for name in ("reference.png", "mask.png", "landmarks.json", "crop.json"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder} lacks {name}: run `zero1toa preprocess` first")
    ref = np.asarray(Image.open(folder / "reference.png").convert("RGB"))
    mask = np.asarray(Image.open(folder / "mask.png").convert("L")).astype(np.float32) / 255.0
    lm = read_json(folder / "landmarks.json")
    iris = None if lm.get("iris") is None else np.asarray(lm["iris"], dtype=np.float64)
    return PreprocessOutputs(ref, mask, np.asarray(lm["points"], dtype=np.float64), iris, read_json(folder / "crop.json"))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
