"""The head's completed texture atlas: one answer for what the photo never saw, shared by every view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zero1toa.generate.base import GenerationRequest
from zero1toa.generate.reprojection import ReprojectionConfig, ReprojectionGenerator
from zero1toa.head.base import HeadPose
from zero1toa.progressive.schedules import orbit_from_reference
from zero1toa.runfolder import load_reference
from zero1toa.texture.atlas import atlas_face_mask, layout_for_head, lookup, rasterize_atlas, sample_photo
from zero1toa.texture.completion import SOURCE_MIRROR, SOURCE_PHOTO, SOURCE_SYNTH, CompletionConfig, TextureAtlas, complete_head_texture

RES = 128


@pytest.fixture(scope="module")
def fitted(fitted_run):
    head, ref = load_reference(fitted_run)
    return head, ref


def _rest(head, ref):
    return head.animate(ref.expression[None], HeadPose.neutral(1))[0]


def test_every_texel_maps_back_to_itself_across_the_wrap_border(fitted):
    head, ref = fitted
    layout = layout_for_head(head, 64)
    v = _rest(head, ref)
    surface = rasterize_atlas(v, head.faces, layout, atlas_face_mask(head))
    rows = torch.arange(layout.height, dtype=torch.float64) + 0.5
    elevation = 90 - rows / layout.height * 180
    band = (elevation > -20) & (elevation < 70)
    assert surface.mask[band].float().mean() > 0.99  # the head closes around its centre
    pts = surface.points(v, head.faces)[surface.mask]  # [P, 3]
    xy = layout.texel_coords(pts.double())
    ys, xs = torch.nonzero(surface.mask, as_tuple=True)
    dx = (xy[:, 0] - (xs + 0.5)).abs()
    dx = torch.minimum(dx, layout.width - dx)  # the wrap border
    assert float(dx.max()) < 0.75 and float((xy[:, 1] - (ys + 0.5)).abs().max()) < 0.75
    # lookup() of an atlas holding its own coordinates returns the points' texels, seam included
    coords = torch.stack(torch.meshgrid(torch.arange(layout.height) + 0.5, torch.arange(layout.width) + 0.5, indexing="ij"))
    code = torch.stack([torch.cos(coords[1] / layout.width * 2 * math.pi), torch.sin(coords[1] / layout.width * 2 * math.pi), coords[0]])
    got = lookup(code.float(), layout, pts.float())
    back = xy[:, 0] < 1.0  # points right at the wrap border
    assert back.any()
    angle = torch.atan2(got[:, 1], got[:, 0]) % (2 * math.pi)
    want = (xy[:, 0] / layout.width * 2 * math.pi) % (2 * math.pi)
    err = torch.minimum((angle - want).abs(), 2 * math.pi - (angle - want).abs())
    assert float(err.max()) < 2 * math.pi / layout.width * 1.5


def test_completion_keeps_every_confident_photo_texel_exactly(fitted):
    head, ref = fitted
    cfg = CompletionConfig(atlas_height=64, patch=8)
    atlas = complete_head_texture(head, ref.image, ref.camera, ref.mask, ref.expression, cfg)
    sample = sample_photo(head, atlas.layout, ref.image, ref.camera, ref.mask, ref.expression)
    sure = sample.confidence >= 1.0
    assert sure.sum() > 200
    assert np.array_equal(atlas.rgb[sure], sample.rgb[sure])
    # the photo sees the front; the back comes from completion, and is not one flat colour
    assert (atlas.source == SOURCE_PHOTO).mean() > 0.1 and (atlas.source == SOURCE_SYNTH).mean() > 0.1
    back = atlas.source == SOURCE_SYNTH
    assert float(atlas.rgb[back].std(0).mean()) > 0.02
    again = complete_head_texture(head, ref.image, ref.camera, ref.mask, ref.expression, cfg)
    assert np.array_equal(atlas.rgb, again.rgb)  # deterministic


def test_the_blind_half_is_mirrored_from_the_seen_half(fitted):
    head, ref = fitted
    # Hide the subject's left half of the photo (image right): the mask says "not the person" there.
    S = ref.mask.shape[-1]
    mask = ref.mask.clone()
    mask[:, S // 2 + S // 16 :] = 0
    cfg = CompletionConfig(atlas_height=64, patch=8)
    atlas = complete_head_texture(head, ref.image, ref.camera, mask, ref.expression, cfg)
    seen = sample_photo(head, atlas.layout, ref.image, ref.camera, mask, ref.expression)
    W = atlas.layout.width
    cols = np.arange(W)
    left_face = (cols > W // 2 + W // 24) & (cols < W // 2 + W // 8)  # azimuth ~ +15..45 degrees
    region = np.zeros_like(atlas.source, dtype=bool)
    region[atlas.layout.height * 2 // 5 : atlas.layout.height // 2, left_face] = True  # eyes to cheeks
    assert (seen.confidence[region] == 0).all()  # the photo is blind there ...
    assert (atlas.source[region] == SOURCE_MIRROR).mean() > 0.8  # ... and the mirror filled it
    mirrored = seen.rgb[:, ::-1][region]  # the photo's colour at the mirrored texel
    sure = seen.confidence[:, ::-1][region] >= 1.0
    assert sure.mean() > 0.8
    # mirror_weight 0.9 of the texel is the mirrored photo colour, the rest the synthesis
    err = np.abs(atlas.rgb[region][sure] - mirrored[sure]).mean()
    assert err < 0.05, err


def test_atlas_round_trips_through_its_folder(fitted, tmp_path):
    head, ref = fitted
    atlas = complete_head_texture(head, ref.image, ref.camera, ref.mask, ref.expression, CompletionConfig(atlas_height=32, patch=6))
    atlas.save(tmp_path / "completion")
    back = TextureAtlas.load(tmp_path / "completion")
    assert back.layout == atlas.layout and np.array_equal(back.source, atlas.source)
    assert np.abs(back.rgb - atlas.rgb).max() <= 0.5 / 255 + 1e-6


def test_generator_fills_the_back_of_the_head_from_the_atlas_in_every_view(fitted_run, fitted):
    head, ref = fitted
    assert ref.completion is not None  # fit_head wrote it
    gen = ReprojectionGenerator(head, ref.image, ref.camera, ref.mask, face_labels=head.face_labels, config=ReprojectionConfig(resolution=RES), completion=ref.completion)
    plain = ReprojectionGenerator(head, ref.image, ref.camera, ref.mask, face_labels=head.face_labels, config=ReprojectionConfig(resolution=RES))
    cams = orbit_from_reference(ref.camera, [150.0, 180.0], [0.0, 0.0], ref.target, RES)
    red = torch.zeros(2, 3, RES, RES)
    red[:, 0] = 1.0
    req = GenerationRequest(ref.image, torch.zeros(2, 3, RES, RES), init_frames=red, strength=1.0, cameras=cams, poses=HeadPose.neutral(2))
    out = gen.generate(req)
    old = plain.generate(req)
    covered = (out.masks[:, 0] > 0.99) & (out.extras["confidence"][:, 0] < 1e-3)
    assert covered[1].float().mean() > 0.1
    # the atlas, not the avatar's (red) render and not one flat part colour
    assert (out.frames[1][0, covered[1]] - 1.0).abs().mean() > 0.2
    assert torch.allclose(old.frames[1][:, covered[1]], red[1][:, covered[1]], atol=2e-3)
    assert float(out.frames[1][:, covered[1]].std(1).mean()) > 0.02


def test_unseen_gaussians_start_with_the_atlas_colour(fitted):
    from zero1toa.avatar.gaussians import InitConfig, colour_from_texture, init_on_mesh, sh0_to_rgb
    from zero1toa.head.facemesh_rig import PART_NAMES

    head, ref = fitted
    g = init_on_mesh(head, InitConfig(num_gaussians=2000), seed=0, face_labels=head.face_labels, part_names=PART_NAMES)
    rgb = ref.completion.rgb_tensor()
    faces = atlas_face_mask(head)
    frac = colour_from_texture(g, head, lambda p: lookup(rgb, ref.completion.layout, p), faces, ref.expression)
    sel = faces[g.binding]
    assert 0.5 < frac == float(sel.float().mean()) < 1.0  # eyes and mouth interior keep their own colours
    colours = sh0_to_rgb(g.params["sh0"].data[:, 0, :])
    assert float(colours[sel].std(0).mean()) > 0.03  # a textured head, not one colour per part
