"""CLIP score (the paper's Table 1) and CLIP identity similarity, from local weight folders.

Table 1 of Zero-1-to-A reports the cosine similarity between CLIP embeddings of avatar renders
and of a caption, for three backbones (ViT-L/14, ViT-B/16, ViT-B/32). We compute the same: both
embeddings L2-normalised, their dot product, averaged over renders (views x expressions). The
image-image variant (reference crop vs renders) is an identity-preservation proxy.

Weights come only from local ``transformers`` folders (``CLIPModel.from_pretrained(path,
local_files_only=True)`` + ``CLIPTokenizer``): no hub is reachable where this runs. Image
preprocessing is ours, not transformers' image processor (which breaks when a CUDA-only
torchvision is installed beside CPU torch): resize the shortest side to the model's input size
(bicubic, antialiased), centre crop, normalise with the folder's ``preprocessor_config.json``
mean/std or OpenAI's. The embeddings are computed as ``visual_projection(vision_model.pooler)``
and ``text_projection(text_model.pooler)``, which is what ``get_*_features`` return in every
transformers version, without depending on their return types.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("zero1toa.evaluate")

#: OpenAI CLIP's normalisation (also transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Config keys of the paper's backbones and their display names.
PAPER_BACKBONES = {"vit_l_14": "ViT-L/14", "vit_b_16": "ViT-B/16", "vit_b_32": "ViT-B/32"}


def display_name(key: str) -> str:
    """``vit_l_14`` -> ``ViT-L/14`` (other keys: the same pattern when it applies, else the key)."""
    if key in PAPER_BACKBONES:
        return PAPER_BACKBONES[key]
    m = re.fullmatch(r"vit_([a-z]+)_(\d+)", key)
    return f"ViT-{m.group(1).upper()}/{m.group(2)}" if m else key


def _size_value(value: Any) -> int | None:
    """preprocessor_config sizes come as 224, {"shortest_edge": 224} or {"height": 224, ...}."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict):
        for k in ("shortest_edge", "height", "width"):
            if k in value:
                return int(value[k])
    return None


def read_preprocessing(folder: Path, image_size: int) -> dict[str, Any]:
    """Mean, std, resize size and crop size from ``preprocessor_config.json`` (OpenAI defaults)."""
    path = Path(folder) / "preprocessor_config.json"
    cfg: dict[str, Any] = {}
    if path.is_file():
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    mean = tuple(float(v) for v in cfg.get("image_mean", OPENAI_CLIP_MEAN))
    std = tuple(float(v) for v in cfg.get("image_std", OPENAI_CLIP_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{path}: image_mean/image_std must hold 3 values")
    crop = _size_value(cfg.get("crop_size")) or image_size
    resize = _size_value(cfg.get("size")) or crop
    return {"mean": mean, "std": std, "resize": resize, "crop": crop, "source": str(path) if path.is_file() else "openai-defaults"}


def clip_preprocess(images: Tensor, crop: int, mean: tuple[float, ...], std: tuple[float, ...], resize: int | None = None) -> Tensor:
    """Renders [B, 3, H, W] in [0, 1] -> CLIP input [B, 3, crop, crop].

    1. resize so the shortest side is ``resize`` (default ``crop``), the other side
       ``int(resize * long / short)`` as OpenAI's and transformers' preprocessing do; bicubic
       with antialiasing, clamped to [0, 1] (bicubic overshoots; PIL clamps on uint8 too);
    2. centre crop ``crop`` x ``crop`` (offsets ``round((size - crop) / 2)``);
    3. ``(x - mean) / std`` per channel.
    """
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"CLIP preprocessing expects RGB images [B, 3, H, W], got {tuple(images.shape)}")
    x = images.float()
    H, W = x.shape[-2:]
    short_target = int(resize or crop)
    if min(H, W) != short_target:
        if H <= W:
            nh, nw = short_target, int(short_target * W / H)
        else:
            nh, nw = int(short_target * H / W), short_target
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    H, W = x.shape[-2:]
    if H < crop or W < crop:
        raise ValueError(f"image {H}x{W} is smaller than the CLIP crop {crop}")
    top, left = int(round((H - crop) / 2.0)), int(round((W - crop) / 2.0))
    x = x[..., top : top + crop, left : left + crop]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


@dataclass
class ClipBackbone:
    """One CLIP model loaded from a local folder, with our preprocessing."""

    key: str
    folder: Path
    model: Any  # transformers.CLIPModel
    tokenizer: Any  # transformers.CLIPTokenizer
    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device

    @property
    def display(self) -> str:
        return display_name(self.key)

    @staticmethod
    def load(key: str, folder: Path | str, device: str | torch.device = "cpu") -> "ClipBackbone":
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no per-tensor loading bars in evaluation logs
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"CLIP folder for {display_name(key)} not found: {folder}")
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        tok_dir = folder / "tokenizer" if (folder / "tokenizer" / "vocab.json").is_file() else folder
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        image_size = int(model.config.vision_config.image_size)
        prep = read_preprocessing(folder, image_size)
        if prep["crop"] != image_size:
            log.warning("%s: preprocessor crop %d differs from the model's image_size %d; using %d", folder, prep["crop"], image_size, image_size)
        return ClipBackbone(key, folder, model, tokenizer, image_size, max(prep["resize"], image_size), prep["mean"], prep["std"], torch.device(device))

    def preprocess(self, images: Tensor) -> Tensor:
        return clip_preprocess(images, self.crop, self.mean, self.std, self.resize)

    @torch.no_grad()
    def image_features(self, images: Tensor, batch: int = 16) -> Tensor:
        """L2-normalised image embeddings [B, D] of renders [B, 3, H, W] in [0, 1]."""
        feats = []
        for s in range(0, images.shape[0], batch):
            px = self.preprocess(images[s : s + batch].to(self.device))
            out = self.model.vision_model(pixel_values=px)
            feats.append(self.model.visual_projection(out.pooler_output))
        return F.normalize(torch.cat(feats).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> Tensor:
        """L2-normalised text embeddings [T, D]."""
        max_len = min(int(self.tokenizer.model_max_length), int(self.model.config.text_config.max_position_embeddings))
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out = self.model.text_model(input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device))
        return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)

    def text_image_scores(self, images: Tensor, caption: str) -> Tensor:
        """Cosine similarity of each render with the caption: [B]."""
        return (self.image_features(images) @ self.text_features([caption])[0]).cpu()

    def image_image_scores(self, reference: Tensor, images: Tensor) -> Tensor:
        """Cosine similarity of each render with the reference image: [B]."""
        ref = self.image_features(reference if reference.dim() == 4 else reference[None])[0]
        return (self.image_features(images) @ ref).cpu()


def unavailable_reason(key: str) -> str:
    return f"no local weights for {display_name(key)}: set evaluate.clip_models.{key}=/path/to/a/transformers/CLIP/folder"


def clip_metrics(
    renders: Tensor,  # [B, 3, H, W] in [0, 1]
    reference: Tensor,  # [3, H', W'] in [0, 1]
    caption: str,
    clip_models: dict[str, str | None],
    device: str | torch.device = "cpu",
    labels: list[str] | None = None,
) -> tuple[dict[str, float | None], dict[str, str], dict[str, Any]]:
    """CLIP score and CLIP identity per backbone -> (metrics, reasons for nulls, details).

    Metric keys: ``clip_score_<key>`` (render vs caption) and ``clip_identity_<key>`` (render vs
    reference), each the mean over all renders; details hold per-render values (``labels``).
    """
    metrics: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    details: dict[str, Any] = {}
    for key, folder in clip_models.items():
        ks, ki = f"clip_score_{key}", f"clip_identity_{key}"
        if not folder:
            reason = unavailable_reason(key)
        else:
            try:
                backbone = ClipBackbone.load(key, folder, device)
                reason = ""
            except Exception as exc:  # a broken folder must not sink the other metrics
                reason = f"could not load {display_name(key)} from {folder}: {exc}"
        if reason:
            metrics[ks] = metrics[ki] = None
            reasons[ks] = reasons[ki] = reason
            continue
        text = backbone.text_image_scores(renders, caption)
        ident = backbone.image_image_scores(reference, renders)
        metrics[ks] = float(text.mean())
        metrics[ki] = float(ident.mean())
        details[key] = {
            "backbone": backbone.display,
            "folder": str(folder),
            "caption": caption,
            "input_size": backbone.crop,
            "normalisation": {"mean": list(backbone.mean), "std": list(backbone.std)},
            "per_render_text": {lab: round(float(v), 6) for lab, v in zip(labels or range(len(text)), text)},
            "per_render_identity": {lab: round(float(v), 6) for lab, v in zip(labels or range(len(ident)), ident)},
        }
        del backbone
    return metrics, reasons, details


__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PAPER_BACKBONES",
    "display_name",
    "read_preprocessing",
    "clip_preprocess",
    "ClipBackbone",
    "clip_metrics",
    "unavailable_reason",
]
