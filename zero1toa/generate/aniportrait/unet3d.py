"""AniPortrait's two UNets, from diffusers' SD-1.5 UNet parts plus our motion modules.

**Reference UNet** (AniPortrait ``src/models/unet_2d_condition.py``): diffusers'
``UNet2DConditionModel`` from SD-1.5's config, without ``conv_norm_out``/``conv_out`` (AniPortrait
drops them: only the self-attention inputs of its blocks are ever used, see
:mod:`.reference_attn`). So its state dict is SD-1.5's minus those four tensors.

**Denoising UNet** (AniPortrait ``src/models/unet_3d.py``): the SD-1.5 UNet applied to every frame
(ResNets, spatial transformers, down/up samplers: diffusers' 2D blocks on [(B F), C, h, w], which is
what AniPortrait's "inflated" 3D layers compute: GroupNorm per frame, convolutions per frame), plus
a :class:`~.motion.MotionModule` after every spatial layer (``motion_modules.<j>`` beside each
block's ``resnets.<j>``; one in the mid block), plus the pose guider's features added after
``conv_in`` and after each down block. The diffusers blocks are used as containers; the forward
pass is ours, since the motion modules and pose features sit between their layers.

State-dict names equal AniPortrait's: the 2D part is named as SD-1.5's UNet (so as
``denoising_unet.pth``), the motion modules as ``motion_module.pth`` (checked in
``tests/test_aniportrait_manifest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .motion import MotionConfig, MotionModule


@dataclass(frozen=True)
class MotionPlacement:
    """Where motion modules go (inference_v2.yaml: resolutions 1, 2, 4, 8, the mid block, encoder too)."""

    resolutions: tuple[int, ...] = (1, 2, 4, 8)
    mid_block: bool = True
    decoder_only: bool = False


def build_sd_unet(unet_config: dict):
    """diffusers ``UNet2DConditionModel`` from an SD-1.5-style config dict (private ``_*`` keys ignored)."""
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    return UNet2DConditionModel(**cfg)


def build_reference_unet(unet_config: dict):
    """The reference UNet: SD-1.5's UNet with AniPortrait's head removed (``conv_out`` becomes identity)."""
    unet = build_sd_unet(unet_config)
    unet.conv_norm_out = None  # diffusers skips the norm and activation when it is None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    return unet


class DenoisingUNet3D(nn.Module):
    """latents [B, 4, F, h, w], timestep, context [B, L, D], pose features -> prediction [B, 4, F, h, w]."""

    def __init__(self, unet_config: dict, motion: MotionConfig = MotionConfig(), placement: MotionPlacement = MotionPlacement()):
        super().__init__()
        base = build_sd_unet(unet_config)
        self.config = base.config
        for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block", "up_blocks", "conv_norm_out", "conv_act", "conv_out"):
            setattr(self, name, getattr(base, name))
        n = len(self.down_blocks)
        for i, block in enumerate(self.down_blocks):
            if 2**i in placement.resolutions and not placement.decoder_only:
                block.motion_modules = nn.ModuleList([MotionModule(r.out_channels, motion) for r in block.resnets])
        if placement.mid_block:
            self.mid_block.motion_modules = nn.ModuleList([MotionModule(a.in_channels, motion) for a in self.mid_block.attentions])
        for i, block in enumerate(self.up_blocks):
            if 2 ** (n - 1 - i) in placement.resolutions:
                block.motion_modules = nn.ModuleList([MotionModule(r.out_channels, motion) for r in block.resnets])
        self.max_frames = motion.max_len

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @staticmethod
    def _motion(block: nn.Module, j: int, h: Tensor, num_frames: int) -> Tensor:
        mm = getattr(block, "motion_modules", None)
        return h if mm is None else mm[j](h, num_frames)

    def forward(self, sample: Tensor, timestep: Tensor | float, context: Tensor, pose_features: list[Tensor] | None = None) -> Tensor:
        """sample [B, 4, F, h, w]; context [B, L, D] (CLIP image embeds, shared by the frames);
        pose_features: the guider's five [B, C_k, F, h_k, w_k] (or None: no pose condition)."""
        b, _, f, hh, ww = sample.shape

        def frames(x: Tensor) -> Tensor:  # [B, C, F, h, w] -> [(B F), C, h, w]
            return x.permute(0, 2, 1, 3, 4).reshape(b * f, x.shape[1], *x.shape[3:])

        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        emb = self.time_embedding(self.time_proj(t).to(self.dtype))  # [B, 4C]
        emb = emb.repeat_interleave(f, dim=0)  # [(B F), 4C]
        ctx = context.repeat_interleave(f, dim=0)  # [(B F), L, D]
        pose = [frames(p.to(self.dtype)) for p in pose_features] if pose_features is not None else None

        h = self.conv_in(frames(sample))
        if pose is not None:
            h = h + pose[0]
        skips = [h]
        for i, block in enumerate(self.down_blocks):
            attns = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = resnet(h, emb)
                if attns is not None:
                    h = attns[j](h, encoder_hidden_states=ctx, return_dict=False)[0]
                h = self._motion(block, j, h, f)
                skips.append(h)
            if block.downsamplers is not None:
                h = block.downsamplers[0](h)
                skips.append(h)
            if pose is not None:
                h = h + pose[i + 1]  # after the block, not into its skips (as AniPortrait)

        mid = self.mid_block
        h = mid.resnets[0](h, emb)
        for j, (attn, resnet) in enumerate(zip(mid.attentions, mid.resnets[1:])):
            h = attn(h, encoder_hidden_states=ctx, return_dict=False)[0]
            h = self._motion(mid, j, h, f)
            h = resnet(h, emb)

        for block in self.up_blocks:
            attns = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                if attns is not None:
                    h = attns[j](h, encoder_hidden_states=ctx, return_dict=False)[0]
                h = self._motion(block, j, h, f)
            if block.upsamplers is not None:
                h = block.upsamplers[0](h, skips[-1].shape[-2:] if skips else None)

        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))  # [(B F), 4, h, w]
        return h.reshape(b, f, *h.shape[1:]).permute(0, 2, 1, 3, 4)  # [B, 4, F, h, w]
