"""zero1toa report RUN [RUN ...] --out report.html: one self-contained HTML page comparing runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", type=Path, help="run folders (evaluated with `zero1toa evaluate` for metrics and pictures)")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default: report.html)")
    p.add_argument("--title", default="zero1toa: run comparison", help="page title")


def run(args: argparse.Namespace) -> int:
    from zero1toa.evaluate.report import build_report

    out = build_report(args.runs, args.out, title=args.title)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, self-contained: open it in any browser)")
    return 0
