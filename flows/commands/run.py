"""zero1toa run IMAGE [overrides]: the whole DAG for one portrait, as a cached, resumable Prefect flow."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "image",
        help="portrait photo (runs in RUN_ROOT/<its file stem>/, or <stem>-<digest>/ when that folder holds another photo; run.name=NAME chooses), "
        "or `sample` for the bundled portrait (scikit-image's astronaut, public domain; runs/sample/)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. preset=smoke generator=tiny run.name=me stages.spatial.rounds=3")
    p.add_argument("--refresh", action="store_true", help="ignore every cached node result and run all nodes again")
    p.add_argument("--retries", type=int, default=None, help="retries per node for transient failures (default 2)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON (for scripts)")
    p.add_argument("--wait", action="store_true", help="when another process is running this run folder, wait for it instead of failing at once")


def print_summary(summary: dict) -> None:
    nodes = summary["nodes"]
    width = max(len(n) for n in nodes) if nodes else 8
    print(f"run {summary['run_name']}: {len(summary.get('executed', []))} node(s) executed, {len(summary.get('cached', []))} from cache, {summary['seconds']:.1f} s")
    print(f"run folder: {summary['run_dir']}" + (f" ({summary['run_folder_note']})" if summary.get("run_folder_note") else ""))
    for name, n in nodes.items():
        secs = "" if n["state"] == "Cached" else f"{n['seconds']:.1f} s"
        print(f"  {name:<{width}}  {n['state']:<9} {secs:>8}  outputs {n['output_digest'][:12]}")
    out = summary["outputs"]
    print("results:")
    for ply in out["avatar"]:
        print(f"  avatar (.ply)   {ply}")
    for video in out["videos"]:
        print(f"  video           {video}")
    if out["metrics"]:
        print(f"  metrics         {out['metrics']}")
    if out["contact_sheet"]:
        print(f"  contact sheet   {out['contact_sheet']}")
    for plot in out["plots"]:
        print(f"  plot            {plot}")
    if summary.get("parent_run_id"):
        from tasks.tracking import tracking_uri

        print(f"MLflow: parent run {summary['parent_run_id']} in {tracking_uri()} (zero1toa lineage {summary['run_name']})")


def run(args: argparse.Namespace) -> int:
    from flows.config import compose

    cfg = compose(args.overrides)  # bad keys/values fail here, before any work or Prefect start-up
    from zero1toa.preflight import check_assets

    check_assets(cfg)  # every missing weight folder / file, listed at once

    from flows.dashboard import use_dashboard_if_running

    use_dashboard_if_running()  # a running `zero1toa dashboard` gets this run (before Prefect is imported)
    from flows.flow import resolve_image, run_portrait

    image = resolve_image(args.image, cfg)  # a missing portrait fails before the flow starts too
    from zero1toa.preprocess.image_io import load_image

    load_image(image)  # and so does a file that is not a photo (one line, not a failed flow)
    summary = run_portrait(args.image, cfg, refresh=args.refresh, retries=args.retries, overrides=args.overrides, wait=args.wait)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0
