"""The preprocess + fit_head nodes on real files: outputs, alpha, and bad input that leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from zero1toa.preprocess.errors import CorruptImage, FaceTooSmall, NoFaceFound, NotAnImage, PreprocessError
from zero1toa.preprocess.pipeline import PreprocessConfig, load_preprocess, preprocess_image
from zero1toa.sample import sample_portrait
from zero1toa.utils.io import read_json

CFG = PreprocessConfig(resolution=256)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_sample_portrait_outputs(fitted_run):
    pre = load_preprocess(fitted_run / "preprocess")
    assert pre.reference.shape == (256, 256, 3)
    info = pre.info
    assert 0.25 < info["mask_fraction"] < 0.75
    # the face is centred horizontally and in the upper-middle of the crop, eyes level
    xs, ys = pre.landmarks[:, 0], pre.landmarks[:, 1]
    assert abs(xs.mean() - 128) < 20 and 80 < ys.mean() < 170
    assert abs(pre.landmarks[263, 1] - pre.landmarks[33, 1]) < 3
    # the mask covers the face and not the top corners
    assert pre.mask[int(ys.mean()), int(xs.mean())] > 0.5
    assert pre.mask[:10, :10].mean() < 0.1 and pre.mask[:10, -10:].mean() < 0.1
    man = read_json(fitted_run / "preprocess" / "manifest.json")
    assert man["node"] == "preprocess" and set(man["outputs"]) >= {"reference.png", "mask.png", "landmarks.json"}
    fit = read_json(fitted_run / "head" / "fit.json")
    assert fit["reprojection_error_px"]["mean"] < 0.5  # stated threshold: half a pixel at 256 px
    preview = np.asarray(Image.open(fitted_run / "head" / "preview.png"))
    assert preview.shape == (256, 512, 3) and preview[:, 256:].std() > 10


def test_rgba_input_keeps_its_alpha_as_the_mask(tmp_path):
    rgb = sample_portrait()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(alpha, (240, 170), (150, 200), 0, 0, 360, 255, -1)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(path)
    man = preprocess_image(path, tmp_path / "run" / "preprocess", CFG)
    assert read_json(tmp_path / "run" / "preprocess" / "crop.json")["mask_method"] == "alpha"
    assert man["params"]["mask_method"] == "auto"
    mask = load_preprocess(tmp_path / "run" / "preprocess").mask
    assert set(np.unique((mask > 0.5).astype(int))) == {0, 1}


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, type, str]]:
    (tmp / "notes.png").write_text("this is not an image")
    ok = tmp / "ok.jpg"
    Image.fromarray(sample_portrait()).save(ok, quality=90)
    data = ok.read_bytes()
    (tmp / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(tmp / "noise.png")
    canvas = np.full((1000, 1000, 3), 200, np.uint8)
    canvas[400:600, 400:600] = cv2.resize(sample_portrait(), (200, 200), interpolation=cv2.INTER_AREA)
    Image.fromarray(canvas).save(tmp / "tiny_face.png")
    return {
        "not an image": (tmp / "notes.png", NotAnImage, "not an image|cannot"),
        "truncated": (tmp / "truncated.jpg", CorruptImage, "truncated|corrupt"),
        "no face": (tmp / "noise.png", NoFaceFound, "no face"),
        "face too small": (tmp / "tiny_face.png", FaceTooSmall, "at least 64 px"),
    }


@pytest.mark.parametrize("case", ["not an image", "truncated", "no face", "face too small"])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, case):
    path, error, words = _bad_inputs(tmp_path)[case]
    run = tmp_path / "run"
    with pytest.raises(error, match=words) as info:
        preprocess_image(path, run / "preprocess", CFG)
    assert path.name in str(info.value)
    assert isinstance(info.value, PreprocessError)
    assert _leftovers(run) == []  # no partial preprocess/ folder, no temp folder


def test_a_failed_rerun_keeps_the_previous_good_outputs(tmp_path, sample_image):
    run = tmp_path / "run"
    preprocess_image(sample_image, run / "preprocess", CFG)
    before = read_json(run / "preprocess" / "manifest.json")
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(PreprocessError):
        preprocess_image(bad, run / "preprocess", CFG)
    assert read_json(run / "preprocess" / "manifest.json") == before
    assert _leftovers(run) == ["preprocess"]


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "preprocess", str(bad), "--out", str(tmp_path / "run"), "preprocess.resolution=128"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=180,
    )
    assert proc.returncode == 1
    assert "bad.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "preprocess").exists()


def test_cli_preprocess_writes_outputs(tmp_path, sample_image):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "preprocess", str(sample_image), "--out", str(tmp_path / "run"), "preprocess.resolution=128"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert Path(out["preview"]).exists() and out["reprojection_error_px"] < 1.0
