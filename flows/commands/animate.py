"""zero1toa animate CHECKPOINT --drive SOURCE --out video.mp4: drive an avatar, render a video.

SOURCE: a preset (talk, smile, blink, surprise, turntable, expressions), an expression/pose
file (.csv or .npz; columns documented in zero1toa/progressive/sequences.py), an ARKit capture
(Live Link Face CSV: 52 blendshapes + head rotation, mapped by zero1toa/animate/arkit.py), or a driving video
(tracked with the shipped face-mesh model; the fitted sequence is saved as <out>.tracked.csv).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "examples:\n"
        "  zero1toa animate runs/sample --drive talk --out talk.mp4\n"
        "  zero1toa animate runs/sample/temporal/round_2/avatar --drive me.mp4 --out me_avatar.mp4 --gif\n"
        "  zero1toa animate runs/sample --drive seq.csv --out seq.gif --resolution 384 --fps 30\n"
        "  zero1toa animate runs/sample --drive capture.csv --out capture.mp4   (Live Link Face / ARKit CSV)\n"
    )
    p.add_argument("checkpoint", type=Path, help="avatar folder, round folder, or run folder (uses its final round: the last of its schedule)")
    p.add_argument("--drive", required=True, help="preset name, .csv/.npz expression file, ARKit (Live Link Face) .csv capture, or driving video")
    p.add_argument("--out", type=Path, required=True, help="output video: .mp4 (H.264) or .gif")
    p.add_argument("--gif", action="store_true", help="also write a GIF beside the MP4")
    p.add_argument("--resolution", type=int, default=256, help="square frame size in pixels (default 256; 512 on a GPU)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the driving video's or the ARKit capture's timecodes', else 24)")
    p.add_argument("--frames", type=int, default=None, help="a preset's length (default 48), or at most this many frames of a file/video")
    p.add_argument("--yaw", type=float, default=0.0, help="view the avatar this many degrees from the reference view (positive: its left side)")
    p.add_argument("--elevation", type=float, default=0.0, help="view elevation in degrees relative to the reference view")
    p.add_argument("--background", type=float, default=1.0, help="background grey level in [0, 1] (default white)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--smoothing", type=float, default=None, help="tracker: Gaussian smoothing of expressions, sigma in frames (default 1; 0 off)")
    p.add_argument("--translation", choices=("xyz", "xy", "none"), default=None, help="tracker: which head translation to follow (default xy)")
    p.add_argument(
        "--arkit-angles",
        choices=("halfturns", "radians", "degrees"),
        default="halfturns",
        help="how an ARKit capture stores head/eye rotations (default halfturns: Live Link Face's 1 = 180 degrees)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from zero1toa.animate.animate import animate_avatar
    from zero1toa.animate.tracker import TrackerConfig

    tracker = TrackerConfig()
    if args.smoothing is not None:
        tracker = replace(tracker, smoothing_sigma=args.smoothing, pose_smoothing_sigma=1.5 * args.smoothing)
    if args.translation is not None:
        tracker = replace(tracker, translation=args.translation)
    if not 0.0 <= args.background <= 1.0:
        raise ValueError(f"--background must lie in [0, 1], got {args.background}")
    summary = animate_avatar(
        args.checkpoint,
        args.drive,
        args.out,
        resolution=args.resolution,
        fps=args.fps,
        frames=args.frames,
        gif=args.gif,
        background=args.background,
        view_yaw_deg=args.yaw,
        view_elevation_deg=args.elevation,
        device=args.device,
        tracker=tracker,
        progress=not args.no_progress,
        arkit_angles=args.arkit_angles,
    )
    print(json.dumps(summary, indent=2))
    return 0
