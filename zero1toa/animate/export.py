"""``zero1toa export``: standard 3DGS ``.ply`` of the avatar, neutral, posed, or as a sequence.

A ``.ply`` is one posed frame of the avatar in world (= head) space, in the layout every 3DGS
viewer reads (:mod:`zero1toa.avatar.ply`); it is an export, not a checkpoint (no binding to the
head). What to pose:

- ``expression=None`` or ``"neutral"``: the head's neutral expression and pose;
- ``"NAME"`` or ``"NAME:MAGNITUDE"``: a named expression of the head
  (:meth:`HeadModel.expression_preset`: neutral, jaw_open, smile, frown, pucker, blink,
  surprise, and for the built-in rig each coefficient by name, e.g. ``blink_left:0.5``);
- ``"NAME=VALUE,NAME=VALUE"``: coefficients by name (``expr_<i>`` for heads without names);
- a ``.csv`` / ``.npz`` expression file (:mod:`zero1toa.progressive.sequences`) and a ``frame``
  index: that frame's expression *and* pose.

A **sequence** (any animate SOURCE: preset, expression file or driving video) becomes a folder
of numbered frames ``frame_00000.ply ...`` plus ``index.json`` (format
``zero1toa-ply-sequence/1``: fps, source, per-frame file, expression and 18-value pose in the
order of :meth:`HeadPose.as_vector`) and ``sequence.csv`` (the same expressions/poses in the
CSV drive format, so the sequence can be re-rendered or re-exported). The folder appears
atomically.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..head.base import HeadModel, HeadPose

SEQUENCE_FORMAT = "zero1toa-ply-sequence/1"
#: Where exports go without --out: ``<run>/exports/`` (not ``<run>/export/``, the DAG's export
#: node folder, which is replaced whole when that node re-runs).
EXPORTS_FOLDER = "exports"


def default_export_dir(checkpoint: Path) -> Path:
    """``<run>/exports`` for a checkpoint inside a run folder, else ``<avatar folder>/exports``."""
    from .animate import resolve_checkpoint

    resolved = resolve_checkpoint(Path(checkpoint))
    base = resolved.run_dir if resolved.run_dir is not None else resolved.avatar_dir
    return Path(base) / EXPORTS_FOLDER


@dataclass
class PosedFrame:
    expression: Tensor  # [1, E]
    pose: HeadPose  # 1 frame
    label: str  # file-name friendly description


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "frame"


def parse_expression(spec: str | Path | None, head: HeadModel, frame: int = 0) -> PosedFrame:
    """An ``--expression`` value (see the module docstring) -> one posed frame."""
    E = head.expression_dim
    if spec is None or str(spec) in ("", "neutral"):
        return PosedFrame(torch.zeros(1, E), HeadPose.neutral(1), "neutral")
    text = str(spec)
    suffix = Path(text).suffix.lower()
    if suffix in (".csv", ".npz"):
        from ..progressive.sequences import load_expression_sequence

        seq = load_expression_sequence(Path(text), head)
        if not 0 <= frame < len(seq):
            raise ValueError(f"--frame {frame} is outside {text}'s {len(seq)} frames (0..{len(seq) - 1})")
        return PosedFrame(torch.from_numpy(seq.expressions[frame : frame + 1]).float(), seq.pose[frame], f"{Path(text).stem}_{frame:05d}")
    if "=" in text:
        names = head.expression_names or []
        expr = torch.zeros(1, E)
        for item in text.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key in names:
                idx = names.index(key)
            elif re.fullmatch(r"expr_\d+", key) and int(key[5:]) < E:
                idx = int(key[5:])
            else:
                known = ", ".join(names) if names else f"expr_0 .. expr_{E - 1}"
                raise ValueError(f"unknown expression coefficient {key!r} in {text!r}; this head has {known}")
            try:
                expr[0, idx] = float(value)
            except ValueError as exc:
                raise ValueError(f"{item!r}: {value!r} is not a number") from exc
        return PosedFrame(expr, HeadPose.neutral(1), _slug(text.replace("=", "").replace(",", "_")))
    name, _, magnitude = text.partition(":")
    try:
        mag = float(magnitude) if magnitude else 1.0
    except ValueError as exc:
        raise ValueError(f"--expression {text!r}: magnitude {magnitude!r} is not a number") from exc
    expr, jaw = head.expression_preset(name, mag)  # raises KeyError naming the known presets
    pose = HeadPose.neutral(1)
    pose.jaw = jaw.reshape(1, 3).float()
    return PosedFrame(expr.reshape(1, E).float(), pose, _slug(text.replace(":", "_")))


def _posed_world(gaussians, head: HeadModel, expressions: Tensor, pose: HeadPose, chunk: int = 16):
    """World Gaussians of each frame, animated ``chunk`` frames at a time (bounded memory)."""
    for s in range(0, expressions.shape[0], chunk):
        sl = slice(s, s + chunk)
        yield from gaussians.posed(head, expressions[sl], pose[sl])


def export_frame(checkpoint: Path, out: Path | None, expression: str | Path | None = None, frame: int = 0) -> dict:
    """One posed frame -> ``out`` (a .ply path, or a folder that receives ``avatar_<label>.ply``;
    None: :func:`default_export_dir`)."""
    from ..avatar.checkpoint import load_avatar
    from ..avatar.ply import export_ply
    from .animate import resolve_checkpoint

    t0 = time.perf_counter()
    resolved = resolve_checkpoint(Path(checkpoint))
    gaussians, head, _ = load_avatar(resolved.avatar_dir)
    posed = parse_expression(expression, head, frame)
    out = default_export_dir(checkpoint) if out is None else Path(out)
    if out.suffix.lower() != ".ply":
        out = out / f"avatar_{posed.label}.ply"
    world = next(_posed_world(gaussians, head, posed.expression, posed.pose))
    export_ply(out, world)
    return {
        "ply": str(out),
        "label": posed.label,
        "avatar": str(resolved.avatar_dir),
        "num_gaussians": gaussians.num_gaussians,
        "sh_degree": gaussians.sh_degree,
        "expression": posed.expression[0].tolist(),
        "pose": posed.pose.as_vector()[0].tolist(),
        "licence": head.licence,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def export_sequence(
    checkpoint: Path,
    out_dir: Path | None,
    source: str | Path,
    frames: int | None = None,
    fps: float | None = None,
    tracker=None,
    progress: bool = False,
) -> dict:
    """An animation (any animate SOURCE) -> ``out_dir`` with numbered .ply frames + index.json
    (None: ``<exports>/<source name>_ply``, see :func:`default_export_dir`)."""
    from ..avatar.checkpoint import load_avatar
    from ..avatar.ply import export_ply
    from ..progressive.sequences import save_expression_sequence
    from ..utils.io import atomic_dir, write_json_atomic
    from .animate import resolve_checkpoint, resolve_drive

    t0 = time.perf_counter()
    resolved = resolve_checkpoint(Path(checkpoint))
    gaussians, head, _ = load_avatar(resolved.avatar_dir)
    drv = resolve_drive(source, head, frames, tracker, progress)
    seq = drv.sequence
    T = len(seq)
    if np.any(np.asarray(seq.yaws_deg) != 0):
        # a turntable moves the camera, not the head: every .ply frame would be identical
        raise ValueError(f"drive {source!r} moves the camera, not the avatar; a .ply sequence of it would repeat one frame")
    rate = float(fps) if fps else (drv.fps or 24.0)
    out_dir = default_export_dir(checkpoint) / f"{_slug(Path(str(source)).stem)}_ply" if out_dir is None else Path(out_dir)
    rows = []
    it = _posed_world(gaussians, head, seq.expressions, seq.pose)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=T, desc="export ply", unit="frame", leave=False, dynamic_ncols=True, mininterval=1.0)
    with atomic_dir(out_dir) as tmp:
        for i, world in enumerate(it):
            name = f"frame_{i:05d}.ply"
            export_ply(tmp / name, world)
            rows.append({"index": i, "file": name, "expression": seq.expressions[i].tolist(), "pose": seq.pose[i].as_vector()[0].tolist()})
        save_expression_sequence(tmp / "sequence.csv", seq.expressions.numpy(), seq.pose, head.expression_names)
        index = {
            "format": SEQUENCE_FORMAT,
            "avatar": str(resolved.avatar_dir),
            "source": drv.source,
            "kind": drv.kind,
            "fps": rate,
            "num_frames": T,
            "num_gaussians": gaussians.num_gaussians,
            "sh_degree": gaussians.sh_degree,
            "expression_names": head.expression_names,
            "pose_layout": "rotation(3) neck(3) jaw(3) eye_left(3) eye_right(3) translation(3); axis-angle radians, metres",
            "head": {"kind": head.name, "version": head.version},
            "licence": head.licence,
            "frames": rows,
        }
        write_json_atomic(tmp / "index.json", index)
    return {
        "folder": str(out_dir),
        "index": str(out_dir / "index.json"),
        "frames": T,
        "fps": rate,
        "kind": drv.kind,
        "num_gaussians": gaussians.num_gaussians,
        "tracking": drv.track.info if drv.track is not None else None,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def read_ply_sequence(folder: Path) -> tuple[dict, list[Path]]:
    """(index.json, the frame paths in order) of a folder written by :func:`export_sequence`."""
    from ..utils.io import read_json

    folder = Path(folder)
    index_path = folder / "index.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{folder} has no index.json: not a .ply sequence written by `zero1toa export --sequence`")
    index = read_json(index_path)
    if index.get("format") != SEQUENCE_FORMAT:
        raise ValueError(f"{index_path}: format {index.get('format')!r} is not {SEQUENCE_FORMAT!r}")
    paths = [folder / row["file"] for row in index["frames"]]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks frames listed in index.json: {missing[:5]}")
    return index, paths
