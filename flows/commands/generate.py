"""zero1toa generate: a pseudo ground-truth video from a portrait with a chosen generator."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", default="sample", help="portrait photo, or 'sample' for the bundled one (default)")
    p.add_argument("--out", type=Path, default=Path("runs/generate"), help="output folder (preprocessing is cached in OUT/run)")
    p.add_argument("--frames", type=int, default=24, help="number of frames (long requests are windowed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. generator=tiny generator.resolution=128")


def run(args: argparse.Namespace) -> int:
    from flows.config import compose
    from zero1toa.demo import generate_demo
    from zero1toa.generate.factory import build_generator
    from zero1toa.nodes import node_fit_head, node_preprocess
    from zero1toa.runfolder import load_reference
    from zero1toa.utils.manifest import read_manifest

    cfg = compose(args.overrides)
    run_dir = args.out / "run"
    image = args.image
    if image == "sample":
        from zero1toa.sample import write_sample_portrait

        image = write_sample_portrait(args.out / "sample.png")
    if not read_manifest(run_dir / "preprocess"):
        node_preprocess(Path(image), run_dir, cfg)
    if not read_manifest(run_dir / "head"):
        node_fit_head(run_dir, cfg)
    head, reference = load_reference(run_dir)
    generator = build_generator(cfg.generator, head, reference, seed=args.seed)
    out = generate_demo(generator, head, reference, args.out, frames=args.frames, seed=args.seed)
    print(f"{generator.info.name}: {args.frames} frames at {generator.info.resolution}px, {out.seconds_per_frame:.3f} s/frame")
    print(f"video:         {out.video}\nlandmarks:     {out.landmarks_video}\ncontact sheet: {out.contact_sheet}")
    return 0
