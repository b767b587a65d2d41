"""SymGEN's refresh policy: which clips each refresh regenerates, over the whole schedule."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from zero1toa.config import from_dict
from zero1toa.nodes import refresh_schedule
from zero1toa.symgen.refresh import clips_per_event, pick_clips, refresh_steps


def test_default_schedule_refreshes_every_clip_in_every_round():
    sched = refresh_schedule(from_dict({}))
    per_round = sched.groupby("round", sort=False)["refreshes"].min()
    assert list(per_round.index) == ["spatial_1", "spatial_2", "spatial_3", "temporal_1", "temporal_2"]
    assert (per_round >= 1).all(), sched[sched["refreshes"] == 0]
    # spatial clips keep being refreshed in the temporal stage
    late = sched[(sched["round"] == "temporal_2") & (sched["stage"] == "spatial")]
    assert len(late) == 18 and (late["refreshes"] >= 1).all()


def test_the_first_versions_rule_left_clips_unrefreshed():
    """The coverage gap the stalest-first policy closes (stage round robin, one clip per refresh)."""
    sched = refresh_schedule(from_dict({"symgen": {"refresh_policy": "stage_round_robin", "clips_per_refresh": 1}}))
    never = sched[sched["refreshes"] == 0]
    assert set(never["round"]) == {"spatial_2", "spatial_3", "temporal_1", "temporal_2"}
    assert "spatial-r2-c5" in set(never[never["round"] == "spatial_3"]["clip_id"])  # the newest 90-degree clips
    assert (never[never["round"].str.startswith("temporal")]["stage"] == "spatial").sum() == 36


def test_stalest_first_order_and_budget():
    t = pd.DataFrame({"clip_id": ["a", "a", "b", "c", "d"], "stage": ["spatial"] * 3 + ["temporal"] * 2, "refresh_order": [5, 5, 2, 9, 2]})
    assert pick_clips(t, "stalest", 2, "temporal", 0) == ["b", "d"]  # oldest first; ties by clip id
    assert pick_clips(t, "stalest", 9, "temporal", 0) == ["b", "d", "a", "c"]
    assert pick_clips(t, "stage_round_robin", 1, "temporal", 1) == ["d"]
    with pytest.raises(ValueError, match="refresh policy"):
        pick_clips(t, "newest", 1, "spatial", 0)
    assert refresh_steps(240, 30) == [30, 60, 90, 120, 150, 180, 210]
    assert clips_per_event(0, 30, 7) == 5 and clips_per_event(2, 30, 7) == 2


def test_config_rejects_an_unknown_policy():
    from zero1toa.config import ConfigError

    with pytest.raises(ConfigError, match="symgen.refresh_policy"):
        from_dict({"symgen": {"refresh_policy": "newest"}})
    with pytest.raises(ConfigError, match="symgen.reference_weight"):
        from_dict({"symgen": {"reference_weight": 1.5}})


def test_the_photo_is_a_permanent_target_with_its_weight(fitted_run, monkeypatch):
    """The round's training pool holds the reference photo, composited over the background, drawn
    with probability ``reference_weight``."""
    from zero1toa.runfolder import load_reference
    from zero1toa.symgen.round import reference_sample
    from zero1toa.train.samples import SampleTensors

    head, ref = load_reference(fitted_run)
    sample = reference_sample(ref, 64, background=1.0)
    assert sample.frames.shape == (1, 3, 64, 64) and sample.resolution == 64
    outside = sample.masks[0, 0] < 0.01
    assert torch.allclose(sample.frames[0][:, outside], torch.ones(3, int(outside.sum())), atol=0.02)  # the photo's background is gone
    assert torch.allclose(sample.expressions[0], ref.expression)

    import zero1toa.symgen.round as R

    # six decoded dataset samples stand in for a table (decoding is tested elsewhere)
    fake = SampleTensors(torch.zeros(6, 3, 64, 64), torch.ones(6, 1, 64, 64), sample.viewmats.expand(6, 4, 4), sample.Ks.expand(6, 3, 3), torch.zeros(6, 9), torch.zeros(6, 3), 64)
    monkeypatch.setattr(R, "rows_to_tensors", lambda table, get: fake)
    store = type("Store", (), {"get": None})()
    data = R.RoundDataset(pd.DataFrame({"sample_id": [str(i) for i in range(6)]}), store, None, None, R.SymGenConfig(reference_weight=0.25), sample, None)
    t = data.tensors
    assert t.frames.shape[0] == 7 and torch.equal(t.frames[6], sample.frames[0])
    assert t.weights[6].item() == pytest.approx(0.25) and t.weights.sum().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(t.weights, 4000, replacement=True, generator=g)
    assert 0.22 < (draws == 6).float().mean().item() < 0.28


@pytest.mark.parametrize("progressive", [True, False])
def test_clip_ids_without_a_head_are_the_rounds_own(fitted_run, progressive):
    """The coverage table names clips by round_clip_ids; the rounds make them with round_clips."""
    from zero1toa.nodes import plan_rounds, round_clip_ids, round_clips
    from zero1toa.runfolder import load_reference

    head, ref = load_reference(fitted_run)
    cfg = from_dict({"stages": {"progressive": progressive}})
    for plan in plan_rounds(cfg):
        assert [c.clip_id for c in round_clips(cfg, plan, head, ref)] == round_clip_ids(cfg, plan), plan.name
