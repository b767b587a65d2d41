"""Which clips a SymGEN refresh regenerates, and when.

The paper refreshes the cached dataset every 30 avatar iterations; which clips a refresh touches
is open. A refresh policy answers it from the dataset table alone, so it can be tested without a
generator:

- ``stalest`` (default): the clips whose frames were (re)generated longest ago come first, over
  every clip of the dataset: the current stage's and every earlier stage's (spatial clips keep
  being refreshed during temporal rounds). With ``clips_per_refresh = 0`` (auto) each refresh
  takes enough clips that every clip in the dataset is refreshed at least once per round.
- ``stage_round_robin``: the first version's rule, kept for comparison: the round's own stage
  only, in sorted clip order, one pointer per round (the newest clips of a round were often never
  reached).

Ages are the table's ``refresh_order``: a counter that grows by one for every clip generated or
regenerated in the run, so "stalest" needs no clock and survives resumes.
"""

from __future__ import annotations

import math

import pandas as pd

POLICIES = ("stalest", "stage_round_robin")


def refresh_steps(iterations: int, every: int) -> list[int]:
    """The iterations at which a round refreshes (every ``every``, never at 0 or at the end)."""
    return list(range(every, iterations, every)) if every > 0 else []


def clips_per_event(budget: int, clips: int, events: int) -> int:
    """``budget`` clips per refresh, or (0 = auto) enough to cover ``clips`` in ``events`` refreshes."""
    if budget > 0:
        return budget
    return max(1, math.ceil(clips / max(1, events)))


def pick_clips(table: pd.DataFrame, policy: str, count: int, stage: str, event_index: int) -> list[str]:
    """The clip ids the refresh at ``event_index`` (0-based within the round) regenerates."""
    if policy not in POLICIES:
        raise ValueError(f"unknown refresh policy {policy!r}; known: {', '.join(POLICIES)}")
    if table.empty or count <= 0:
        return []
    per_clip = table.groupby("clip_id", sort=True).agg(order=("refresh_order", "max"), stage=("stage", "first"))
    if policy == "stage_round_robin":
        ids = sorted(per_clip.index[per_clip["stage"] == stage])
        if not ids:
            return []
        start = event_index * count
        return [ids[(start + k) % len(ids)] for k in range(min(count, len(ids)))]
    ranked = per_clip.sort_values(["order"], kind="stable")  # ties: clip id order (the index is sorted)
    return ranked.index[: min(count, len(ranked))].tolist()


def clips_to_drop(table: pd.DataFrame, stage: str, max_clips: int, new_clips: int) -> list[str]:
    """The oldest clips of ``stage`` that make room for ``new_clips`` within ``max_clips``."""
    if table.empty:
        return []
    stage_clips = [c for c in dict.fromkeys(table["clip_id"]) if (table.loc[table["clip_id"] == c, "stage"] == stage).all()]
    budget = max(0, max_clips - new_clips)
    return stage_clips[: max(0, len(stage_clips) - budget)]


def simulate_refreshes(rounds: list[dict], policy: str, clips_per_refresh: int, refresh_every: int) -> pd.DataFrame:
    """Which clips each round refreshes, without generating anything (one row per round and clip).

    ``rounds``: in DAG order, each ``{"name", "stage", "iterations", "new_clips": [ids], "max_clips"}``.
    The same functions as :func:`~zero1toa.symgen.round.run_round` decide (drop, policy, budget),
    so the table is what a run would do; ``zero1toa schedule`` prints it and a test checks that
    the default schedule refreshes every clip in every round.
    """
    table = pd.DataFrame(columns=["clip_id", "stage", "refresh_order"])
    order = 0
    out = []
    for r in rounds:
        drop = clips_to_drop(table, r["stage"], r["max_clips"], len(r["new_clips"]))
        table = table[~table["clip_id"].isin(drop)]
        new = pd.DataFrame({"clip_id": r["new_clips"], "stage": r["stage"], "refresh_order": range(order, order + len(r["new_clips"]))})
        order += len(r["new_clips"])
        table = pd.concat([table, new], ignore_index=True) if len(table) else new
        counts = dict.fromkeys(table["clip_id"], 0)
        events = refresh_steps(r["iterations"], refresh_every)
        for k, _ in enumerate(events):
            chosen = pick_clips(table, policy, clips_per_event(clips_per_refresh, len(counts), len(events)), r["stage"], k)
            for c in chosen:
                counts[c] += 1
                table.loc[table["clip_id"] == c, "refresh_order"] = order
                order += 1
        out += [{"round": r["name"], "clip_id": c, "stage": table.loc[table["clip_id"] == c, "stage"].iloc[0], "refreshes": n} for c, n in counts.items()]
    return pd.DataFrame(out)
