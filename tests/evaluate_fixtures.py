"""Builders shared by the evaluation and report tests: a tiny finished run and a tiny CLIP folder.

Both are cached per test session (keyed on pytest's base temp folder), so the ~10-40 s smoke
run is built once even though several test modules use it.
"""

from __future__ import annotations

import functools
from pathlib import Path

SMOKE_EVALUATE = {
    "resolution": 64,
    "fps_resolution": 128,
    "fps_repeats": 2,
    "fps_warmup": 1,
    "video_frames": 8,
    "expression_frames": 6,
    "stability_frames": 8,
    "clip_views_yaw_deg": [-30.0, 0.0, 30.0],
    "clip_expressions": ["neutral", "smile"],
    "sweep_yaw_deg": [-60.0, 0.0, 60.0],
}


def smoke_dict(root: Path, name: str = "smoke", evaluate: dict | None = None) -> dict:
    """A CI-sized configuration: 64 px, 1500 Gaussians, one ~10-iteration round per stage."""
    return {
        "run": {"name": name, "root": str(root), "seed": 0, "progress": False},
        "preprocess": {"resolution": 256},
        "generator": {"resolution": 64, "supersample": 1},
        "avatar": {"init": {"num_gaussians": 1500}},
        "stages": {
            "spatial": {"rounds": 1, "clips_per_round": 2, "frames_per_clip": 3},
            "temporal": {"rounds": 1, "clips_per_round": 2, "frames_per_clip": 3},
            "spatial_iterations": 10,
            "temporal_iterations": 10,
        },
        "symgen": {"refresh_every": 10},
        "train": {"checkpoint_every": 10, "log_every": 5, "densify": {"refine_start": 5, "refine_every": 5, "max_gaussians": 3000}},
        "evaluate": dict(evaluate or SMOKE_EVALUATE),
    }


def build_run(root: Path, name: str, config: dict) -> Path:
    """preprocess -> fit_head -> every round of ``config`` on the sample portrait (no evaluate)."""
    from zero1toa import nodes
    from zero1toa.config import from_dict
    from zero1toa.sample import write_sample_portrait

    root = Path(root)
    cfg = from_dict(config)
    run = root / name
    image = write_sample_portrait(root / f"{name}_portrait.png")
    nodes.node_preprocess(image, run, cfg)
    nodes.node_fit_head(run, cfg)
    for plan in nodes.plan_rounds(cfg):
        nodes.node_round(run, cfg, plan.name)
    return run


@functools.lru_cache(maxsize=4)
def build_smoke_run(root: Path, name: str = "smoke") -> Path:
    """preprocess -> fit_head -> spatial_1 -> temporal_1 on the sample portrait (no evaluate)."""
    return build_run(root, name, smoke_dict(Path(root), name))


@functools.lru_cache(maxsize=4)
def build_tiny_clip(folder: Path, mean: tuple | None = None, std: tuple | None = None) -> Path:
    """A random CLIPModel (text + vision, a few thousand parameters) + the tiny CLIP tokenizer,
    saved like a transformers checkpoint folder; optional preprocessor_config.json mean/std."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPModel

    from zero1toa.generate.tiny import tiny_clip_vocab, write_tiny_clip_tokenizer

    folder = Path(folder)
    vocab_size = write_tiny_clip_tokenizer(folder)
    vocab, _ = tiny_clip_vocab()
    eos = vocab["<|endoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(cfg).eval().save_pretrained(folder)
    if mean is not None:
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}, "image_mean": list(mean), "image_std": list(std)})
        )
    return folder
