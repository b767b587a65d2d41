"""The driving-video tracker: face mesh -> bounded expression + head pose per frame, smoothed.

The main check renders a driving video with *known* motion (the sample portrait's rig, textured
from its photo, with a jaw_open ramp up and down and a head turn) and tracks it back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from animate_fixtures import decode, synthetic_driving_video  # noqa: E402

from zero1toa.animate.tracker import (  # noqa: E402
    TrackerConfig,
    TrackingError,
    box_qp,
    expression_bounds,
    fill_missing,
    smooth_sequence,
    track_frames,
    track_video,
)

T = 12
JAW = np.interp(np.linspace(0, 1, T), [0.0, 0.5, 1.0], [0.0, 0.4, 0.0])  # open, then close again
YAW = np.linspace(0.0, 12.0, T)  # turning to the subject's left


@pytest.fixture(scope="module")
def rig(fitted_run):
    from zero1toa.runfolder import load_reference

    head, _ = load_reference(fitted_run)
    return head


@pytest.fixture(scope="module")
def driving_video(fitted_run, tmp_path_factory):
    return synthetic_driving_video(fitted_run, tmp_path_factory.mktemp("drive") / "drive.mp4", JAW, YAW)


@pytest.fixture(scope="module")
def tracked(driving_video, rig):
    return track_video(driving_video, rig, TrackerConfig())


def test_box_qp_matches_a_general_bounded_solver():
    from scipy.optimize import lsq_linear

    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = 7
        J = torch.randn(30, n, generator=gen, dtype=torch.float64)
        r = torch.randn(30, generator=gen, dtype=torch.float64) * 3
        lo = -torch.rand(n, generator=gen, dtype=torch.float64) * 0.3
        hi = torch.rand(n, generator=gen, dtype=torch.float64) * 0.3
        lo[:2], hi[:2] = -torch.inf, torch.inf  # unbounded variables (the camera's)
        x = box_qp(J.T @ J, J.T @ r, lo, hi)
        ref = lsq_linear(J.numpy(), -r.numpy(), bounds=(lo.numpy(), hi.numpy()), tol=1e-12).x
        assert np.allclose(x.numpy(), ref, atol=1e-6), trial
        assert bool(((x >= lo - 1e-12) & (x <= hi + 1e-12)).all())


def test_fill_missing_interpolates_and_holds_edges():
    v = np.array([[0.0], [9.0], [2.0], [9.0], [4.0], [9.0]])
    valid = np.array([False, True, True, False, True, False])
    v[1] = 1.0
    out = fill_missing(v, valid)
    assert out[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    with pytest.raises(TrackingError):
        fill_missing(v, np.zeros(6, bool))


def test_smoothing_keeps_constants_and_damps_jitter():
    const = np.full((10, 2), 0.3)
    assert np.allclose(smooth_sequence(const, 2.0), const)
    jitter = np.tile([0.0, 1.0], 10)[:, None]
    assert smooth_sequence(jitter, 1.5).std() < 0.2 * jitter.std()
    assert np.array_equal(smooth_sequence(jitter, 0.0), jitter)


def test_rig_bounds(rig):
    lo, hi = expression_bounds(rig)
    names = rig.expression_names
    assert (lo == 0).all()
    assert hi[names.index("blink_left")] == 1.0 and hi[names.index("jaw_open")] == 2.0

    class PCAHead:  # a head without named coefficients (e.g. FLAME) has no bounds
        expression_names = None

    assert expression_bounds(PCAHead()) is None


def test_jaw_follows_the_ramp_and_rotation_sign_is_right(tracked, rig):
    assert len(tracked) == T
    assert tracked.detected.all()
    assert tracked.fps == pytest.approx(12.0)
    jaw = tracked.expressions[:, rig.expression_names.index("jaw_open")]
    corr = np.corrcoef(jaw, JAW)[0, 1]
    assert corr > 0.9, (corr, np.round(jaw, 3))
    # turning to the subject's left is a positive rotation about +y (head space)
    yaw = np.degrees(tracked.pose.rotation[:, 1].numpy())
    assert abs(yaw[0]) < 1.0
    assert 6.0 < yaw[-1] < 18.0, yaw
    assert np.all(np.diff(yaw) > -0.5), yaw  # follows the monotone turn
    assert np.abs(np.degrees(tracked.pose.rotation[:, [0, 2]].numpy())).max() < 6.0
    # bounds of the rig: magnitudes, blinks at most 1
    lo, hi = expression_bounds(rig)
    assert (tracked.expressions >= lo - 1e-6).all() and (tracked.expressions <= hi + 1e-6).all()
    assert tracked.info["mean_error_px"] < 3.0
    # default translation mode keeps no depth motion
    assert torch.all(tracked.pose.translation[:, 2] == 0)


def test_turning_the_other_way_gives_a_negative_rotation(fitted_run, rig, tmp_path):
    video = synthetic_driving_video(fitted_run, tmp_path / "left.mp4", np.zeros(6), np.linspace(0.0, -12.0, 6))
    result = track_video(video, rig, TrackerConfig(smoothing_sigma=0.0, pose_smoothing_sigma=0.0))
    yaw = np.degrees(result.pose.rotation[:, 1].numpy())
    assert yaw[-1] < -6.0, yaw
    jaw = result.expressions[:, rig.expression_names.index("jaw_open")]
    assert jaw.max() < 0.12, jaw  # nothing opened the mouth


def test_csv_round_trip(tracked, rig, tmp_path):
    from zero1toa.progressive.sequences import load_expression_sequence

    path = tracked.save_csv(tmp_path / "tracked.csv", rig)
    back = load_expression_sequence(path, rig)
    assert np.allclose(back.expressions, tracked.expressions, atol=2e-6)
    assert torch.allclose(back.pose.rotation, tracked.pose.rotation, atol=2e-6)
    assert torch.allclose(back.pose.translation, tracked.pose.translation, atol=2e-6)


def test_frames_without_a_face_are_interpolated(driving_video, rig):
    frames = list(decode(driving_video))[:5]
    frames[2] = np.full_like(frames[2], 255)  # a blank frame: no face
    result = track_frames(iter(frames), rig, fps=12.0, config=TrackerConfig(smoothing_sigma=0.0, pose_smoothing_sigma=0.0))
    assert result.detected.tolist() == [True, True, False, True, True]
    assert np.isnan(result.reprojection_error_px[2])
    mid = 0.5 * (result.raw_expressions[1] + result.raw_expressions[3])
    assert np.allclose(result.raw_expressions[2], mid, atol=1e-5)
    with pytest.raises(TrackingError, match="no face"):
        track_frames(iter([np.full_like(frames[0], 255)] * 2), rig, fps=12.0)


def test_unreadable_video_is_named(rig, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises((TrackingError, OSError)):
        track_video(bad, rig)
    with pytest.raises(FileNotFoundError):
        track_video(tmp_path / "missing.mp4", rig)


def test_previous_landmarks_give_a_working_region_of_interest(driving_video):
    """When the detector misses a frame, the tracker looks where the face was in the last one."""
    from zero1toa.animate.tracker import _detection_from_points
    from zero1toa.preprocess.facemesh import default_runner

    runner = default_runner()
    frames = decode(driving_video)
    first = runner.landmarks(frames[0], runner.detect(frames[0])[0])
    roi = _detection_from_points(first.points)
    again = runner.landmarks(frames[1], roi)  # the next frame, found from the previous mesh alone
    direct = runner.landmarks(frames[1], runner.detect(frames[1])[0])
    assert again.face_score > 0.5
    assert np.abs(again.points[:, :2] - direct.points[:, :2]).mean() < 2.0
