"""Landmark re-extraction: generated frames whose face is wrong or missing are regenerated once,
then down-weighted or dropped, and the dataset says why."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from zero1toa.generate.base import GenerationResult, GeneratorInfo, VideoGenerator
from zero1toa.symgen.round import ClipGenerator, SymGenConfig


@pytest.fixture(scope="module")
def scene(fitted_run):
    from zero1toa.generate.config import GeneratorConfig
    from zero1toa.generate.factory import build_generator
    from zero1toa.progressive.schedules import Clip
    from zero1toa.runfolder import load_reference

    head, ref = load_reference(fitted_run)
    gen = build_generator(GeneratorConfig(kind="reprojection", resolution=128, supersample=1), head, ref)
    yaws = np.array([0.0, 20.0, 70.0])  # the last is beyond the detector's range: not checked
    clip = Clip("c", "spatial", 0, yaws, np.zeros(3), np.tile(ref.expression.numpy(), (3, 1)), np.tile(ref.jaw.numpy(), (3, 1)))
    return head, ref, gen, clip


class _Shifted(VideoGenerator):
    """Wraps a generator (as a model whose geometry is not exact) and moves every face ``shift``
    pixels to the right: 0 is a faithful model, 20 draws the wrong landmarks."""

    def __init__(self, inner: VideoGenerator, shift: int = 20) -> None:
        self.inner, self.shift, self.calls = inner, shift, 0
        self.info = replace(inner.info, geometry_exact=False)

    def _generate_window(self, request):
        self.calls += 1
        out = self.inner._generate_window(request)
        return GenerationResult(torch.roll(out.frames, self.shift, dims=-1), torch.roll(out.masks, self.shift, dims=-1))


class _Noise(VideoGenerator):
    """Like the tiny random diffusion model: frames are noise, no face in them."""

    def __init__(self, size: int) -> None:
        self.info = GeneratorInfo("noise", size, 16, 0, True)
        self.calls = 0

    def _generate_window(self, request):
        self.calls += 1
        g = torch.Generator().manual_seed(request.seed)
        n, s = request.num_frames, request.landmark_maps.shape[-1]
        return GenerationResult(torch.rand(n, 3, s, s, generator=g), torch.ones(n, 1, s, s))


def test_the_embedded_generator_is_not_checked(scene):
    """It renders the requested geometry itself: its landmarks are right by construction."""
    head, ref, gen, clip = scene
    cg = ClipGenerator(head, ref, gen, 1.0, SymGenConfig())
    assert gen.info.geometry_exact and cg.checker is None
    assert cg.generate(clip, None, 1.0, 0)["status"] == ["unchecked"] * 3


def test_a_faithful_frame_passes(scene):
    head, ref, gen, clip = scene
    out = ClipGenerator(head, ref, _Shifted(gen, 0), 1.0, SymGenConfig()).generate(clip, None, 1.0, 0)
    assert out["status"] == ["ok", "ok", "unchecked"]
    assert out["error"][0] < 0.06 and out["error"][1] < 0.12 and math.isnan(out["error"][2])
    assert out["points"][0].shape == (468, 2) and out["points"][2] is None
    assert out["weight"] == [1.0, 1.0, 1.0]


def test_wrong_landmarks_are_regenerated_once_then_downweighted(scene):
    head, ref, gen, clip = scene
    shifted = _Shifted(gen)
    out = ClipGenerator(head, ref, shifted, 1.0, SymGenConfig()).generate(clip, None, 1.0, 0)
    assert shifted.calls == 2  # the first try and one regeneration
    for f in (0, 1):
        assert out["status"][f].startswith("downweighted: landmark error") and "after one regeneration" in out["status"][f]
        assert out["weight"][f] == pytest.approx(0.2)
    assert out["status"][2] == "unchecked" and out["weight"][2] == 1.0


def test_frames_without_a_face_are_dropped_when_asked(scene):
    head, ref, _, clip = scene
    noise = _Noise(64)
    out = ClipGenerator(head, ref, noise, 1.0, SymGenConfig(landmark_failure="drop")).generate(clip, None, 1.0, 0)
    assert noise.calls == 2
    assert out["status"][:2] == ["dropped: no face found (after one regeneration)"] * 2
    assert out["weight"] == [0.0, 0.0, 1.0]


def test_the_dataset_records_why_and_the_trainer_never_draws_a_dropped_frame(scene, tmp_path):
    from zero1toa.symgen.dataset import ObjectStore, rows_to_tensors
    from zero1toa.symgen.round import _rows_for_clip
    import pandas as pd

    head, ref, _, clip = scene
    store = ObjectStore(tmp_path / "objects")
    out = ClipGenerator(head, ref, _Noise(64), 1.0, SymGenConfig(landmark_failure="drop")).generate(clip, None, 1.0, 0)
    rows = pd.DataFrame(_rows_for_clip(clip, out, store, "spatial_1", "noise", "init", 1.0, 0, 0, "spatial_1", "spatial_1@0", 0))
    assert list(rows["landmark_status"])[:2] == ["dropped: no face found (after one regeneration)"] * 2
    t = rows_to_tensors(rows, store.get)
    assert t.weights.tolist() == [0.0, 0.0, 1.0]
    draws = torch.multinomial(t.weights, 200, replacement=True, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {2}


def test_refreshes_can_be_conditioned_on_extracted_landmarks(scene):
    """condition_on_extracted: the maps come from the landmarks found in the current frames."""
    head, ref, gen, clip = scene
    cg = ClipGenerator(head, ref, _Shifted(gen, 0), 1.0, SymGenConfig())
    first = cg.generate(clip, None, 1.0, 0)
    pts = torch.from_numpy(np.stack([first["points"][0]] * 3)).float() + torch.tensor([6.0, 0.0])
    again = cg.generate(clip, None, 1.0, 0, points=pts)
    cols = lambda m: torch.nonzero(m[0].amax(0) > 0)[:, 1].float().mean()  # noqa: E731
    assert float(cols(again["maps"]) - cols(first["maps"])) == pytest.approx(6.0, abs=1.0)


def test_the_tiny_diffusion_models_frames_are_rejected(scene):
    """The real diffusers path with the tiny random model: its frames hold no face, so every
    checked frame is regenerated once and then down-weighted, with the reason recorded."""
    from zero1toa.generate.config import GeneratorConfig
    from zero1toa.generate.factory import build_generator

    head, ref, _, clip = scene
    tiny = build_generator(GeneratorConfig(kind="tiny", resolution=64), head, ref)
    assert not tiny.info.geometry_exact and tiny.info.landmark_style == "mediapipe_face"
    out = ClipGenerator(head, ref, tiny, 1.0, SymGenConfig()).generate(clip, None, 1.0, 0)
    assert out["status"][:2] == ["downweighted: no face found (after one regeneration)"] * 2
    assert out["weight"] == [0.2, 0.2, 1.0] and out["status"][2] == "unchecked"
