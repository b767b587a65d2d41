"""Aligned reference crop, foreground masks (alpha, selfie model, GrabCut) and the model asset
extraction, on the real sample portrait."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from zero1toa.preprocess import assets
from zero1toa.preprocess import facemesh as fm
from zero1toa.preprocess.align import align_crop, eye_roll_deg, invert_affine, transform_points, warp_affine_aa
from zero1toa.preprocess.facemesh import MeshIndex as MI
from zero1toa.preprocess.mask import clean_mask, foreground_mask, grabcut_seeds

_LOCAL_WHEELS = [
    os.environ.get("ZERO1TOA_MEDIAPIPE_WHEEL", ""),
    "/tmp/mpw/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
]


@pytest.fixture(scope="module")
def face(runner, portrait) -> fm.FaceResult:
    return fm.find_face(portrait, runner=runner)


@pytest.fixture(scope="module")
def crop(portrait, face):
    return align_crop(portrait, face.landmarks.points)


@pytest.fixture(scope="module")
def crop_points(face, crop) -> np.ndarray:
    return transform_points(face.landmarks.points, crop.matrix)


@pytest.fixture(scope="module")
def selfie_model(tmp_path_factory) -> Path:
    """The extracted model: the project's asset, else extracted from a local wheel, else skip."""
    found = assets.selfie_model_path()
    if found is not None:
        return found
    for wheel in filter(None, _LOCAL_WHEELS):
        if Path(wheel).is_file():
            dest = assets.ensure_mediapipe_assets(tmp_path_factory.mktemp("mp"), allow_download=False, wheel=Path(wheel))
            if dest is not None:
                return dest / assets.SELFIE_FILE
    pytest.skip("selfie-segmentation model cannot be extracted here: run `python -m zero1toa.preprocess.assets` "
                "(needs the package registry) or set ZERO1TOA_MEDIAPIPE_WHEEL")


# -- transforms ---------------------------------------------------------------------------------


def test_transform_points_round_trip_and_depth_scale() -> None:
    m = np.array([[0.0, -2.0, 10.0], [2.0, 0.0, -4.0]])  # rotate 90 deg, scale 2
    pts = np.array([[1.0, 2.0, 3.0], [-5.0, 0.5, -1.0]])
    out = transform_points(pts, m)
    np.testing.assert_allclose(out[:, :2], [[6.0, -2.0], [9.0, -14.0]])
    np.testing.assert_allclose(out[:, 2], pts[:, 2] * 2.0)
    np.testing.assert_allclose(transform_points(out, invert_affine(m)), pts)
    assert transform_points(pts.astype(np.float32), m).dtype == np.float32


def test_warp_matches_pixel_centre_convention() -> None:
    """A pure translation by whole pixels moves content by exactly those pixels."""
    img = np.zeros((20, 20), np.uint8)
    img[5, 7] = 255
    out = warp_affine_aa(img, np.array([[1.0, 0, 3], [0, 1.0, 2]]), (20, 20), replicate=False)
    assert out[7, 10] == 255 and out.sum() == 255


# -- the aligned crop -----------------------------------------------------------------------------


def test_crop_maps_back_to_the_photo(face, crop, crop_points) -> None:
    np.testing.assert_allclose(transform_points(crop_points, crop.inverse), face.landmarks.points, atol=1e-3)
    np.testing.assert_allclose(crop.matrix @ np.vstack([crop.inverse, [0, 0, 1]]), np.eye(3)[:2], atol=1e-9)


def test_crop_centres_the_face_with_room_for_hair_and_neck(crop, crop_points) -> None:
    size = crop.size
    assert crop.image.shape == (512, 512, 3) and crop.image.dtype == np.uint8
    p = crop_points
    centre_x = (p[MI.CHEEK_RIGHT, 0] + p[MI.CHEEK_LEFT, 0]) / 2
    assert abs(centre_x - size / 2) < 0.05 * size
    face_h = p[MI.CHIN, 1] - p[MI.FOREHEAD, 1]
    assert 0.35 * size < face_h < 0.55 * size
    assert p[MI.FOREHEAD, 1] > 0.25 * size  # room for the skull and hair above
    assert size - p[MI.CHIN, 1] > 0.2 * size  # room for the neck below
    assert abs(eye_roll_deg(p)) < 1e-3
    # the sample's hair reaches the top of the photo, so a thin top band is padding
    assert 0.0 < crop.padded_fraction < 0.1 and not crop.valid[:5].all() and crop.valid[-50:].all()


def test_rotated_input_is_levelled(runner, portrait, face, crop) -> None:
    """Rotate the photo 15 deg: the measured roll changes by 15 deg, and landmarks detected
    afresh *in the crop* are level and where they were in the unrotated crop."""
    m = cv2.getRotationMatrix2D((256.0, 256.0), 15, 1.0)  # counter-clockwise on screen
    rotated = cv2.warpAffine(portrait, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    res = fm.find_face(rotated, runner=runner)
    rcrop = align_crop(rotated, res.landmarks.points)
    assert rcrop.roll_deg - crop.roll_deg == pytest.approx(-15.0, abs=1.5)
    again = fm.find_face(rcrop.image, runner=runner)
    assert abs(eye_roll_deg(again.landmarks.points)) < 1.5
    ref = fm.find_face(crop.image, runner=runner)
    shift = np.linalg.norm(again.landmarks.points[:, :2] - ref.landmarks.points[:, :2], axis=1)
    assert np.median(shift) < 0.02 * crop.size


def test_downscaling_a_large_photo_does_not_alias(face) -> None:
    """A 4000 x 3000 photo of 1-px stripes must shrink to flat grey, not to moire."""
    h, w = 3000, 4000
    stripes = np.repeat(((np.arange(w) % 2) * 255).astype(np.uint8)[None, :, None], h, axis=0).repeat(3, axis=2)
    pts = face.landmarks.points.astype(np.float64) * np.array([6.0, 6.0, 6.0]) + np.array([500.0, 200.0, 0.0])
    big = align_crop(stripes, pts)
    assert big.scale < 0.5
    assert abs(big.image.mean() - 127.5) < 2 and big.image.std() < 4
    naive = cv2.warpAffine(stripes, big.matrix, (512, 512), flags=cv2.INTER_LINEAR)
    assert naive.std() > 10 * big.image.std()  # what plain interpolation would have produced


def test_alpha_is_cropped_with_the_image(portrait, face) -> None:
    alpha = np.zeros(portrait.shape[:2], np.uint8)
    alpha[:, 256:] = 255
    c = align_crop(portrait, face.landmarks.points, alpha=alpha)
    assert c.alpha.shape == (512, 512)
    edge = transform_points(np.array([[256.0, 120.0]]), c.matrix)[0]
    col = int(edge[0])
    row = int(np.clip(edge[1], 0, 511))
    assert c.alpha[row, max(col - 10, 0)] < 30 and c.alpha[row, min(col + 10, 511)] > 225


def test_face_near_the_border_is_padded_and_marked(portrait, face) -> None:
    shifted = np.ascontiguousarray(portrait[:, 150:])  # the face now touches the left edge
    pts = face.landmarks.points.copy()
    pts[:, 0] -= 150
    c = align_crop(shifted, pts)
    assert not c.valid[:, :20].any() and c.valid[100:, -20:].all()
    # padded pixels replicate the edge column instead of turning black
    assert c.image[~c.valid].mean() > 40


# -- masks --------------------------------------------------------------------------------------


def _face_hull(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from zero1toa.preprocess.align import _FACE_OVAL

    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points[list(_FACE_OVAL), :2].round().astype(np.int32)), 1)
    return hull > 0


def _check_person_mask(mask: np.ndarray, points: np.ndarray) -> None:
    assert mask.dtype == np.float32 and mask.shape == (512, 512)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert 0.2 < mask.mean() < 0.7
    assert mask[_face_hull(points, mask.shape)].mean() > 0.98  # the whole face
    for corner in (mask[:40, :40], mask[:40, -40:]):
        assert corner.max() < 0.05  # background in the top corners
    # hair above the forehead and the neck below the chin are in
    fx, fy = points[MI.FOREHEAD, :2]
    assert mask[int(fy - 40), int(fx)] > 0.9
    cx, cy = points[MI.CHIN, :2]
    assert mask[int(cy + 15), int(cx)] > 0.9  # the neck (the turtleneck below it is clothing)
    # the background beside the head is out
    assert mask[int(fy), 20] < 0.05 and mask[int(fy), 491] < 0.05


def test_grabcut_mask(crop, crop_points) -> None:
    mask, method = foreground_mask(crop.image, None, crop_points, method="grabcut")
    assert method == "grabcut"
    _check_person_mask(mask, crop_points)
    again, _ = foreground_mask(crop.image, None, crop_points, method="grabcut")
    np.testing.assert_array_equal(mask, again)


def test_selfie_segmentation_mask(crop, crop_points, selfie_model) -> None:
    mask, method = foreground_mask(crop.image, None, crop_points, selfie_model=selfie_model)
    assert method == "selfie_segmentation"
    _check_person_mask(mask, crop_points)


def test_auto_uses_the_project_asset_or_grabcut(crop, crop_points) -> None:
    _, method = foreground_mask(crop.image, None, crop_points)
    assert method == ("selfie_segmentation" if assets.selfie_model_path() is not None else "grabcut")


def test_alpha_wins_and_is_kept_exactly(crop, crop_points) -> None:
    alpha = np.zeros((512, 512), np.uint8)
    cv2.ellipse(alpha, (256, 260), (170, 230), 0, 0, 360, 255, -1)
    alpha[alpha > 0] = 200  # partial opacity survives as is
    mask, method = foreground_mask(crop.image, alpha, crop_points)
    assert method == "alpha"
    np.testing.assert_array_equal(mask, alpha.astype(np.float32) / 255.0)


def test_fully_opaque_alpha_is_ignored(crop, crop_points) -> None:
    _, method = foreground_mask(crop.image, np.full((512, 512), 255, np.uint8), crop_points, selfie_model=None)
    assert method != "alpha"


def test_grabcut_seeds_keep_the_neck_column_open(crop_points) -> None:
    labels = grabcut_seeds((512, 512), crop_points)
    chin_x = int(crop_points[MI.CHIN, 0])
    assert labels[-1, chin_x] == cv2.GC_PR_FGD  # the neck may reach the bottom edge
    assert labels[0, 0] == cv2.GC_BGD and labels[5, 256] == cv2.GC_BGD
    assert labels[int(crop_points[MI.NOSE_TIP, 1]), int(crop_points[MI.NOSE_TIP, 0])] == cv2.GC_FGD


def test_clean_mask_keeps_the_face_component_and_fills_holes(crop_points) -> None:
    prob = np.zeros((512, 512), np.float32)
    cv2.circle(prob, (256, 250), 150, 1.0, -1)
    cv2.circle(prob, (256, 250), 20, 0.0, -1)  # a hole (a dark mouth, say)
    cv2.rectangle(prob, (0, 480), (60, 511), 1.0, -1)  # a separate blob: a bystander's shoulder
    out = clean_mask(prob, crop_points, feather_px=0)
    assert out[250, 256] == 1.0 and out[500, 20] == 0.0


def test_mask_rejects_bad_requests(crop) -> None:
    with pytest.raises(ValueError, match="unknown mask method"):
        foreground_mask(crop.image, method="magic")
    with pytest.raises(ValueError, match="needs the image's alpha"):
        foreground_mask(crop.image, method="alpha")


# -- the asset extraction -------------------------------------------------------------------------


def _fake_wheel(path: Path, with_model: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if with_model:
            zf.writestr(assets.SELFIE_MEMBER, b"not really a model")
        zf.writestr("mediapipe-0.10.21.dist-info/LICENSE", "Apache License 2.0\n")
        zf.writestr("mediapipe/other.py", "")
    return path


def test_asset_extraction_from_a_wheel(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")
    dest = tmp_path / "assets" / "mediapipe"
    assert assets.ensure_mediapipe_assets(dest, allow_download=False, wheel=wheel) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", "manifest.json", "selfie_segmentation.tflite"]
    manifest = json.loads((dest / "manifest.json").read_text())
    from zero1toa.utils.io import sha256_file

    assert manifest["wheel_sha256"] == sha256_file(wheel)
    assert manifest["files"]["selfie_segmentation.tflite"]["sha256"] == sha256_file(dest / "selfie_segmentation.tflite")
    assert assets.selfie_model_path(dest) == dest / "selfie_segmentation.tflite"
    # an intact extraction is reused without a wheel; a tampered one is not trusted
    assert assets.ensure_mediapipe_assets(dest, allow_download=False) == dest
    (dest / "selfie_segmentation.tflite").write_bytes(b"tampered")
    assert assets.selfie_model_path(dest) is None


def test_asset_extraction_failures_return_none(tmp_path: Path, caplog) -> None:
    dest = tmp_path / "mp"
    bad = _fake_wheel(tmp_path / "mediapipe-bad.whl", with_model=False)
    assert assets.ensure_mediapipe_assets(dest, allow_download=False, wheel=bad) is None
    assert "does not contain" in caplog.text and not dest.exists()
    assert assets.ensure_mediapipe_assets(dest, allow_download=False) is None
    assert assets.ensure_mediapipe_assets(dest, allow_download=False, wheel=tmp_path / "missing.whl") is None
    assert assets.main(["--dest", str(dest), "--no-download"]) == 2
