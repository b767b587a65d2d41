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
    return 0
