"""AniPortrait's pose guider, in our words: face-mesh landmark images -> features added to the UNet.

What it computes (learnt from AniPortrait's ``src/models/pose_guider.py``): a small conv stack
turns each landmark image [3, H, W] into a latent-resolution feature (three stride-2 stages, then
a zero-initialised 1x1 projection to the UNet's first width, times a learnt ``scale``), and four
more stages take it down the UNet's resolutions. Each later stage ends in a self-attention
transformer (diffusers' ``Transformer2DModel``; AniPortrait calls them ``cross_attn*`` but builds
them without cross-attention, so they never look at the reference pose). The five features are
added to the denoising UNet's activations: after ``conv_in`` and after each down block.

AniPortrait also passes a *reference* pose image through the same layers; its only consumer is
those ``cross_attn`` blocks, which ignore it, so the result cannot change and we do not compute it.

**BatchNorm.** AniPortrait's inference scripts build the guider as a plain module and never call
``eval()``: its BatchNorm layers normalise with the statistics of the frames in the batch (one
context window, doubled for classifier-free guidance: the same statistics), as in training.
``batch_stats=True`` (the default of :class:`~zero1toa.generate.aniportrait.generator.AniPortraitSettings`)
reproduces that; ``False`` uses the stored running statistics.

State-dict names are exactly AniPortrait's (``conv_layers.<i>``, ``final_proj``,
``conv_layers_<k>.<i>``, ``cross_attn<k>.*``, ``scale``): ``tests/test_aniportrait_manifest.py``
checks them against the manifest derived from AniPortrait's own class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GuiderConfig:
    """Sizes of the pose guider. Defaults: AniPortrait's published guider (SD-1.5 widths)."""

    out_channels: int = 320  # the UNet's first block width; stages give 1x, 2x, 4x, 4x of it
    hidden: tuple[int, int, int, int] = (16, 32, 64, 128)  # widths of the image-resolution stem
    heads: int = 16  # the stage transformers: heads x head_dim = their inner width (1408)
    head_dim: int = 88
    norm_groups: int = 32


class FrameBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that normalises with the batch's own statistics when ``batch_stats`` is set
    (float32 statistics over frames and pixels, without touching the stored running ones, and
    also for a single value per channel, where it yields the bias), else with the stored ones."""

    batch_stats: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.batch_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        xf = x.float()
        mean = xf.mean(dim=(0, 2, 3), keepdim=True)
        var = xf.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        y = (xf - mean) * torch.rsqrt(var + self.eps) * self.weight.float().view(1, -1, 1, 1) + self.bias.float().view(1, -1, 1, 1)
        return y.to(x.dtype)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=1), FrameBatchNorm(cout), nn.ReLU()]


class PoseGuider(nn.Module):
    """Landmark images [B, 3, F, H, W] (values as AniPortrait feeds them) -> 5 features [B, C_k, F, h_k, w_k].

    With a UNet of widths (C, 2C, 4C, 4C) and latents of size h = H/8: features
    [B, C, F, h, w], [B, C, F, h/2, w/2], [B, 2C, F, h/4, w/4], [B, 4C, F, h/8, w/8], [B, 4C, F, h/8, w/8].
    """

    def __init__(self, config: GuiderConfig = GuiderConfig()):
        super().__init__()
        self.config = config
        c, (h0, h1, h2, h3) = config.out_channels, config.hidden
        stem: list[nn.Module] = []
        # (3 -> 3 -> h0 /2) (h0 -> h0 -> h1 /2) (h1 -> h1 -> h2 /2) (h2 -> h2 -> h3): image -> latent grid
        for cin, cout, last in ((3, h0, False), (h0, h1, False), (h1, h2, False), (h2, h3, True)):
            stem += _conv_bn_relu(cin, cin, 3, 1)
            stem += _conv_bn_relu(cin, cout, 3 if last else 4, 1 if last else 2)
        self.conv_layers = nn.Sequential(*stem)
        self.final_proj = nn.Conv2d(h3, c, kernel_size=1)
        self.conv_layers_1 = nn.Sequential(*_conv_bn_relu(c, c, 3, 1), *_conv_bn_relu(c, c, 3, 2))
        self.conv_layers_2 = nn.Sequential(*_conv_bn_relu(c, c, 3, 1), *_conv_bn_relu(c, 2 * c, 3, 2))
        self.conv_layers_3 = nn.Sequential(*_conv_bn_relu(2 * c, 2 * c, 3, 1), *_conv_bn_relu(2 * c, 4 * c, 3, 2))
        self.conv_layers_4 = nn.Sequential(*_conv_bn_relu(4 * c, 4 * c, 3, 1))
        for k, width in enumerate((c, 2 * c, 4 * c, 4 * c), start=1):
            setattr(self, f"cross_attn{k}", _stage_transformer(width, config))
        self.scale = nn.Parameter(torch.ones(1) * 2)
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """AniPortrait's init: He-normal convs with zero biases, and a zero final projection, so an
        untrained guider adds exactly nothing (the UNet starts as SD-1.5)."""
        for block in (self.conv_layers, self.conv_layers_1, self.conv_layers_2, self.conv_layers_3, self.conv_layers_4):
            for m in block:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                    m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                    m.bias.zero_()
        self.final_proj.weight.zero_()
        self.final_proj.bias.zero_()

    def forward(self, pose: Tensor, batch_stats: bool = True) -> list[Tensor]:
        """pose [B, 3, F, H, W] -> the five features (see the class docstring).

        ``batch_stats``: BatchNorm from this batch's frames (AniPortrait's inference) or from the
        stored running statistics; either way nothing is updated.
        """
        b, _, f = pose.shape[:3]
        x = pose.permute(0, 2, 1, 3, 4).reshape(b * f, pose.shape[1], *pose.shape[3:])  # [(B F), 3, H, W]
        for m in self.modules():
            if isinstance(m, FrameBatchNorm):
                m.batch_stats = batch_stats
        x = self.final_proj(self.conv_layers(x)) * self.scale  # [(B F), C, h, w]
        feats = [x]
        for k in range(1, 5):
            x = getattr(self, f"conv_layers_{k}")(x)
            x = getattr(self, f"cross_attn{k}")(x, return_dict=False)[0]
            feats.append(x)
        return [y.reshape(b, f, *y.shape[1:]).permute(0, 2, 1, 3, 4) for y in feats]  # [B, C_k, F, h_k, w_k]


def _stage_transformer(width: int, config: GuiderConfig) -> nn.Module:
    """One self-attention transformer over a stage's feature map (AniPortrait's ``cross_attn<k>``)."""
    from diffusers.models import Transformer2DModel

    return Transformer2DModel(
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=width,
        norm_num_groups=config.norm_groups,
        cross_attention_dim=None,  # as AniPortrait builds them: self-attention only
    )
