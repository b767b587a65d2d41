"""Face identity: does the avatar still look like the person away from the photo's view?

dlib's face-recognition ResNet (a 128-D embedding; two photos of the same person are usually
closer than 0.6, strangers farther) with its 5-point aligner, from the PyPI packages ``dlib-bin``
(prebuilt dlib) and ``face-recognition-models`` (the model files, CC0). Only the 5-point aligner,
the recognition ResNet and the detectors are used; the package's 68-point model is not (its
training data restricts commercial use).

Per yaw the render is searched for a face, first with dlib's HOG detector (fast, frontal to
about 45 degrees), then with its CNN detector (slower, finds turned faces); the distance of the
face's embedding to the photo's is reported with whether and how the face was found. A yaw
without a face has no distance (null, with the reason); nothing is guessed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Distance below which dlib's model usually sees the same person.
SAME_PERSON_DISTANCE = 0.6
MODEL_FILES = {
    "aligner": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


class IdentityUnavailable(RuntimeError):
    """dlib or its model files are missing (the metric is null with this message)."""


def model_folder() -> Path:
    """The model files' folder of ``face-recognition-models``, found without importing the package
    (its ``__init__`` needs ``pkg_resources``, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable("the face-recognition-models package is not installed (bash scripts/setup.sh installs it)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise IdentityUnavailable(f"{folder} lacks {', '.join(missing)}")
    return folder


@dataclass
class FaceEmbedding:
    vector: np.ndarray  # [128]
    detector: str  # "hog" | "cnn"
    box: tuple[int, int, int, int]  # left, top, right, bottom (pixels)


class FaceIdentity:
    """dlib's detectors, 5-point aligner and recognition ResNet, loaded once."""

    def __init__(self, folder: Path | None = None, use_cnn: bool = True) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise IdentityUnavailable(f"dlib is not installed ({exc}); bash scripts/setup.sh installs the dlib-bin wheel") from exc
        folder = Path(folder) if folder is not None else model_folder()
        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.cnn = dlib.cnn_face_detection_model_v1(str(folder / MODEL_FILES["cnn_detector"])) if use_cnn else None
        self.aligner = dlib.shape_predictor(str(folder / MODEL_FILES["aligner"]))
        self.recognition = dlib.face_recognition_model_v1(str(folder / MODEL_FILES["recognition"]))

    def _detect(self, rgb: np.ndarray):
        boxes = self.hog(rgb, 1)
        if len(boxes):
            return max(boxes, key=lambda r: r.area()), "hog"
        if self.cnn is None:
            return None, ""
        # The CNN detector is ~20x slower than HOG: run it on a copy at most 320 px wide (faces in
        # our renders are large) and scale the box back.
        k = max(1, int(np.ceil(rgb.shape[1] / 320)))
        small = np.ascontiguousarray(rgb[::k, ::k])
        found = self.cnn(small, 0)
        if not len(found):
            return None, ""
        r = max(found, key=lambda d: d.rect.area()).rect
        return self.dlib.rectangle(r.left() * k, r.top() * k, r.right() * k, r.bottom() * k), "cnn"

    def embed(self, rgb: np.ndarray) -> FaceEmbedding | None:
        """uint8 [H, W, 3] -> the largest face's embedding, or None when no face is found."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        box, how = self._detect(rgb)
        if box is None:
            return None
        shape = self.aligner(rgb, box)
        vec = np.asarray(self.recognition.compute_face_descriptor(rgb, shape), dtype=np.float64)
        return FaceEmbedding(vec, how, (box.left(), box.top(), box.right(), box.bottom()))


def distance(a: FaceEmbedding, b: FaceEmbedding) -> float:
    return float(np.linalg.norm(a.vector - b.vector))


def identity_sweep(identity: FaceIdentity, reference_rgb: np.ndarray, renders: dict[float, np.ndarray]) -> tuple[dict, dict, dict]:
    """(flat values, reasons for nulls, details) for renders keyed by yaw in degrees.

    Flat keys: ``identity_distance_<|yaw|>`` (mean over +-yaw where a face was found) and
    ``identity_found_fraction``.
    """
    ref = identity.embed(reference_rgb)
    per_yaw: dict[str, dict] = {}
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    groups: dict[int, list[float]] = {}
    for yaw, img in sorted(renders.items()):
        emb = identity.embed(img)
        key = f"{yaw:+.0f}"
        if emb is None or ref is None:
            per_yaw[key] = {"face_found": emb is not None, "distance": None, "detector": emb.detector if emb else None}
        else:
            d = distance(emb, ref)
            per_yaw[key] = {"face_found": True, "distance": round(d, 6), "detector": emb.detector, "same_person": d < SAME_PERSON_DISTANCE}
            groups.setdefault(int(round(abs(yaw))), []).append(d)
    for a in sorted({int(round(abs(y))) for y in renders}):
        name = f"identity_distance_{a}"
        ds = groups.get(a, [])
        values[name] = float(np.mean(ds)) if ds else None
        if not ds:
            reasons[name] = "no face found in the photo" if ref is None else f"no face found in the render at yaw +-{a}"
    values["identity_found_fraction"] = sum(v["face_found"] for v in per_yaw.values()) / max(1, len(per_yaw))
    details = {
        "model": "dlib_face_recognition_resnet_model_v1 + shape_predictor_5_face_landmarks (face-recognition-models, CC0)",
        "same_person_below": SAME_PERSON_DISTANCE,
        "reference_face_found": ref is not None,
        "reference_detector": ref.detector if ref else None,
        "per_yaw": per_yaw,
    }
    return values, reasons, details
