"""The temporal ("motion") module AniPortrait inserts after every spatial layer of its denoising UNet.

What it computes (learnt from AniPortrait's ``src/models/motion_module.py``, itself AnimateDiff's
"Vanilla" module): per spatial position, attention across the frames of the window. GroupNorm
per frame, a linear projection in, transformer blocks of (LayerNorm, sinusoidal frame-position
encoding, temporal self-attention) x2 then a GEGLU feed-forward, a linear projection out
(zero-initialised, so a fresh module is the identity), and a residual.

Names are AniPortrait's (= the original AnimateDiff checkpoints'): ``temporal_transformer.norm``,
``.proj_in``, ``.transformer_blocks.<i>.attention_blocks.<j>.{to_q,to_k,to_v,to_out.0,pos_encoder.pe}``,
``.norms.<j>``, ``.ff.net.{0.proj,2}``, ``.ff_norm``, ``.proj_out``. The position table ``pe`` is a
saved buffer (AniPortrait's checkpoints hold it), so it is loaded, not recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MotionConfig:
    """AniPortrait's ``configs/inference/inference_v2.yaml`` ``motion_module_kwargs`` (the published ones)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2  # attention_block_types: [Temporal_Self, Temporal_Self]
    max_len: int = 32  # temporal_position_encoding_max_len: frames a window may hold
    norm_groups: int = 32


class _FramePositions(nn.Module):
    """Adds a sinusoidal encoding of the frame index to each token: x [N, F, C] -> [N, F, C]."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * freq)
        pe[0, :, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"a window of {x.shape[1]} frames exceeds the motion module's {self.pe.shape[1]} positions")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Multi-head self-attention across frames, with the frame-position encoding on its input."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = _FramePositions(dim, max_len)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, F, C] (N = batch x positions) -> [N, F, C]."""
        x = self.pos_encoder(x)
        n, f, c = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(n, f, self.heads, c // self.heads).transpose(1, 2)  # [N, heads, F, C/heads]

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x)))
        out = out.transpose(1, 2).reshape(n, f, c)
        return self.to_out[1](self.to_out[0](out))


class TemporalBlock(nn.Module):
    """(norm -> temporal attention -> residual) x k, then (norm -> GEGLU feed-forward -> residual)."""

    def __init__(self, dim: int, config: MotionConfig):
        super().__init__()
        from diffusers.models.attention import FeedForward

        heads = config.num_attention_heads
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, config.max_len) for _ in range(config.num_attention_blocks)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(config.num_attention_blocks)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """[(B F), C, h, w] -> the same shape: temporal attention at every spatial position."""

    def __init__(self, channels: int, config: MotionConfig):
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, config) for _ in range(config.num_transformer_block)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        bf, c, h, w = x.shape
        b = bf // num_frames
        residual = x
        y = self.norm(x)  # per frame, as AniPortrait (GroupNorm over each (b, f) image)
        # [(B F), C, h, w] -> [(B h w), F, C]: one sequence of frames per spatial position
        y = y.view(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y)
        y = y.view(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)
        return y + residual


class MotionModule(nn.Module):
    """AniPortrait's ``VanillaTemporalModule``: a :class:`TemporalTransformer` (zero-initialised output)."""

    def __init__(self, channels: int, config: MotionConfig = MotionConfig()):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)
        with torch.no_grad():
            self.temporal_transformer.proj_out.weight.zero_()
            self.temporal_transformer.proj_out.bias.zero_()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return self.temporal_transformer(x, num_frames)
