"""Progressive learning schedules: the documented ranges, smooth trajectories, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zero1toa.progressive.schedules import (
    SpatialConfig,
    TemporalConfig,
    describe_schedule,
    orbit_from_reference,
    spatial_clips,
    spatial_max_yaw,
    temporal_clips,
    temporal_magnitude,
)


def test_spatial_clips_sweep_from_the_front_within_the_rounds_range():
    cfg = SpatialConfig(rounds=3, clips_per_round=6, frames_per_clip=10, yaw_start_deg=30, yaw_end_deg=90)
    assert [spatial_max_yaw(cfg, r) for r in range(3)] == [30.0, 60.0, 90.0]
    for r in range(3):
        clips = spatial_clips(cfg, r, np.zeros(9), np.zeros(3), seed=0)
        ymax = spatial_max_yaw(cfg, r)
        for c in clips:
            assert c.yaws_deg[0] == 0.0 and c.elevations_deg[0] == 0.0  # starts at the photo's view
            end = abs(c.yaws_deg[-1])
            assert cfg.min_yaw_fraction * ymax - 1e-6 <= end <= ymax + 1e-6
            assert np.all(np.diff(np.abs(c.yaws_deg)) >= -1e-9)  # monotone sweep, no jumps
            assert np.abs(np.diff(c.yaws_deg)).max() <= ymax / (cfg.frames_per_clip - 1) * 1.6
            assert np.allclose(c.expressions, 0.0)  # expression fixed at the reference
        signs = {np.sign(c.yaws_deg[-1]) for c in clips}
        assert signs == {-1.0, 1.0}  # both sides of the head


def test_temporal_clips_fix_the_view_and_grow_the_expression(fitted_run):
    from zero1toa.preprocess.head_fit import load_fitted_head

    head = load_fitted_head(fitted_run / "head").head
    cfg = TemporalConfig(rounds=3, clips_per_round=8, frames_per_clip=9, magnitude_start=0.4, magnitude_end=1.2)
    assert temporal_magnitude(cfg, 0) == pytest.approx(0.4) and temporal_magnitude(cfg, 2) == pytest.approx(1.2)
    peaks = []
    for r in range(3):
        clips = temporal_clips(cfg, r, head, np.zeros(head.expression_dim), np.zeros(3), seed=1)
        for c in clips:
            assert np.ptp(c.yaws_deg) == 0 and np.ptp(c.elevations_deg) == 0  # view fixed in a clip
            assert abs(c.yaws_deg[0]) <= cfg.view_yaw_deg
            assert np.allclose(c.expressions[0], 0.0)  # starts at the portrait's expression
            assert np.abs(np.diff(c.expressions, axis=0)).max() < 1.0  # smooth
        peaks.append(np.mean([np.abs(c.expressions).max() for c in clips]))
    assert peaks[0] < peaks[1] < peaks[2]


def test_schedules_are_deterministic():
    cfg = SpatialConfig()
    a = spatial_clips(cfg, 1, np.zeros(3), np.zeros(3), seed=5)
    b = spatial_clips(cfg, 1, np.zeros(3), np.zeros(3), seed=5)
    c = spatial_clips(cfg, 1, np.zeros(3), np.zeros(3), seed=6)
    assert all(np.array_equal(x.yaws_deg, y.yaws_deg) for x, y in zip(a, b))
    assert not all(np.array_equal(x.yaws_deg, y.yaws_deg) for x, y in zip(a, c))


def test_orbit_at_zero_is_the_reference_camera_and_keeps_distance(fitted_run):
    from zero1toa.runfolder import load_reference

    head, ref = load_reference(fitted_run)
    cams = orbit_from_reference(ref.camera, [0.0, 45.0, -90.0], [0.0, 10.0, 0.0], ref.target, ref.camera.width)
    assert torch.allclose(cams.viewmats[0], ref.camera.viewmats[0], atol=1e-6)
    d = (cams.centers() - ref.target).norm(dim=-1)
    assert torch.allclose(d, d[0].expand(3), atol=1e-5)
    # positive yaw moves the camera towards the subject's left (+x)
    assert cams.centers()[1, 0] > cams.centers()[0, 0]


def test_describe_schedule_lists_every_round():
    rows = describe_schedule(SpatialConfig(rounds=2), TemporalConfig(rounds=3))
    assert [r["stage"] for r in rows] == ["spatial"] * 2 + ["temporal"] * 3
