"""zero1toa export CHECKPOINT [--format ply|package] [--out PATH]: the avatar for other software.

``ply``: standard 3DGS .ply of one frame (neutral, a named expression, coefficients, or one frame
of an expression file), or a whole animation (--sequence SOURCE: any animate drive) as numbered
.ply files + index.json. ``package``: the animated avatar as one glTF 2.0 binary (.glb) - rest
mesh, expression morph targets, skinning, the Gaussians in their triangles' frames and the
drive presets (format in the README), what ``zero1toa view`` embeds. Without --out everything
goes to ``<run>/exports/`` (printed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "examples:\n"
        "  zero1toa export runs/sample                      # -> runs/sample/exports/avatar_neutral.ply\n"
        "  zero1toa export runs/sample --format ply --out avatar.ply\n"
        "  zero1toa export runs/sample --format ply --out smile.ply --expression smile:0.8\n"
        "  zero1toa export runs/sample --format ply --out mouth.ply --expression jaw_open=0.5,blink_left=1\n"
        "  zero1toa export runs/sample --format ply --out frame.ply --expression seq.csv --frame 12\n"
        "  zero1toa export runs/sample --format ply --out talk_ply/ --sequence talk --frames 24\n"
        "  zero1toa export runs/sample --format package     # -> runs/sample/exports/avatar.glb\n"
    )
    p.add_argument("checkpoint", type=Path, help="avatar folder, round folder, or run folder (uses its final round: the last of its schedule)")
    p.add_argument("--format", default="ply", choices=("ply", "package"), help="ply: 3DGS .ply (what splat viewers read); package: the animated avatar (.glb)")
    p.add_argument(
        "--out", type=Path, default=None,
        help="ply: a .ply file or a folder (avatar_<expression>.ply), a folder with --sequence; package: a .glb file "
        "(default: <run>/exports/avatar_<expression>.ply, <run>/exports/<source>_ply/, <run>/exports/avatar.glb)",
    )  # fmt: skip
    what = p.add_mutually_exclusive_group()
    what.add_argument("--expression", default=None, help="neutral (default), NAME[:MAGNITUDE], NAME=VALUE,..., or a .csv/.npz file (with --frame)")
    what.add_argument("--sequence", default=None, help="export an animation: a preset, a .csv/.npz file, or a driving video")
    p.add_argument("--frame", type=int, default=0, help="frame of the --expression file (default 0)")
    p.add_argument("--frames", type=int, default=None, help="--sequence: a preset's length (default 48) or at most this many frames")
    p.add_argument("--fps", type=float, default=None, help="--sequence: frame rate recorded in index.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from zero1toa.animate.export import default_export_dir, export_frame, export_sequence

    if args.format == "package":
        from zero1toa.animate.package import write_package

        if args.expression is not None or args.sequence is not None:
            raise ValueError("--format package holds every expression and the drive presets; --expression and --sequence are for --format ply")
        out = args.out if args.out is not None else default_export_dir(args.checkpoint) / "avatar.glb"
        if out.suffix.lower() != ".glb":
            raise ValueError(f"--out {out}: the package is a glTF binary, give a .glb path")
        summary = write_package(args.checkpoint, out)
    elif args.sequence is not None:
        summary = export_sequence(args.checkpoint, args.out, args.sequence, frames=args.frames, fps=args.fps, progress=not args.no_progress)
    else:
        summary = export_frame(args.checkpoint, args.out, args.expression, frame=args.frame)
        summary.pop("expression", None)
        summary.pop("pose", None)
    print(json.dumps(summary, indent=2))
    return 0
