"""``zero1toa view``: one HTML file that poses and splats the avatar in the browser.

Why self-contained: the page must open from disk on a machine with no network (no CDN, no side
files), so the template, the script and the avatar's animated package (:mod:`zero1toa.animate.package`,
base64) all travel in the one file.
"""

from __future__ import annotations

import base64
import html
import time
from importlib import resources
from pathlib import Path

#: Where ``zero1toa view RUN`` writes without --out (``zero1toa report`` links this path);
#: ``exports/`` is where every command-line export goes (see zero1toa.animate.export).
DEFAULT_VIEW_NAME = Path("exports") / "avatar.html"


def _asset(name: str) -> str:
    return resources.files("zero1toa.viewer").joinpath(name).read_text(encoding="utf-8")


def build_page(package: bytes, title: str = "zero1toa avatar", info: str = "") -> str:
    """The viewer page for package bytes (a .glb of :func:`zero1toa.animate.package.build_package`)."""
    page = _asset("viewer.html")
    # rotations.js: the rotation helpers both use; arkit.js: the ARKit capture reader viewer.js calls
    script = "\n".join(_asset(name) for name in ("rotations.js", "arkit.js", "viewer.js"))
    if "</script" in script.lower():
        raise ValueError("the viewer scripts must not contain a closing script tag")
    parts = {"__TITLE__": html.escape(title), "__INFO__": html.escape(info), "__PACKAGE__": base64.b64encode(package).decode("ascii")}
    for key, value in parts.items():
        page = page.replace(key, value, 1)
    return page.replace("__SCRIPT__", script, 1)


def default_view_path(run_dir: Path) -> Path:
    return Path(run_dir) / DEFAULT_VIEW_NAME


def write_view(checkpoint: Path, out: Path | None = None) -> dict:
    """CHECKPOINT (avatar, round or run folder) -> the viewer page at ``out`` (atomic write).

    ``out`` None: ``<run>/exports/avatar.html`` (an avatar outside a run folder:
    ``<avatar>/exports/avatar.html``).
    """
    from ..animate.animate import reference_view, resolve_checkpoint
    from ..animate.package import build_package
    from ..avatar.checkpoint import load_avatar
    from ..utils.io import write_text_atomic

    t0 = time.perf_counter()
    resolved = resolve_checkpoint(Path(checkpoint))
    gaussians, head, info = load_avatar(resolved.avatar_dir)
    camera, camera_source = reference_view(resolved, head, info)
    package = build_package(gaussians, head, camera, info={"avatar": str(resolved.avatar_dir), "camera_source": camera_source})
    if out is None:
        out = default_view_path(resolved.run_dir if resolved.run_dir is not None else resolved.avatar_dir)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out}: the viewer is one .html file")
    name = resolved.run_dir.name if resolved.run_dir is not None else resolved.avatar_dir.name
    note = f"{name}: {gaussians.num_gaussians} Gaussians on a {head.name} head; {head.licence}"
    text = build_page(package, f"zero1toa avatar: {name}", note)
    write_text_atomic(out, text)
    return {
        "html": str(out),
        "bytes": len(text.encode("utf-8")),
        "package_bytes": len(package),
        "avatar": str(resolved.avatar_dir),
        "num_gaussians": gaussians.num_gaussians,
        "seconds": round(time.perf_counter() - t0, 3),
    }
