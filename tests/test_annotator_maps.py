"""Landmark maps in the MediaPipe-face annotator's style, pixel for pixel (what a pretrained
MediaPipe-face ControlNet was trained on), and the diffusers generator feeding exactly those."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zero1toa.render.camera import Cameras
from zero1toa.render.landmark_maps import ANNOTATOR_PARTS, ANNOTATOR_PUPILS, draw_annotator_maps

DATA = Path(__file__).parent / "data" / "annotator"
PROJECT = Path(__file__).resolve().parents[1]
PALETTE = {(0, 0, 0)} | {c for _, c in ANNOTATOR_PARTS} | set(ANNOTATOR_PUPILS.values())


def _draw(uv: list, ids: list, size: int = 128) -> np.ndarray:
    """Our annotator maps of landmarks given in pixels (a camera that maps (u, v, 1) to (u, v))."""
    pts = torch.cat([torch.tensor(uv), torch.ones(len(uv), 1)], -1)[None]
    cams = Cameras(torch.eye(4)[None], torch.eye(3)[None], size, size)
    return (draw_annotator_maps(pts, torch.tensor(ids), cams)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_maps_match_the_reference_annotator_pixel_for_pixel():
    data = json.loads((DATA / "landmarks.json").read_text())
    for key in ("0", "35"):
        ref = np.asarray(Image.open(DATA / f"reference_yaw{key}.png").convert("RGB"))
        ours = _draw(data[key]["uv"], data[key]["ids"])
        assert ours.shape == ref.shape
        assert (ours == ref).all(), f"yaw {key}: {(ours != ref).any(-1).sum()} pixels differ"


def test_palette_facts_recorded_from_the_annotator():
    """Colours as the annotator's final RGB image holds them (its specs are BGR, reversed at the end)."""
    ref = np.asarray(Image.open(DATA / "reference_yaw0.png").convert("RGB"))
    colours = {tuple(int(v) for v in c) for c in np.unique(ref.reshape(-1, 3), axis=0)}
    assert colours == PALETTE
    parts = dict(ANNOTATOR_PARTS)
    assert parts["face_oval"] == (10, 200, 10) and parts["lips"] == (10, 180, 10)
    assert parts["right_eye"] == (180, 200, 10) and parts["left_eye"] == (10, 200, 180)
    assert ANNOTATOR_PUPILS[468] == (250, 200, 10) and ANNOTATOR_PUPILS[473] == (10, 200, 250)
    # the subject's right eye lies on the image's left in a frontal view
    ys, xs = np.nonzero((ref == (180, 200, 10)).all(-1))
    yl, xl = np.nonzero((ref == (10, 200, 180)).all(-1))
    assert xs.mean() < 64 < xl.mean()
    # lines are 2 px thick, not anti-aliased: a vertical cut through the face oval's side
    # crosses exactly 2 or 3 oval pixels and no blended colours exist anywhere
    row = ref[64]
    oval = np.nonzero((row == (10, 200, 10)).all(-1))[0]
    left = oval[oval < 64]
    assert 2 <= len(left) <= 3


def test_generate_tiny_writes_the_conditions_it_fed_in_the_annotator_palette(tmp_path):
    out = tmp_path / "gen"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "generate", "sample", "--out", str(out), "--frames", "4", "generator=tiny", "generator.resolution=64", "preprocess.resolution=256"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted((out / "conditions").glob("*.png"))
    assert len(pngs) == 4
    for p in pngs:
        img = np.asarray(Image.open(p).convert("RGB"))
        colours = {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, 3), axis=0)}
        assert colours <= PALETTE, colours - PALETTE
        assert len(colours) >= 5  # oval, eyes, brows, lips drawn
