"""zero1toa schedule [overrides]: the progressive schedule a configuration will run."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. preset=paper")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from flows.config import compose
    from zero1toa.nodes import plan_rounds
    from zero1toa.progressive.schedules import describe_schedule

    cfg = compose(args.overrides)
    rows = describe_schedule(cfg.stages.spatial, cfg.stages.temporal)
    plans = plan_rounds(cfg)
    for row, plan in zip(rows, plans):
        row["node"] = plan.name
        row["iterations"] = cfg.stages.spatial_iterations if plan.stage == "spatial" else cfg.stages.temporal_iterations
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"progressive order: {'on' if cfg.stages.progressive else 'off (ablation: all views and expressions every round)'}; "
          f"dataset refresh every {cfg.symgen.refresh_every} iterations: {'on' if cfg.symgen.update_dataset else 'off (ablation)'}")
    print()
    print(coverage_table(cfg).to_string(index=False))
    return 0


def coverage_table(cfg):
    """Per round: clips in the dataset, how many the refreshes reach, and the refresh counts."""
    from zero1toa.nodes import refresh_schedule

    sched = refresh_schedule(cfg)
    policy = f"{cfg.symgen.refresh_policy}, {cfg.symgen.clips_per_refresh or 'auto'} clips per refresh"
    if sched.empty:
        return sched
    return (
        sched.groupby("round", sort=False)
        .agg(
            clips=("clip_id", "count"),
            spatial=("stage", lambda s: int((s == "spatial").sum())),
            refreshed=("refreshes", lambda r: int((r > 0).sum())),
            never=("refreshes", lambda r: int((r == 0).sum())),
            min_refreshes=("refreshes", "min"),
            max_refreshes=("refreshes", "max"),
        )
        .reset_index()
        .assign(policy=policy)
    )
