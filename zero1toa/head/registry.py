"""Rebuild a saved head from its folder, whatever kind it is.

Every head folder holds a ``head.json`` whose ``"kind"`` says which class wrote it; downstream
steps (binding Gaussians, rendering, schedules) call :func:`load_head` and never need to know
whether the run used FLAME or the built-in face-mesh rig. Head classes are imported inside
their branch so loading one kind never imports (or requires the files of) another.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import HeadModel

#: kinds a head.json may name, and the class that reads them (for error messages)
KNOWN_KINDS: dict[str, str] = {
    "flame": "zero1toa.head.flame.FlameHead",
    "facemesh-rig": "zero1toa.head.facemesh_rig.FaceMeshRig",
}


class UnknownHeadKindError(ValueError):
    """head.json names a kind no loader here understands."""


def read_head_kind(folder: Path) -> str:
    """The ``kind`` recorded in ``folder/head.json`` (clear errors for missing/broken files)."""
    folder = Path(folder)
    meta_path = folder / "head.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"head folder {folder} does not exist (it is written by HeadModel.save)")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {folder} is not a head folder written by HeadModel.save")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ValueError(f"{meta_path} has no 'kind' entry; known kinds: {', '.join(KNOWN_KINDS)}")
    return str(meta["kind"])


def load_head(folder: Path) -> HeadModel:
    """Load the head saved in ``folder``, dispatching on head.json's ``kind``."""
    folder = Path(folder)
    kind = read_head_kind(folder)
    if kind == "flame":
        from .flame import FlameHead

        return FlameHead.load(folder)
    if kind == "facemesh-rig":
        from .facemesh_rig import FaceMeshRig

        return FaceMeshRig.load(folder)
    raise UnknownHeadKindError(
        f"{folder / 'head.json'} names head kind {kind!r}; known kinds: {', '.join(KNOWN_KINDS)}"
    )
