"""Completing the head's texture where the photo never looked.

Why: one photo sees the face and the front of the hair. The embedded generator needs an answer
for the back and sides of the head, the far cheek, the nape and the clothes, and it must be the
same answer in every view and every round (see :mod:`.atlas`). Peers fill such regions from
learned priors we cannot download; this module does it the way graphics did before priors:

1. **The photo** (:func:`.atlas.sample_photo`): colour and confidence per texel.
2. **Symmetry**: the face and head are roughly mirror-symmetric about the canonical x = 0 plane,
   which is a column flip of the atlas. Where the photo is blind or foreshortened but saw the
   mirrored texel, the mirrored colour fills in, weighted by the mirror's confidence (a turned
   photo gets a plausible far side). Only texels of the same part are mirrored onto each other.
3. **Synthesis** (:mod:`.synthesis`): what is still unknown is grown from exemplars of the same
   part: hair from the visible hair (following its orientation field, continued downwards from
   the crown at the back, as hair falls), face skin from visible skin, neck from the neck, clothes
   from the clothes, each with the colour statistics of its exemplar.

Every texel the photo saw with full confidence keeps the photo's colour exactly: completion only
ever fills the remainder (``rgb = c * observed + (1 - c) * completed``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.io import atomic_dir, read_json, write_json_atomic
from . import synthesis
from .atlas import AtlasLayout, layout_for_head, sample_photo


ATLAS_VERSION = "1"
#: Texel provenance codes in ``TextureAtlas.source``.
SOURCE_NONE, SOURCE_PHOTO, SOURCE_MIRROR, SOURCE_SYNTH = 0, 1, 2, 3
#: Part groups completed separately (each from its own exemplars).
GROUPS: dict[str, tuple[str, ...]] = {
    "hair": ("skull", "backdrop"),
    "face": ("face",),
    "neck": ("neck",),
    "torso": ("torso",),
}


@dataclass
class CompletionConfig:
    """How the atlas is completed (``head.completion.*``)."""

    enabled: bool = True
    atlas_height: int = 256  # rows (elevation); the atlas is twice as wide
    mirror_weight: float = 0.9  # trust in the mirrored half where the photo is blind
    known_confidence: float = 0.6  # texels at least this confident are exemplars, the rest is synthesised
    hair_colour_distance: float = 0.18  # hair exemplars: within this RGB distance of the crown's median colour
    patch: int = 12  # synthesis patch size (texels)
    seed: int = 0


@dataclass
class TextureAtlas:
    """The completed head texture (see :mod:`.atlas` for the layout)."""

    layout: AtlasLayout
    rgb: np.ndarray  # [H, W, 3] float32 in [0, 1]
    confidence: np.ndarray  # [H, W] float32: how much of each texel the photo itself saw
    source: np.ndarray  # [H, W] uint8: SOURCE_* of each texel
    info: dict

    def rgb_tensor(self) -> torch.Tensor:
        """[3, H, W] float32 for lookups."""
        return torch.from_numpy(np.ascontiguousarray(self.rgb)).permute(2, 0, 1).float()

    def save(self, folder: Path) -> None:
        from PIL import Image

        with atomic_dir(Path(folder)) as tmp:
            Image.fromarray((self.rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp / "atlas.png")
            Image.fromarray((self.confidence.clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp / "confidence.png")
            Image.fromarray(self.source.astype(np.uint8)).save(tmp / "source.png")
            write_json_atomic(tmp / "atlas.json", {"version": ATLAS_VERSION, "layout": self.layout.to_dict(), "info": self.info})

    @staticmethod
    def load(folder: Path) -> "TextureAtlas":
        from PIL import Image

        folder = Path(folder)
        meta = read_json(folder / "atlas.json")
        if meta.get("version") != ATLAS_VERSION:
            raise ValueError(f"{folder}: texture atlas version {meta.get('version')} is not supported (this code reads {ATLAS_VERSION}); re-run fit_head")
        rgb = np.asarray(Image.open(folder / "atlas.png").convert("RGB"), dtype=np.float32) / 255.0
        conf = np.asarray(Image.open(folder / "confidence.png"), dtype=np.float32) / 255.0
        source = np.asarray(Image.open(folder / "source.png"), dtype=np.uint8)
        return TextureAtlas(AtlasLayout.from_dict(meta["layout"]), rgb, conf, source, meta.get("info", {}))

    def preview(self) -> np.ndarray:
        """uint8 [2H, W, 3]: the atlas above its provenance (photo white, mirror blue, synthesis red)."""
        colours = np.array([[0, 0, 0], [235, 235, 235], [70, 110, 230], [220, 70, 60]], dtype=np.uint8)
        top = (self.rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8)
        return np.concatenate([top, colours[np.clip(self.source, 0, 3)]], 0)


def _texel_groups(head, face_ids: torch.Tensor) -> dict[str, np.ndarray]:
    """[H, W] bool per completion group."""
    from ..head.facemesh_rig import PART_NAMES

    labels = getattr(head, "face_labels", None)
    valid = (face_ids >= 0).numpy()
    if labels is None:
        return {"face": valid}
    texel_label = labels[face_ids.clamp_min(0)].numpy()
    out = {}
    for group, parts in GROUPS.items():
        sel = np.zeros_like(valid)
        for p in parts:
            if p in PART_NAMES:
                sel |= texel_label == PART_NAMES.index(p)
        out[group] = sel & valid
    return out


def _mirror(rgb: np.ndarray, conf: np.ndarray, groups: dict[str, np.ndarray], weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, total confidence) after filling from the mirrored half (a column flip of the atlas)."""
    rgb_m, conf_m = rgb[:, ::-1], conf[:, ::-1]
    same = np.zeros_like(conf, dtype=bool)
    for sel in groups.values():
        same |= sel & sel[:, ::-1]
    w = weight * conf_m * same  # how much the mirror is trusted per texel
    total = conf + (1 - conf) * w
    blended = (conf[..., None] * rgb + ((1 - conf) * w)[..., None] * rgb_m) / np.maximum(total, 1e-6)[..., None]
    return np.where(total[..., None] > 0, blended, rgb).astype(np.float32), total.astype(np.float32)


def _hair_exemplars(rgb: np.ndarray, known: np.ndarray, layout: AtlasLayout, max_distance: float) -> np.ndarray:
    """Known hair texels that look like the crown's hair (not ears, skin or background)."""
    rows = np.arange(layout.height)
    elevation = 90.0 - (rows + 0.5) / layout.height * 180.0
    crown = known & (elevation[:, None] > 35.0)
    if crown.sum() < 16:
        crown = known
    if crown.sum() < 16:
        return known
    median = np.median(rgb[crown], axis=0)
    close = np.linalg.norm(rgb - median, axis=-1) < max_distance
    return known & close


def complete_head_texture(
    head,
    photo: torch.Tensor,  # [3, S, S] in [0, 1]
    camera,  # Cameras: the reference view
    mask: torch.Tensor | None,  # [S, S]
    expression: torch.Tensor,  # [E]
    config: CompletionConfig | None = None,
) -> TextureAtlas:
    """The head's completed texture atlas (see module docstring)."""
    cfg = config or CompletionConfig()
    layout = layout_for_head(head, cfg.atlas_height)
    sample = sample_photo(head, layout, photo, camera, mask, expression)
    groups = _texel_groups(head, sample.surface.face_ids)
    rgb_obs, total = _mirror(sample.rgb, sample.confidence, groups, cfg.mirror_weight)
    surface = sample.surface.mask.numpy()
    completed = rgb_obs.copy()
    unfilled = np.zeros_like(surface)  # texels of parts the photo never saw at all
    info: dict = {"groups": {}}
    for index, (group, sel) in enumerate(groups.items()):
        if not sel.any():
            continue
        known = sel & (total >= cfg.known_confidence)
        fill = sel & ~known
        if not known.any():  # nothing of this part was seen: its neighbours' colours flow in below
            info["groups"][group] = {"texels": int(sel.sum()), "known": 0, "exemplars": 0, "synthesised": 0}
            unfilled |= fill
            continue
        exemplar = _hair_exemplars(rgb_obs, known, layout, cfg.hair_colour_distance) if group == "hair" else known
        angle = None
        if group == "hair" and exemplar.any():
            angle, _ = synthesis.orientation_field(rgb_obs, exemplar, prior_angle=np.pi / 2, wrap_x=True)
        fallback = None
        if fill.any():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", synthesis.SynthesisFallbackWarning)
                out = synthesis.synthesize(
                    rgb_obs, known, fill, angle, patch=cfg.patch, seed=cfg.seed + index, wrap_x=True, exemplar=exemplar
                )
            completed[fill] = out[fill]
            # Too few exemplars (a part the photo barely shows): a smooth fill, said in fit.json.
            fallback = next((str(w.message) for w in caught if issubclass(w.category, synthesis.SynthesisFallbackWarning)), None)
        info["groups"][group] = {
            "texels": int(sel.sum()),
            "known": int(known.sum()),
            "exemplars": int(exemplar.sum()),
            "synthesised": int(fill.sum()),
            "fallback": fallback,
        }
    # Blend: texels the photo (or its mirror) saw keep that colour in proportion to the confidence.
    c = np.where(surface, total, 0.0)[..., None]
    rgb = (c * rgb_obs + (1 - c) * completed).astype(np.float32)
    # Directions without a surface get their neighbours' colours (bilinear lookups near edges).
    settled = surface & ~unfilled
    if (~settled).any() and settled.any():
        rgb = synthesis.fill_low_frequency(rgb, settled, wrap_x=True).astype(np.float32)
    source = np.full(surface.shape, SOURCE_NONE, dtype=np.uint8)
    source[surface & (total < cfg.known_confidence)] = SOURCE_SYNTH
    source[surface & (total >= cfg.known_confidence)] = SOURCE_MIRROR
    source[surface & (sample.confidence >= cfg.known_confidence)] = SOURCE_PHOTO
    info["fraction"] = {
        "photo": float((source == SOURCE_PHOTO).sum() / max(1, surface.sum())),
        "mirror": float((source == SOURCE_MIRROR).sum() / max(1, surface.sum())),
        "synthesised": float((source == SOURCE_SYNTH).sum() / max(1, surface.sum())),
    }
    return TextureAtlas(layout, rgb, sample.confidence, source, info)
