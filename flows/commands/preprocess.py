"""zero1toa preprocess IMAGE --out RUN_DIR: the DAG's first two nodes, on their own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="portrait photo (JPEG, PNG, WebP, ...)")
    p.add_argument("--out", type=Path, required=True, help="run folder; writes RUN_DIR/preprocess and RUN_DIR/head")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. preprocess.resolution=384 head=flame head.flame_model=...")


def run(args: argparse.Namespace) -> int:
    from flows.config import compose
    from zero1toa.nodes import node_fit_head, node_preprocess

    cfg = compose(args.overrides)
    pre = node_preprocess(args.image, args.out, cfg)
    fit = node_fit_head(args.out, cfg)
    for w in pre["warnings"] + fit["warnings"]:
        print(f"warning: {w.get('message', w)}")
    print(
        json.dumps(
            {
                "reference": str(args.out / "preprocess" / "reference.png"),
                "mask": str(args.out / "preprocess" / "mask.png"),
                "preview": str(args.out / "head" / "preview.png"),
                "mask_method": pre["params"].get("mask_method"),
                "reprojection_error_px": round(fit["metrics"]["reprojection_error_px"], 3),
                "seconds": round(sum(pre["timings"].values()) + sum(fit["timings"].values()), 2),
            },
            indent=2,
        )
    )
    return 0
