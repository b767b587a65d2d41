"""Reading a run folder: the portrait and its fit, and every node's manifest; and which folder
a photo's run goes to.

Shared by the DAG's nodes (:mod:`zero1toa.nodes`) and by the libraries they call (evaluation,
reports), so those libraries need not import the node layer.

**One folder per photo.** ``zero1toa run my_photo.jpg`` runs in ``<root>/my_photo/`` (the
photo's file stem, :func:`run_name_for`), so a second photo never lands on the first one's
results and a re-run of the same photo finds its own folder and cache. A folder knows its photo
by content: ``input.json`` (written before the flow starts) or, for folders made before it
existed, the image digest in ``preprocess/manifest.json``. When ``<root>/<stem>/`` already holds
a *different* photo, the run goes to ``<root>/<stem>-<first 8 hex digits of the photo's
sha256>/`` instead (:func:`folder_for_photo`) and says so: two photos are never mixed in one
folder, and the same photo always gets the same name back.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .utils.io import read_json

#: The record of which photo a run folder belongs to.
INPUT_RECORD = "input.json"
#: Hex digits of the photo's sha256 appended to a stem whose folder holds another photo.
DIGEST_SUFFIX_LEN = 8


def run_name_for(image: Path | str) -> str:
    """A run name from the file name: letters, digits, ``-`` and ``_`` only (a safe folder name)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(image).stem).strip("_") or "portrait"


def recorded_input_digest(run_dir: Path) -> str | None:
    """The sha256 of the photo ``run_dir`` was made from, or None when it records none."""
    run_dir = Path(run_dir)
    for path, pick in ((run_dir / INPUT_RECORD, lambda d: d.get("sha256")), (run_dir / "preprocess" / "manifest.json", lambda d: d.get("inputs", {}).get("image"))):
        if path.is_file():
            try:
                digest = pick(read_json(path))
            except (ValueError, AttributeError):
                continue
            if isinstance(digest, str) and digest:
                return digest
    return None


def record_input(run_dir: Path, image: Path, digest: str) -> Path:
    """Write ``input.json`` (atomically): the photo's path and sha256, claiming the folder for it."""
    from .utils.io import write_json_atomic

    path = Path(run_dir) / INPUT_RECORD
    write_json_atomic(path, {"image": str(image), "sha256": digest})
    return path


def folder_for_photo(root: Path, name: str, digest: str) -> tuple[str, str | None]:
    """The run name for a photo with sha256 ``digest`` whose preferred name is ``name``.

    ``name`` itself when ``<root>/<name>`` is new, empty of records, or holds this photo; else
    ``<name>-<digest[:8]>`` (same rule for that folder). Returns (name, note): the note says why
    the name changed (None when it did not). Raises ValueError if both folders hold other photos.
    """
    candidates = [name, f"{name}-{digest[:DIGEST_SUFFIX_LEN]}"]
    for i, candidate in enumerate(candidates):
        held = recorded_input_digest(Path(root) / candidate)
        if held is None or held == digest:
            note = None if i == 0 else f"{Path(root) / name} holds another photo (sha256 {recorded_input_digest(Path(root) / name)[:12]}...); this one runs in {Path(root) / candidate}"
            return candidate, note
    raise ValueError(
        f"{Path(root) / candidates[0]} and {Path(root) / candidates[1]} both hold other photos than this one (sha256 {digest[:12]}...): "
        "choose a folder with run.name=NAME"
    )


def load_reference(run_dir: Path):
    """The portrait and its fit as rounds and evaluation need them."""
    from .preprocess.head_fit import load_fitted_head
    from .preprocess.pipeline import load_preprocess
    from .progressive.schedules import orbit_target
    from .symgen.round import Reference

    run_dir = Path(run_dir)
    pre = load_preprocess(run_dir / "preprocess")
    fitted = load_fitted_head(run_dir / "head")
    ref = Reference(
        image=torch.from_numpy(pre.reference.copy()).permute(2, 0, 1).float() / 255.0,
        mask=torch.from_numpy(pre.mask.copy()),
        camera=fitted.camera,
        expression=fitted.expression,
        jaw=fitted.jaw,
        target=orbit_target(fitted.head),
        completion=fitted.completion,
    )
    return fitted.head, ref


def read_run_manifests(run_dir: Path) -> dict[str, dict]:
    """Every node manifest of a run, keyed by node name (for lineage and reports)."""
    run_dir = Path(run_dir)
    found = {}
    for man in sorted(run_dir.rglob("manifest.json")):
        if "objects" in man.parts or man.parent.name == "dataset" or ".work" in man.parts:
            continue
        try:
            data = read_json(man)
        except ValueError:
            continue
        if "node" in data:
            found[data["node"]] = {**data, "folder": str(man.parent.relative_to(run_dir))}
    return found
