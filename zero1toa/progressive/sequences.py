"""Expression/pose sequences from files: the "real expression sequences" of temporal learning
and the driving files of ``zero1toa animate``.

Formats (one row per frame):

- **CSV** with a header. Expression columns are either the head's expression names (the
  built-in rig: ``jaw_open, smile, frown, lip_pucker, lip_stretch, blink_left, blink_right,
  brow_raise, brow_frown``) or ``expr_0 .. expr_{E-1}`` (any head, e.g. FLAME's PCA space).
  Missing expression columns are 0. Optional pose columns, axis-angle radians:
  ``rotation_x/y/z`` (global), ``neck_x/y/z``, ``jaw_x/y/z``, ``eye_left_x/y/z``,
  ``eye_right_x/y/z``, and ``translation_x/y/z`` in metres.
- **ARKit / Live Link Face CSV** (52 ARKit blendshape columns such as ``EyeBlinkLeft`` or
  ``jawOpen``, optional ``Timecode``, ``HeadYaw`` ...), recognised by its columns and mapped onto
  the head by :mod:`zero1toa.animate.arkit`.
- **NPZ** with arrays ``expression [T, E]`` and optionally ``rotation``, ``neck``, ``jaw``
  ``[T, 3]``, ``eyes [T, 6]``, ``translation [T, 3]``. Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..head.base import HeadModel, HeadPose

POSE_GROUPS = {
    "rotation": ("rotation_x", "rotation_y", "rotation_z"),
    "neck": ("neck_x", "neck_y", "neck_z"),
    "jaw": ("jaw_x", "jaw_y", "jaw_z"),
    "eyes": ("eye_left_x", "eye_left_y", "eye_left_z", "eye_right_x", "eye_right_y", "eye_right_z"),
    "translation": ("translation_x", "translation_y", "translation_z"),
}


@dataclass
class ExpressionSequence:
    expressions: np.ndarray  # [T, E]
    jaws: np.ndarray  # [T, 3]
    pose: HeadPose  # T frames (jaw included)

    def __len__(self) -> int:
        return len(self.expressions)


def load_expression_sequence(path: Path, head: HeadModel) -> ExpressionSequence:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expression sequence {path} does not exist")
    E = head.expression_dim
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "expression" not in data:
                raise ValueError(f"{path}: an NPZ sequence needs an 'expression' array [T, {E}]")
            expr = np.asarray(data["expression"], dtype=np.float32)
            T = len(expr)
            groups = {k: np.asarray(data[k], dtype=np.float32) if k in data else None for k in POSE_GROUPS}
    elif suffix == ".csv":
        import pandas as pd

        if is_arkit_csv(path):
            from ..animate.arkit import load_arkit_sequence

            return load_arkit_sequence(path, head)[0]
        df = pd.read_csv(path)
        T = len(df)
        names = head.expression_names or []
        expr = np.zeros((T, E), dtype=np.float32)
        known = set()
        for i in range(E):
            for col in ([names[i]] if i < len(names) else []) + [f"expr_{i}"]:
                if col in df.columns:
                    expr[:, i] = df[col].to_numpy(np.float32)
                    known.add(col)
        groups = {}
        for key, cols in POSE_GROUPS.items():
            present = [c for c in cols if c in df.columns]
            known.update(present)
            groups[key] = df[list(cols)].to_numpy(np.float32) if len(present) == len(cols) else None
            if present and len(present) != len(cols):
                raise ValueError(f"{path}: pose group {key} needs all of {cols}, found {present}")
        unknown = [c for c in df.columns if c not in known and c not in ("frame", "time")]
        if unknown:
            raise ValueError(f"{path}: unknown columns {unknown}; expression columns are {names or ['expr_0', '...']}, pose columns {sum(POSE_GROUPS.values(), ())}")
    else:
        raise ValueError(f"{path}: expression sequences are .csv or .npz files")
    if expr.ndim != 2 or expr.shape[1] > E:
        raise ValueError(f"{path}: expression has shape {expr.shape}; this head has {E} expression coefficients")
    if expr.shape[1] < E:
        expr = np.pad(expr, ((0, 0), (0, E - expr.shape[1])))
    if T == 0:
        raise ValueError(f"{path} holds no frames")
    pose = HeadPose.neutral(T)
    for key, arr in groups.items():
        if arr is not None:
            if arr.shape != (T, len(POSE_GROUPS[key])):
                raise ValueError(f"{path}: {key} has shape {arr.shape}, expected ({T}, {len(POSE_GROUPS[key])})")
            setattr(pose, key, torch.from_numpy(arr))
    return ExpressionSequence(expr, pose.jaw.numpy().copy(), pose)


def csv_header(path: Path) -> list[str]:
    """The first non-empty row of a CSV file (its column names)."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if any(cell.strip() for cell in row):
                return [c.strip() for c in row]
    return []


def is_arkit_csv(path: Path) -> bool:
    """Whether a CSV is an ARKit capture (its columns name ARKit blendshapes or Live Link Face
    rotations) rather than this module's own format: more ARKit columns than own ones. A column
    spelled exactly as this format's (``jaw_open``) counts as this format's, never ARKit's."""
    from ..animate.arkit import canonical_name, is_arkit_header

    header = csv_header(Path(path))
    if not is_arkit_header(header):
        return False
    own = set(sum(POSE_GROUPS.values(), ())) | {"frame", "time"}
    from ..head.rig_expressions import EXPRESSION_NAMES

    own |= set(EXPRESSION_NAMES)
    n_own = sum(1 for c in header if c in own or c.startswith("expr_"))
    n_arkit = sum(1 for c in header if c not in own and canonical_name(c) not in (None, "frame", "time"))
    return n_arkit > n_own


def save_expression_sequence(path: Path, expressions: np.ndarray, pose: HeadPose | None = None, names: list[str] | None = None) -> Path:
    """Write a CSV in the format above (the tracker's output, and a template for users)."""
    import pandas as pd

    from ..utils.io import atomic_path

    T, E = expressions.shape
    cols = names if names and len(names) == E else [f"expr_{i}" for i in range(E)]
    df = pd.DataFrame(expressions, columns=cols)
    if pose is not None:
        for key, group in POSE_GROUPS.items():
            vals = getattr(pose, key).detach().cpu().numpy()
            for j, c in enumerate(group):
                df[c] = vals[:, j]
    df.insert(0, "frame", np.arange(T))
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    return path
