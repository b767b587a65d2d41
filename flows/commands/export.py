"""zero1toa export CHECKPOINT --format ply --out PATH: standard 3DGS .ply of the avatar.

One frame (neutral, a named expression, coefficients, or one frame of an expression file), or a
whole animation (--sequence SOURCE: any animate drive) as numbered .ply files + index.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "examples:\n"
        "  zero1toa export runs/sample --format ply --out avatar.ply\n"
        "  zero1toa export runs/sample --format ply --out smile.ply --expression smile:0.8\n"
        "  zero1toa export runs/sample --format ply --out mouth.ply --expression jaw_open=0.5,blink_left=1\n"
        "  zero1toa export runs/sample --format ply --out frame.ply --expression seq.csv --frame 12\n"
        "  zero1toa export runs/sample --format ply --out talk_ply/ --sequence talk --frames 24\n"
    )
    p.add_argument("checkpoint", type=Path, help="avatar folder, round folder, or run folder (uses its newest round)")
    p.add_argument("--format", default="ply", choices=("ply",), help="export format (3DGS .ply, what splat viewers read)")
    p.add_argument("--out", type=Path, required=True, help="a .ply file (or a folder for avatar_<expression>.ply); a folder with --sequence")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--expression", default=None, help="neutral (default), NAME[:MAGNITUDE], NAME=VALUE,..., or a .csv/.npz file (with --frame)")
    what.add_argument("--sequence", default=None, help="export an animation: a preset, a .csv/.npz file, or a driving video")
    p.add_argument("--frame", type=int, default=0, help="frame of the --expression file (default 0)")
    p.add_argument("--frames", type=int, default=None, help="--sequence: a preset's length (default 48) or at most this many frames")
    p.add_argument("--fps", type=float, default=None, help="--sequence: frame rate recorded in index.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from zero1toa.animate.export import export_frame, export_sequence

    if args.sequence is not None:
        summary = export_sequence(args.checkpoint, args.out, args.sequence, frames=args.frames, fps=args.fps, progress=not args.no_progress)
    else:
        summary = export_frame(args.checkpoint, args.out, args.expression, frame=args.frame)
        summary.pop("expression", None)
        summary.pop("pose", None)
    print(json.dumps(summary, indent=2))
    return 0
