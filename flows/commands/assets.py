"""zero1toa assets: fetch the optional selfie-segmentation model (Apache-2.0) from the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wheel", type=Path, help="use a local mediapipe==0.10.21 wheel instead of downloading it")
    p.add_argument("--no-download", action="store_true", help="only report whether the model is present")


def run(args: argparse.Namespace) -> int:
    from zero1toa.preprocess.assets import ensure_mediapipe_assets

    path = ensure_mediapipe_assets(allow_download=not args.no_download, wheel=args.wheel)
    if path is None:
        print("selfie segmentation model unavailable: masks fall back to GrabCut")
        return 2
    print(f"selfie segmentation model ready in {path}")
    return 0
