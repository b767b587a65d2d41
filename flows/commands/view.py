"""zero1toa view CHECKPOINT [--out avatar.html]: the avatar in a browser, one self-contained page.

The page embeds the animated package (``zero1toa export --format package``) and poses and
splats it in WebGL2: expression sliders and presets, head pose and jaw, drive presets, a dropped
expression CSV, an orbit camera and a frame-rate readout. No network: open the file from disk.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "examples:\n"
        "  zero1toa view runs/sample                        # -> runs/sample/exports/avatar.html\n"
        "  zero1toa view runs/sample --out avatar.html\n"
        "page URL options (after #): yaw=30&elev=10&zoom=1.5&expr=smile:0.8&play=talk&w=512&h=512&ui=0\n"
    )
    p.add_argument("checkpoint", type=Path, help="avatar folder, round folder, or run folder (uses its final round: the last of its schedule)")
    p.add_argument("--out", type=Path, default=None, help="the .html file to write (default: <run>/exports/avatar.html, which `zero1toa report` links)")


def run(args: argparse.Namespace) -> int:
    from zero1toa.viewer.page import write_view

    summary = write_view(args.checkpoint, args.out)
    print(json.dumps(summary, indent=2))
    return 0
