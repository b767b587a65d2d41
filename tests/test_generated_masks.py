"""Generated frames without masks (diffusion) get person masks and the trainer's background, so
the losses never fit a generated background."""

from __future__ import annotations

import torch

from zero1toa.generate.base import GenerationResult, GeneratorInfo, VideoGenerator
from zero1toa.symgen import round as R
from zero1toa.train.losses import AvatarLoss, LossConfig


class _Painter(VideoGenerator):
    """A stand-in diffusion model: a grey disc (the 'person') over a background it invents."""

    def __init__(self, background: str) -> None:
        self.background = background
        self.info = GeneratorInfo("painter", 32, 16, 0, True)

    def _generate_window(self, request):
        n, size = request.num_frames, request.landmark_maps.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()
        bg = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) if self.background == "noise" else torch.full((n, 3, size, size), 0.2)
        frames = bg * (1 - disc) + 0.6 * disc
        return GenerationResult(frames, None)  # no masks, like the diffusers backend


def test_frames_without_masks_are_segmented_and_composited(fitted_run, monkeypatch):
    from zero1toa.progressive.schedules import spatial_clips, SpatialConfig
    from zero1toa.runfolder import load_reference

    head, ref = load_reference(fitted_run)
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()
    monkeypatch.setattr(R, "person_masks", lambda frames: disc[None, None].expand(len(frames), 1, size, size).clone())
    clip = spatial_clips(SpatialConfig(clips_per_round=1, frames_per_clip=2), 0, ref.expression.numpy(), ref.jaw.numpy(), 0)[0]
    outs = [R.ClipGenerator(head, ref, _Painter(bg), background=1.0).generate(clip, None, 1.0, 0) for bg in ("grey", "noise")]
    a, b = outs[0]["frames"], outs[1]["frames"]
    assert torch.equal(a, b)  # the invented backgrounds are gone ...
    assert torch.allclose(a[:, :, 0, 0], torch.ones(2, 3))  # ... replaced by the trainer's background
    assert torch.equal(outs[0]["masks"], disc[None, None].expand(2, 1, size, size))
    # and so the training loss of the same render is the same whatever the generator drew outside
    loss = AvatarLoss(LossConfig(ssim=0.0, position=0.0, scale=0.0))
    render = torch.full((1, 3, size, size), 0.5)
    alpha = torch.full((1, 1, size, size), 0.5)
    la, _ = loss(render, alpha, a[:1], outs[0]["masks"][:1], {})
    lb, _ = loss(render, alpha, b[:1], outs[1]["masks"][:1], {})
    assert float(la) == float(lb)


def test_person_masks_of_a_real_portrait(portrait):
    masks = R.person_masks(torch.from_numpy(portrait.copy()).permute(2, 0, 1)[None].float() / 255)
    assert masks is not None and masks.shape == (1, 1, 512, 512)
    assert float(masks[0, 0, 200:260, 230:290].mean()) > 0.9  # the face
    assert float(masks[0, 0, :40, :40].mean()) < 0.1  # a corner of the background
