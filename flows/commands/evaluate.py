"""zero1toa evaluate RUN_DIR [overrides]: the evaluate node on a finished run, then its metrics table."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run folder (holds preprocess/, head/ and the round folders)")
    p.add_argument(
        "--avatar",
        default=None,
        help="round or avatar folder to evaluate, relative to RUN_DIR (default: the run's last finished round)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides on top of the settings the run was made with (its run_config.json), e.g. evaluate.resolution=128 evaluate.clip_models.vit_b_32=/models/clip-vit-base-patch32")


def run(args: argparse.Namespace) -> int:
    from flows.runconfig import config_for_run
    from zero1toa.evaluate.run import evaluate_run, latest_round_folder, metrics_table
    from zero1toa.utils.io import read_json

    if not args.run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {args.run_dir}")
    from zero1toa.runlock import run_lock

    cfg, source = config_for_run(args.run_dir, args.overrides)  # the run's own settings, overrides on top
    print(f"settings: {source}")
    folder = args.avatar or latest_round_folder(args.run_dir)
    with run_lock(args.run_dir):
        manifest = evaluate_run(args.run_dir, folder, cfg.evaluate, seed=cfg.run.seed)
    metrics = read_json(args.run_dir / "evaluate" / "metrics.json")
    print(f"evaluated {args.run_dir / folder} ({manifest['timings']['total']:.1f} s) -> {args.run_dir / 'evaluate'}")
    print(metrics_table(metrics).to_string(index=False))
    return 0
