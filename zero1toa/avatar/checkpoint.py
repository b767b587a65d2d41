"""Avatar artifacts and resumable training checkpoints.

Two different things, on purpose:

- an **avatar folder** is the product of a round: the bound Gaussians (safetensors), the head
  they bind to (a copy of the head folder, so the avatar is self-contained), and a small JSON
  record. ``animate``, ``export`` and evaluation read it.
- a **training checkpoint** is what a killed round resumes from: the Gaussians *plus* optimizer
  state, densification state, step, RNG states, the round and the dataset version it trains on.
  It is one ``torch.save`` file read back with ``weights_only=True`` (no code execution).

Both are written atomically; a corrupt or foreign file gets an error naming it.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..head.base import HeadModel
from ..head.registry import load_head
from ..utils.io import atomic_dir, atomic_path, read_json, write_json_atomic
from .gaussians import BoundGaussians

AVATAR_FORMAT = "zero1toa-avatar/1"
TRAIN_STATE_FORMAT = "zero1toa-train-state/1"


class CheckpointError(ValueError):
    """A checkpoint or avatar folder that cannot be used (missing, corrupt, foreign)."""


def save_avatar(folder: Path, gaussians: BoundGaussians, head: HeadModel, record: dict | None = None) -> Path:
    """Write an avatar folder: gaussians.safetensors, head/, avatar.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in gaussians.params.items()}
        save_file(tensors, str(tmp / "gaussians.safetensors"))
        head.save(tmp / "head")
        write_json_atomic(
            tmp / "avatar.json",
            {
                "format": AVATAR_FORMAT,
                "sh_degree": gaussians.sh_degree,
                "num_gaussians": gaussians.num_gaussians,
                "head": {"kind": head.name, "version": head.version, "licence": head.licence},
                **(record or {}),
            },
        )
    return folder


def load_avatar(folder: Path) -> tuple[BoundGaussians, HeadModel, dict]:
    """Read an avatar folder written by :func:`save_avatar`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    info_path = folder / "avatar.json"
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not an avatar folder (expected a folder with avatar.json, gaussians.safetensors, head/)")
    if not info_path.exists():
        raise CheckpointError(f"{folder} has no avatar.json: not a zero1toa avatar folder")
    try:
        info = read_json(info_path)
    except ValueError as exc:
        raise CheckpointError(f"{info_path} is not valid JSON: {exc}") from exc
    if info.get("format") != AVATAR_FORMAT:
        raise CheckpointError(f"{info_path}: format {info.get('format')!r} is not {AVATAR_FORMAT!r}")
    try:
        tensors = load_file(str(folder / "gaussians.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder / 'gaussians.safetensors'} cannot be read: {exc}") from exc
    try:
        gaussians = BoundGaussians(tensors, info["sh_degree"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: {exc}") from exc
    head = load_head(folder / "head")
    if int(gaussians.binding.max()) >= head.faces.shape[0]:
        raise CheckpointError(f"{folder}: Gaussians bind to triangle {int(gaussians.binding.max())}, the head has {head.faces.shape[0]}")
    return gaussians, head, info


@dataclass
class TrainState:
    """Everything a round needs to continue exactly where it stopped."""

    step: int
    params: dict[str, torch.Tensor]
    optimizers: dict[str, dict]  # optimizer.state_dict() per parameter group name
    strategy_state: dict[str, Any]
    sh_degree: int
    round_name: str
    dataset_version: str
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "python" in state:
        p = state["python"]
        random.setstate((p[1], tuple(p[0]), p[2]))


def save_train_state(path: Path, state: TrainState) -> None:
    payload = {
        "format": TRAIN_STATE_FORMAT,
        "step": state.step,
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
        "optimizers": state.optimizers,
        "strategy_state": {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.strategy_state.items()},
        "sh_degree": state.sh_degree,
        "round_name": state.round_name,
        "dataset_version": state.dataset_version,
        "rng": state.rng,
        "extra": state.extra,
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_train_state(path: Path) -> TrainState:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise CheckpointError(f"{path} is not a readable zero1toa training checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a zero1toa training checkpoint (format {TRAIN_STATE_FORMAT})")
    return TrainState(
        step=int(payload["step"]),
        params=payload["params"],
        optimizers=payload["optimizers"],
        strategy_state=payload["strategy_state"],
        sh_degree=int(payload["sh_degree"]),
        round_name=payload["round_name"],
        dataset_version=payload["dataset_version"],
        rng=payload.get("rng", {}),
        extra=payload.get("extra", {}),
    )


def copy_avatar(src: Path, dst: Path) -> None:
    with atomic_dir(Path(dst)) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
