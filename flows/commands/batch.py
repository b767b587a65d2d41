"""zero1toa batch FOLDER [overrides]: the DAG for every portrait in a folder, on a Dask cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder of portrait images (one run per image, named after the file)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every portrait, e.g. preset=smoke")
    p.add_argument("--root", default=None, help="shared root for run folders and caches (default: run.root)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--address", default=None, help="existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (or ZERO1TOA_DASK_ADDRESS)")
    p.add_argument("--refresh", action="store_true", help="ignore cached node results")
    p.add_argument("--json", action="store_true", help="print the batch summary as JSON")


def run(args: argparse.Namespace) -> int:
    from flows.config import compose

    overrides = list(args.overrides) + ([f"run.root={Path(args.root).resolve()}"] if args.root else [])
    base = compose(overrides)  # bad settings fail before any cluster starts

    from flows.dashboard import use_dashboard_if_running

    use_dashboard_if_running()
    from flows.batch import find_portraits, run_batch

    find_portraits(args.folder)
    summary = run_batch(args.folder, base, workers=args.workers, address=args.address, refresh=args.refresh)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for name, s in summary["portraits"].items():
            print(f"{name}: {len(s['executed'])} executed, {len(s['cached'])} cached, {s['seconds']:.1f} s -> {s['run_dir']}")
        for name, err in summary["failed"].items():
            print(f"{name}: FAILED: {err}")
    return 1 if summary["failed"] else 0
