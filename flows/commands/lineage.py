"""zero1toa lineage [RUN]: the chain of a portrait's run, node by node (pandas table, --csv, --json).

The default view fits the terminal (its width, or 120 columns when stdout is not a terminal):
one short row per node (digests abbreviated to 8 characters, which node each input came from),
then the dataset version -> checkpoint links and a per-node detail block (settings, metrics)
wrapped to the same width. ``--wide`` prints every column in full, one line per node.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

SHORT = 8  # digest characters in the narrow view (enough to tell a run's artifacts apart)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default=None, help="run name (a folder under --root), a run folder, or an MLflow parent run id (default: sample)")
    p.add_argument("--root", type=Path, default=None, help="where run folders live (default: runs)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout")
    fmt.add_argument("--json", action="store_true", help="JSON records on stdout")
    fmt.add_argument("--wide", action="store_true", help="every column in full, one (long) line per node")
    p.add_argument("--no-mlflow", action="store_true", help="only the manifests on disk (no MLflow lookup)")


def _cell(v):
    if isinstance(v, dict):
        return " ".join(f"{k}={w}" for k, w in v.items())
    return v


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _abbrev(v: Any, n: int = SHORT) -> str:
    return "-" if _missing(v) else str(v)[:n]


def _sources(row: dict) -> str:
    """``preprocess fit_head spatial_1.avatar``: where this node's inputs came from."""
    found = row.get("from")
    if isinstance(found, dict):
        # a digest no node of this run produced (the photo, or a broken link) shows as name=digest
        inputs = row.get("inputs") if isinstance(row.get("inputs"), dict) else {}
        names = [src or f"{name}={_abbrev(inputs.get(name))}" for name, src in found.items()]
        return " ".join(dict.fromkeys(names)) or "-"
    inputs = row.get("inputs")  # an MLflow parent's rows carry digests only
    return " ".join(f"{k}={_abbrev(v)}" for k, v in inputs.items()) if isinstance(inputs, dict) and inputs else "-"


def narrow_table(df, width: int) -> list[str]:
    """One row per node, at most ``width`` characters: the last column wraps onto indented lines."""
    cols = [
        ("node", lambda r: str(r["node"])),
        ("output", lambda r: _abbrev(r.get("output_digest"))),
        ("mlflow", lambda r: _abbrev(r.get("mlflow_run_id"))),
        ("by", lambda r: _abbrev(r.get("launcher"), 7)),
        ("code", lambda r: _abbrev(r.get("code_version"))),
        ("seed", lambda r: "-" if _missing(r.get("seed")) else str(int(r["seed"]))),
        ("secs", lambda r: "-" if _missing(r.get("seconds")) else f"{float(r['seconds']):.1f}"),
    ]
    records = df.to_dict(orient="records")
    cells = [[fn(r) for _, fn in cols] for r in records]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(cols)]
    lead = sum(widths) + 2 * len(widths)
    room = max(16, width - lead)
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)) + "  from"]
    for r, c in zip(records, cells):
        head = "  ".join(v.ljust(w) for v, w in zip(c, widths)) + "  "
        wrapped = textwrap.wrap(_sources(r), room) or ["-"]
        lines.append(head + wrapped[0])
        lines += [" " * lead + more for more in wrapped[1:]]
    return [line.rstrip() for line in lines]


def detail_lines(df, width: int) -> list[str]:
    """Per node: its key settings, metrics, dataset links and MLflow run, wrapped to ``width``."""
    out = []
    for r in df.to_dict(orient="records"):
        parts = []
        for field in ("params", "metrics"):
            if isinstance(r.get(field), dict):
                parts += [f"{k}={v}" for k, v in r[field].items()]
        for field in ("dataset", "trained_on", "previous_dataset", "dvc_exp", "git_commit"):
            if not _missing(r.get(field)):
                parts.append(f"{field}={_abbrev(r[field], 12)}")
        if not parts:
            continue
        out += textwrap.wrap(" ".join(parts), width, initial_indent=f"  {r['node']}: ", subsequent_indent=" " * 6, break_on_hyphens=False)
    return out


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
    if getattr(args, "wide", False):
        with pd.option_context("display.max_colwidth", None, "display.width", 100000, "display.max_columns", None):
            print(flat.to_string(index=False))
    else:
        width = max(60, shutil.get_terminal_size((120, 24)).columns)
        print("\n".join(narrow_table(df, width)))
        details = detail_lines(df, width)
        if details:
            print("\nsettings and metrics:")
            print("\n".join(details))
    if "trained_on" in df and df["trained_on"].notna().any():
        print("\ndataset version -> checkpoint:")
        for _, r in df[df["trained_on"].notna()].iterrows():
            print(f"  {r['node']}: dataset {r['trained_on']} -> checkpoint {r.get('checkpoint') or r.get('outputs', {}).get('avatar')}")
    return 0
