"""Landmark maps in AniPortrait's own style, pixel for pixel (what its pose guider was trained on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zero1toa.render.camera import Cameras
from zero1toa.render.landmark_maps import ANIPORTRAIT_LIPS, ANIPORTRAIT_OVAL_COLOUR, ANIPORTRAIT_PARTS, draw_aniportrait_maps, maps_from_points

DATA = Path(__file__).parent / "data"


def _draw(uv: list, ids: list, size: int) -> np.ndarray:
    """Landmarks given in 128 px coordinates, drawn into a ``size`` frame (a camera mapping (u, v, 1) to (u, v))."""
    pts = torch.cat([torch.tensor(uv) * (size / 128), torch.ones(len(uv), 1)], -1)[None]
    cams = Cameras(torch.eye(4)[None], torch.eye(3)[None], size, size)
    return (draw_aniportrait_maps(pts, torch.tensor(ids), cams)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("size", [512, 128])
@pytest.mark.parametrize("yaw", ["0", "35"])
def test_maps_match_aniportraits_own_drawing_pixel_for_pixel(yaw, size):
    data = json.loads((DATA / "annotator" / "landmarks.json").read_text())[yaw]
    ref = np.asarray(Image.open(DATA / "aniportrait" / f"reference_yaw{yaw}_{size}.png").convert("RGB"))
    ours = _draw(data["uv"], data["ids"], size)
    assert ours.shape == ref.shape
    assert (ours == ref).all(), f"yaw {yaw} at {size}: {(ours != ref).any(-1).sum()} pixels differ"


def test_palette_and_what_is_not_drawn():
    data = json.loads((DATA / "annotator" / "landmarks.json").read_text())["0"]
    img = _draw(data["uv"], data["ids"], 512)
    colours = {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, 3), axis=0)}
    palette = {(0, 0, 0), ANIPORTRAIT_OVAL_COLOUR} | {c for _, c in ANIPORTRAIT_PARTS} | {c for c, _ in ANIPORTRAIT_LIPS}
    assert colours == palette  # every part drawn, and nothing else (no nose, irises or pupils)


def test_points_outside_the_frame_are_dropped_with_their_edges():
    data = json.loads((DATA / "annotator" / "landmarks.json").read_text())["0"]
    uv = torch.tensor(data["uv"])
    shifted = uv + torch.tensor([200.0, 0.0])  # the whole face off to the right of a 128 px frame
    maps = maps_from_points(shifted[None], torch.tensor(data["ids"]), 128, style="aniportrait")
    assert maps.shape == (1, 3, 128, 128) and maps.max() == 0
