"""zero1toa compare RUN_A RUN_B: what differs between two runs (settings, node outputs, metrics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="run name, run folder or MLflow parent run id")
    p.add_argument("run_b", help="run name, run folder or MLflow parent run id")
    p.add_argument("--root", type=Path, default=None, help="where run folders live (default: runs)")
    p.add_argument("--all", action="store_true", help="show equal rows too")
    p.add_argument("--json", action="store_true", help="JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from flows.lineage import compare

    tables = compare(args.run_a, args.run_b, args.root, show_all=args.all)
    if args.json:
        print(json.dumps({k: v.to_dict(orient="records") for k, v in tables.items()}, indent=2, default=str))
        return 0
    print(f"A = {args.run_a}\nB = {args.run_b}")
    titles = {"params": "settings", "nodes": "node outputs (digest)", "metrics": "metrics"}
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        for key, df in tables.items():
            print(f"\n{titles[key]}: {'no differences' if df.empty else f'{len(df)} row(s)'}")
            if not df.empty:
                print(df.to_string(index=False))
    return 0
