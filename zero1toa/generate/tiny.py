"""A tiny random AnimateDiff + ControlNet model, saved in the same folder layout as real weights.

Why: no model hub is reachable where this project is tested, yet the diffusers backend
(:mod:`zero1toa.generate.diffusion`) must run end to end. This module builds the *same classes*
the real backend loads (UNet2DConditionModel, MotionAdapter, ControlNetModel, AutoencoderKL,
CLIPTextModel + CLIPTokenizer, DDIMScheduler, CLIPVisionModelWithProjection + IP-Adapter
weights) at toy sizes with seeded random weights, and writes them with ``save_pretrained`` into
the layout :meth:`AnimateDiffControlNetGenerator.from_folder` reads. So tests exercise exactly
the loading and generation path a user's real weights take; only the numbers are meaningless.

Sizes: about 0.56 M parameters in all (a 2.3 MB folder); a 2-step, 8-frame, 64x64 generation
takes ~0.07 s on 2 CPU cores without classifier-free guidance.

API: :func:`tiny_components` (the modules in memory), :func:`build_tiny_animatediff` (saved to a
folder), :func:`zero_controlnet` (ControlNet's output exactly zero, or random again).

Departures from plain random init, each to mimic a property of trained models the tests rely on:
- VAE: posterior log-variance pushed very low (the trained SD VAE's posterior is nearly
  deterministic), and ``scaling_factor`` calibrated as SD's was, to 1/std of the latents, so
  scaled latents have unit variance and the scheduler's noise levels mean what they say;
- ControlNet: its zero-initialised output convolutions (the "zero convs" and the conditioning
  embedding's last conv) get random weights by default, so landmark maps change the result;
  :func:`zero_controlnet` sets them back to exactly zero. The conditioning embedding's inner
  convs get a signal-preserving init (see :func:`_wake_conditioning_embedding`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..utils.io import atomic_dir
from .diffusion import split_ip_adapter_state

# Words the tokenizer can spell in whole tokens (the rest falls back to byte-level tokens).
_WORDS = (
    "a photo portrait of person face head the neutral studio light high quality detailed "
    "realistic looking at camera plain background blurry low bad deformed ugly lowres"
).split()

TINY_BLOCKS = (16, 32)  # UNet / ControlNet / MotionAdapter block widths
TINY_CROSS_DIM = 32  # text hidden size = UNet cross-attention dim
TINY_MAX_TOKENS = 77  # as CLIP: prompts pad/truncate to this length
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte-level BPE alphabet: each byte maps to a printable unicode character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tiny_clip_vocab(words: tuple[str, ...] = tuple(_WORDS)) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP BPE vocabulary and its merge rules.

    CLIP's layout: the 256 byte symbols, the same with the end-of-word mark ``</w>``, then one
    merge chain per word in ``words`` (so each becomes a single token), then the two special
    tokens ``<|startoftext|>``, ``<|endoftext|>`` last.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in alphabet + [s + "</w>" for s in alphabet]:
        vocab.setdefault(sym, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            rule = (parts[0], parts[1])
            if rule not in merges:
                merges.append(rule)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = [parts[0] + parts[1]] + parts[2:]
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return vocab, merges


def tiny_clip_tokenizer():
    """The tiny CLIPTokenizer, in memory (the same one :func:`write_tiny_clip_tokenizer` saves)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TINY_MAX_TOKENS)


def write_tiny_clip_tokenizer(folder: Path) -> int:
    """Write the tiny tokenizer as SD-1.5 ships its own: vocab.json, merges.txt and two configs.

    Returns the vocabulary size (the text encoder's ``vocab_size``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_MAX_TOKENS, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return len(vocab)


def _controlnet_output_convs(controlnet) -> list[torch.nn.Conv2d]:
    """The convolutions diffusers zero-initialises: they alone decide whether ControlNet acts."""
    return [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]


@torch.no_grad()
def zero_controlnet(controlnet, zero: bool = True, seed: int = 0, std: float = 0.5) -> None:
    """Set ControlNet's output convolutions to exactly zero (``zero=True``) or to random values.

    With them zero, the ControlNet's residuals are exactly zero, so the landmark maps cannot
    change the UNet's prediction (bit for bit); with random values, they do. ``controlnet`` is
    a ``diffusers.ControlNetModel``; it is changed in place.
    """
    gen = torch.Generator().manual_seed(seed)
    for conv in _controlnet_output_convs(controlnet):
        for p in (conv.weight, conv.bias):
            if zero:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * std)


@torch.no_grad()
def _wake_conditioning_embedding(controlnet, seed: int, gain: float = 1.5) -> None:
    """Re-initialise the landmark encoder's inner convs so its output depends on its input.

    With default init, the 7-conv SiLU stack that embeds the landmark image shrinks the signal
    about 10^4-fold (two different landmark maps gave embeddings differing by 5e-5), so landmarks
    could not steer a random model at all. N(0, gain^2 / fan_in) weights, zero biases, keep the
    signal alive (embedding differences ~0.04 for different landmark maps), as a trained
    ControlNet's encoder would.
    """
    gen = torch.Generator().manual_seed(seed)
    emb = controlnet.controlnet_cond_embedding
    for conv in [emb.conv_in, *emb.blocks]:
        fan_in = conv.weight[0].numel()
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (gain / fan_in**0.5))
        conv.bias.zero_()


def _ip_adapter_state(unet_motion, image_embed_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """Random IP-Adapter weights in the original (h94/IP-Adapter) flat safetensors layout.

    Keys follow what diffusers' loader expects: ``image_proj.proj`` (embeds -> 4 tokens) +
    ``image_proj.norm``, and ``ip_adapter.<k>.to_{k,v}_ip.weight`` with k = 1, 3, 5, ... counted
    over the UNet's cross-attention processors in ``attn_processors`` order (motion modules
    skipped), exactly as ``UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers``
    walks them.
    """
    gen = torch.Generator().manual_seed(seed)
    cfg = unet_motion.config
    cross = cfg.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_embed_dim, generator=gen) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet_motion.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        if name.startswith("mid_block"):
            hidden = cfg.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(cfg.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = cfg.block_out_channels[int(name[len("down_blocks.")])]
        for kind in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(hidden, cross, generator=gen) * 0.3
        key_id += 2
    return state


def tiny_image_encoder(projection_dim: int):
    """A tiny CLIP vision encoder with projection (32 px images); random weights from the global RNG."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, projection_dim=projection_dim
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_vae(resolution: int):
    """A tiny SD-style AutoencoderKL (x8, 4 latent channels) that behaves like the trained one where
    tests depend on it: a near-deterministic posterior and a calibrated ``scaling_factor``.
    Its random weights come from the global torch RNG (seed it first)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # 4 blocks: the x8 factor of SD's VAE
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=resolution,
    )
    with torch.no_grad():
        vae.quant_conv.bias[4:] = -12.0  # near-deterministic posterior, like the trained SD VAE
        # SD's scaling_factor is 1/std of its latents, so scaled latents have unit variance
        # and the scheduler's noise levels mean what they say; calibrate ours the same way.
        probe = torch.rand(4, 3, resolution, resolution) * 2 - 1
        latent_std = vae.encode(probe).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / latent_std, 5))
    return vae


def tiny_components(
    seed: int = 0,
    resolution: int = 64,
    zero_controlnet_output: bool = False,
    with_ip_adapter: bool = True,
) -> dict[str, Any]:
    """The tiny model's components in memory, keyed like the folder layout's sub-folders.

    Keys: unet (UNet2DConditionModel), motion_adapter, controlnet, vae, text_encoder, tokenizer,
    scheduler, and with ``with_ip_adapter`` image_encoder and ip_adapter (a state dict
    ``{"image_proj": {...}, "ip_adapter": {...}}`` as diffusers' loader takes it). Seeded: the
    same arguments give bit-identical weights. The global torch RNG is left untouched.
    """
    from diffusers import (
        ControlNetModel,
        DDIMScheduler,
        MotionAdapter,
        UNet2DConditionModel,
        UNetMotionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    if resolution % 16 != 0 or resolution <= 0:
        raise ValueError(f"tiny model resolution must be a positive multiple of 16, got {resolution}")
    out: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out["tokenizer"] = tiny_clip_tokenizer()
        vocab_size = len(out["tokenizer"].get_vocab())
        out["text_encoder"] = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab_size,
                hidden_size=TINY_CROSS_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=TINY_MAX_TOKENS,
                bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1,
                pad_token_id=vocab_size - 1,
                projection_dim=TINY_CROSS_DIM,
            )
        ).eval()

        unet = UNet2DConditionModel(
            sample_size=resolution // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=TINY_BLOCKS,
            layers_per_block=1,
            cross_attention_dim=TINY_CROSS_DIM,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        out["unet"] = unet
        adapter = MotionAdapter(
            block_out_channels=TINY_BLOCKS,
            motion_layers_per_block=1,  # must equal the UNet's layers_per_block
            motion_transformer_layers_per_block=1,
            motion_mid_block_layers_per_block=1,
            motion_transformer_layers_per_mid_block=1,
            motion_num_attention_heads=2,
            motion_norm_num_groups=4,
            motion_max_seq_length=32,
            use_motion_mid_block=True,
        )
        out["motion_adapter"] = adapter

        # Four conditioning-embedding stages = three stride-2 convs: the landmark image's 8x
        # reduction to the latent grid, as SD-1.5 ControlNets do.
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16))
        _wake_conditioning_embedding(controlnet, seed=seed + 3)
        zero_controlnet(controlnet, zero=zero_controlnet_output, seed=seed + 1)
        out["controlnet"] = controlnet

        vae = tiny_vae(resolution)  # draws from the global RNG seeded above, as before
        out["vae"] = vae

        # AnimateDiff's recommended DDIM settings ("linspace": the schedule runs t = 999 ... 0).
        out["scheduler"] = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="linspace",
        )

        if with_ip_adapter:
            image_encoder = tiny_image_encoder(projection_dim=32)
            out["image_encoder"] = image_encoder
            unet_motion = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
            flat = _ip_adapter_state(unet_motion, image_encoder.config.projection_dim, seed + 2)
            out["ip_adapter"] = split_ip_adapter_state(flat)
    return out


def build_tiny_animatediff(
    folder: Path,
    seed: int = 0,
    resolution: int = 64,
    zero_controlnet_output: bool = False,
    with_ip_adapter: bool = True,
) -> Path:
    """Build the tiny random model (see :func:`tiny_components`) and save it in the folder layout.

    Every component goes through ``save_pretrained`` (safetensors); the tokenizer as vocab.json +
    merges.txt; the IP-Adapter as one flat ``ip_adapter/ip-adapter_tiny.safetensors``. The folder
    is written atomically (built beside it, then renamed). Returns ``folder``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    parts = tiny_components(seed, resolution, zero_controlnet_output, with_ip_adapter)
    with atomic_dir(folder) as tmp:
        write_tiny_clip_tokenizer(tmp / "tokenizer")
        for sub in ("unet", "motion_adapter", "controlnet", "vae", "text_encoder", "scheduler", "image_encoder"):
            if sub in parts:
                parts[sub].save_pretrained(tmp / sub)
        if "ip_adapter" in parts:
            (tmp / "ip_adapter").mkdir()
            flat = {f"{head}.{k}": v.contiguous() for head, d in parts["ip_adapter"].items() for k, v in d.items()}
            save_file(flat, str(tmp / "ip_adapter" / "ip-adapter_tiny.safetensors"))
    return folder
