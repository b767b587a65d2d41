"""The embedded weight-free generator: reproduces the photo, takes the avatar where blind, moves with the rig."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zero1toa.generate.base import GenerationRequest
from zero1toa.generate.reprojection import ReprojectionConfig, ReprojectionGenerator
from zero1toa.head.base import HeadPose
from zero1toa.runfolder import load_reference
from zero1toa.progressive.schedules import orbit_from_reference

RES = 128  # generator resolution; the reference crop is 256 (fitted_run)
PSNR_MIN_DB = 26.0  # reference view, neutral, inside the mask (measured 27.7 dB: 256 px crop -> 128 px)


@pytest.fixture(scope="module")
def setup(fitted_run):
    head, ref = load_reference(fitted_run)
    gen = ReprojectionGenerator(head, ref.image, ref.camera, ref.mask, face_labels=head.face_labels, config=ReprojectionConfig(resolution=RES))
    return head, ref, gen


def _request(ref, cams, n, expressions=None, init=None, strength=1.0):
    return GenerationRequest(ref.image, torch.zeros(n, 3, RES, RES), init_frames=init, strength=strength, cameras=cams, expressions=expressions, poses=HeadPose.neutral(n))


def test_reference_view_reproduces_the_photo_inside_the_mask(setup):
    head, ref, gen = setup
    out = gen.generate(_request(ref, ref.camera.resized(RES, RES), 1))
    target = F.interpolate(ref.image[None], size=(RES, RES), mode="area")[0]
    mask = F.interpolate(ref.mask[None, None], size=(RES, RES), mode="area")[0, 0] > 0.5
    mse = ((out.frames[0] - target) ** 2).mean(0)[mask].mean()
    psnr = -10 * torch.log10(mse)
    assert psnr > PSNR_MIN_DB, f"reference-view PSNR {psnr:.2f} dB"
    assert out.masks is not None and ((out.masks[0, 0] > 0.5) == mask).float().mean() > 0.97


def test_unseen_pixels_come_from_init_frames(setup):
    head, ref, gen = setup
    cams = orbit_from_reference(ref.camera, [0.0, 160.0], [0.0, 0.0], ref.target, RES)
    red = torch.zeros(2, 3, RES, RES)
    red[:, 0] = 1.0
    out = gen.generate(_request(ref, cams, 2, init=red))
    conf = out.extras["confidence"]
    covered = out.masks[:, 0] > 0.99
    back = covered[1] & (conf[1, 0] < 1e-3)
    assert back.float().sum() > 0.2 * covered[1].float().sum()  # most of the back of the head is unseen
    assert torch.allclose(out.frames[1][:, back], red[1][:, back], atol=2e-3)  # conf < 1e-3 there
    front_seen = covered[0] & (conf[0, 0] > 0.99)
    assert (out.frames[0][0, front_seen] - 1.0).abs().mean() > 0.1  # the front is the photo, not the red init


def test_strength_blends_with_init_and_is_deterministic(setup):
    head, ref, gen = setup
    cams = orbit_from_reference(ref.camera, [30.0], [0.0], ref.target, RES)
    init = torch.rand(1, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    full = gen.generate(_request(ref, cams, 1, init=init, strength=1.0)).frames
    again = gen.generate(_request(ref, cams, 1, init=init, strength=1.0)).frames
    zero = gen.generate(_request(ref, cams, 1, init=init, strength=0.0)).frames
    half = gen.generate(_request(ref, cams, 1, init=init, strength=0.5)).frames
    assert torch.equal(full, again)
    assert torch.allclose(zero, init, atol=1e-6)
    assert torch.allclose(half, 0.5 * (init + full), atol=1e-5)


def test_opening_the_jaw_moves_the_textured_lips(setup):
    head, ref, gen = setup
    cams = ref.camera.resized(RES, RES)
    cams2 = orbit_from_reference(ref.camera, [0.0, 0.0], [0.0, 0.0], ref.target, RES)
    e = torch.zeros(2, head.expression_dim)
    e[1, 0] = 1.0
    out = gen.generate(_request(ref, cams2, 2, expressions=e))
    from zero1toa.render.camera import project_points

    lmk = head.landmarks(head.neutral_vertices()[None])[0]
    uv, _ = project_points(lmk, cams)
    mouth_row = int(uv[0, 14, 1])
    chin_row = int(uv[0, 152, 1])
    x0, x1 = int(uv[0, 61, 0]), int(uv[0, 291, 0])
    lower = (out.frames[1] - out.frames[0])[:, mouth_row : chin_row + 4, x0:x1].abs().mean()
    upper = (out.frames[1] - out.frames[0])[:, : int(uv[0, 168, 1]), :].abs().mean()  # above the nose bridge
    assert lower > 0.03, f"lower face changed by {lower:.4f}"
    assert upper < 0.005, f"upper face changed by {upper:.4f}"


def test_requests_without_cameras_are_rejected(setup):
    head, ref, gen = setup
    with pytest.raises(ValueError, match="cameras"):
        gen.generate(GenerationRequest(ref.image, torch.zeros(1, 3, RES, RES)))


def test_a_blink_shows_the_lids_skin_not_its_lashes_stretched(setup):
    head, ref, gen = setup
    from zero1toa.render.mesh_raster import rasterize_mesh

    assert bool(gen._lid_faces.any())  # found from the blink blendshapes
    cams = orbit_from_reference(ref.camera, [0.0], [0.0], ref.target, RES)
    e = torch.zeros(1, head.expression_dim)
    e[0, head.expression_names.index("blink_left")] = 1.0
    e[0, head.expression_names.index("blink_right")] = 1.0
    out = gen.generate(_request(ref, cams, 1, expressions=e))
    frags = rasterize_mesh(head.animate(e, HeadPose.neutral(1)), head.faces, cams)
    lid = frags.mask[0] & gen._lid_faces[frags.face_ids[0].clamp_min(0)]
    assert int(lid.sum()) > 20
    skin = gen._lid_colour[gen._lid_faces].mean(0)  # [3]

    def near_skin(frames: torch.Tensor) -> float:
        closed = frames[0][:, lid]  # [3, P]
        return float(((closed - skin[:, None]).abs().mean(0) < 0.12).float().mean())

    # most of the closed lid is its skin (a dark lash line remains, as on a real closed eye) ...
    assert near_skin(out.frames) > 0.6
    # ... where the plain stretch of the photo's lid margin smears lashes and iris over it
    import copy

    plain = copy.copy(gen)
    plain._lid_faces = torch.zeros_like(gen._lid_faces)
    plain._fingerprint = "without-lids"  # its own cache entries
    assert near_skin(plain.generate(_request(ref, cams, 1, expressions=e)).frames) < near_skin(out.frames) - 0.1


def test_a_refresh_of_the_same_views_reuses_the_generated_layers_bit_exactly(setup):
    head, ref, gen = setup
    from zero1toa.generate import reprojection

    cams = orbit_from_reference(ref.camera, [20.0, 140.0], [0.0, 0.0], ref.target, RES)
    init = torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    reprojection._LAYER_CACHE.clear()
    first = gen.generate(_request(ref, cams, 2, init=init, strength=0.7)).frames
    assert len(reprojection._LAYER_CACHE) == 1
    calls = []
    original = gen._layers
    gen._layers = lambda request: calls.append(1) or original(request)  # count rasterisations
    try:
        again = gen.generate(_request(ref, cams, 2, init=init, strength=0.7)).frames
        other = gen.generate(_request(ref, cams, 2, init=1 - init, strength=0.7)).frames
        reprojection._LAYER_CACHE.clear()
        fresh = gen.generate(_request(ref, cams, 2, init=1 - init, strength=0.7)).frames
    finally:
        gen._layers = original
    assert calls == [1]  # only the run after clearing the cache rasterised
    assert torch.equal(first, again) and torch.equal(other, fresh)  # cached == fresh, bit for bit
    assert not torch.equal(first, other)  # the init still matters
