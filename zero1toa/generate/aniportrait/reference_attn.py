"""Reference attention: how the reference portrait's appearance reaches every generated frame.

What it computes (learnt from AniPortrait's ``src/models/mutual_self_attention.py``, fusion
"full"): the reference UNet runs once on the reference image's latent at t = 0; every spatial
self-attention layer records its input (the normalised tokens, [1, L, C]). In the denoising UNet
the self-attention layer at the same place then attends over its own tokens *and* the recorded
reference tokens (keys/values = concat along the token axis, the same for every frame). Under
classifier-free guidance the unconditional half attends to itself only, as AniPortrait's.

AniPortrait pairs layers by sorting both UNets' transformer blocks by width (stable, in module
order): the same position in both UNets, i.e. the same module name. We pair by name and check the
two sets of names are equal.

Done with diffusers attention processors on each ``attn1`` (the spatial self-attention of every
``BasicTransformerBlock``), so the diffusers blocks themselves stay unmodified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _attend(attn, query_tokens: Tensor, context: Tensor) -> Tensor:
    """diffusers ``Attention`` (no norms, no residual: SD-1.5's attn1) of [N, Lq, C] over [N, Lk, C]."""
    n, lq, _ = query_tokens.shape
    q, k, v = attn.to_q(query_tokens), attn.to_k(context), attn.to_v(context)
    heads = attn.heads

    def split(t: Tensor) -> Tensor:
        return t.view(n, t.shape[1], heads, t.shape[2] // heads).transpose(1, 2)  # [N, heads, L, d]

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=attn.scale)
    out = out.transpose(1, 2).reshape(n, lq, -1)
    return attn.to_out[1](attn.to_out[0](out))


class RecordingProcessor:
    """On the reference UNet's attn1: remember the input tokens (when ``recording``), attend normally."""

    def __init__(self) -> None:
        self.recording = False
        self.bank: Tensor | None = None  # [1, L, C]

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None, attention_mask=None, temb=None, **kwargs) -> Tensor:
        if self.recording:
            self.bank = hidden_states.detach().clone()
        return _attend(attn, hidden_states, hidden_states if encoder_hidden_states is None else encoder_hidden_states)


class ReadingProcessor:
    """On the denoising UNet's attn1: rows from ``first_reference_row`` on also attend to the bank."""

    def __init__(self, source: RecordingProcessor) -> None:
        self.source = source
        self.enabled = True
        self.first_reference_row = 0  # rows before it (the unconditional half under CFG) attend to themselves

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None, attention_mask=None, temb=None, **kwargs) -> Tensor:
        bank = self.source.bank
        if not self.enabled or bank is None or encoder_hidden_states is not None:
            return _attend(attn, hidden_states, hidden_states if encoder_hidden_states is None else encoder_hidden_states)
        r = self.first_reference_row
        out = []
        if r > 0:
            plain = hidden_states[:r]
            out.append(_attend(attn, plain, plain))
        if r < hidden_states.shape[0]:
            rows = hidden_states[r:]  # [n, L, C]
            ref = bank.to(rows.dtype).expand(rows.shape[0], -1, -1)  # the same reference for every frame
            out.append(_attend(attn, rows, torch.cat([rows, ref], dim=1)))
        return torch.cat(out) if len(out) > 1 else out[0]


def self_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """name -> ``attn1`` of every spatial transformer block (motion modules excluded), in module order."""
    from diffusers.models.attention import BasicTransformerBlock

    return {f"{name}.attn1": m.attn1 for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock) and "motion_modules" not in name}


class ReferenceLink:
    """Installs recording processors in ``reference_unet`` and reading ones in ``denoising_unet``."""

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module):
        ref, den = self_attention_layers(reference_unet), self_attention_layers(denoising_unet)
        if sorted(ref) != sorted(den):
            raise ValueError(f"the reference and denoising UNets' self-attention layers differ: {len(ref)} vs {len(den)} layers")
        self.recorders = {name: RecordingProcessor() for name in ref}
        self.readers = {name: ReadingProcessor(self.recorders[name]) for name in den}
        for name, layer in ref.items():
            layer.set_processor(self.recorders[name])
        for name, layer in den.items():
            layer.set_processor(self.readers[name])

    def record(self, run) -> None:
        """Call ``run()`` (one reference UNet forward) with recording on; the banks keep its tokens."""
        for p in self.recorders.values():
            p.recording, p.bank = True, None
        try:
            run()
        finally:
            for p in self.recorders.values():
                p.recording = False

    def set_rows(self, first_reference_row: int) -> None:
        for p in self.readers.values():
            p.first_reference_row = first_reference_row

    def set_enabled(self, enabled: bool) -> None:
        for p in self.readers.values():
            p.enabled = enabled

    def clear(self) -> None:
        for p in self.recorders.values():
            p.bank = None
