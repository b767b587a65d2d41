"""zero1toa lineage [RUN]: the chain of a portrait's run, node by node (pandas table, --csv, --json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default=None, help="run name (a folder under --root), a run folder, or an MLflow parent run id (default: sample)")
    p.add_argument("--root", type=Path, default=None, help="where run folders live (default: runs)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout")
    fmt.add_argument("--json", action="store_true", help="JSON records on stdout")
    p.add_argument("--no-mlflow", action="store_true", help="only the manifests on disk (no MLflow lookup)")


def _cell(v):
    if isinstance(v, dict):
        return " ".join(f"{k}={w}" for k, w in v.items())
    return v


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from flows.lineage import lineage

    df = lineage(args.run, args.root, with_mlflow=not args.no_mlflow)
    if args.json:
        print(json.dumps(df.to_dict(orient="records"), indent=2, default=str))
        return 0
    flat = df.apply(lambda col: col.map(_cell))
    if args.csv:
        print(flat.to_csv(index=False), end="")
        return 0
    with pd.option_context("display.max_colwidth", 80, "display.width", 250, "display.max_columns", 50):
        print(flat.to_string(index=False))
    if "trained_on" in df and df["trained_on"].notna().any():
        print("\ndataset version -> checkpoint:")
        for _, r in df[df["trained_on"].notna()].iterrows():
            print(f"  {r['node']}: dataset {r['trained_on']} -> checkpoint {r.get('checkpoint') or r.get('outputs', {}).get('avatar')}")
    return 0
