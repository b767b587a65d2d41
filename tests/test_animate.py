"""``zero1toa animate`` on a smoke checkpoint: every SOURCE kind -> a video we decode back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from animate_fixtures import build_animate_smoke, decode, synthetic_driving_video  # noqa: E402

from zero1toa.animate.animate import animate_avatar, drive_kind, find_final_avatar, resolve_checkpoint  # noqa: E402

R = 48  # frame size of the test animations


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return build_animate_smoke(tmp_path_factory.getbasetemp() / "animate_smoke_root")


@pytest.fixture(scope="module")
def head(smoke):
    from zero1toa.avatar.checkpoint import load_avatar

    return load_avatar(find_final_avatar(smoke))[1]


def _check_video(path, frames: int, size: int) -> np.ndarray:
    arr = decode(path)
    assert arr.shape == (frames, size, size, 3), arr.shape
    # the avatar is in the picture: not just the white background
    assert (arr.reshape(frames, -1, 3).min(-1) < 200).mean() > 0.05
    return arr


def test_checkpoint_resolution(smoke):
    avatar = smoke / "spatial" / "round_1" / "avatar"
    for given in (smoke, smoke / "spatial" / "round_1", avatar):
        r = resolve_checkpoint(given)
        assert r.avatar_dir.resolve() == avatar.resolve()
        assert r.run_dir is not None and r.run_dir.resolve() == smoke.resolve()
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(smoke / "nope")
    with pytest.raises(FileNotFoundError, match="not an avatar folder"):
        resolve_checkpoint(smoke / "preprocess")


def test_preset_mp4_and_gif(smoke, tmp_path):
    out = tmp_path / "talk.mp4"
    summary = animate_avatar(smoke, "talk", out, resolution=R, frames=6, gif=True, progress=False)
    assert summary["frames"] == 6 and summary["fps"] == 24.0
    assert summary["camera"] == "avatar.json reference_camera"  # rounds record the photo's camera in the avatar
    talk = _check_video(out, 6, R)
    _check_video(tmp_path / "talk.gif", 6, R)
    assert summary["gif"] == str(tmp_path / "talk.gif")
    assert np.abs(talk[0].astype(int) - talk[3].astype(int)).max() > 0  # the mouth moves
    # a GIF as the main output, at a chosen rate
    gif = tmp_path / "blink.gif"
    animate_avatar(smoke, "blink", gif, resolution=R, frames=5, fps=10, progress=False)
    _check_video(gif, 5, R)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_turntable_moves_the_camera(smoke, tmp_path):
    out = tmp_path / "turn.mp4"
    animate_avatar(smoke, "turntable", out, resolution=R, frames=5, progress=False)
    arr = _check_video(out, 5, R).astype(int)
    assert np.abs(arr[0] - arr[2]).mean() > 10  # front vs back of the head
    assert np.abs(arr[0] - arr[4]).mean() < np.abs(arr[0] - arr[2]).mean()  # 360 deg: back to the front


def test_csv_and_npz_sources(smoke, head, tmp_path):
    from zero1toa.head.base import HeadPose
    from zero1toa.progressive.sequences import save_expression_sequence

    n = 5
    expr = np.zeros((n, head.expression_dim), np.float32)
    expr[:, head.expression_names.index("jaw_open")] = np.linspace(0, 1, n)
    pose = HeadPose.neutral(n)
    pose.rotation[:, 1] = torch.linspace(0, 0.4, n)
    csv = save_expression_sequence(tmp_path / "seq.csv", expr, pose, head.expression_names)
    assert drive_kind(csv) == "csv"
    s1 = animate_avatar(smoke, csv, tmp_path / "csv.mp4", resolution=R, progress=False)
    assert s1["drive"]["kind"] == "csv"
    a = _check_video(tmp_path / "csv.mp4", n, R)

    npz = tmp_path / "seq.npz"
    np.savez(npz, expression=expr, rotation=pose.rotation.numpy())
    s2 = animate_avatar(smoke, npz, tmp_path / "npz.mp4", resolution=R, progress=False)
    assert s2["drive"]["kind"] == "npz"
    b = _check_video(tmp_path / "npz.mp4", n, R)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0  # the same sequence, two formats
    # --frames caps a file's length
    animate_avatar(smoke, npz, tmp_path / "short.mp4", resolution=R, frames=3, progress=False)
    _check_video(tmp_path / "short.mp4", 3, R)


def test_driving_video_source(smoke, head, tmp_path):
    from zero1toa.progressive.sequences import load_expression_sequence

    n = 6
    video = synthetic_driving_video(smoke, tmp_path / "driver.mp4", np.linspace(0, 0.4, n), np.linspace(0, 8, n), resolution=192, fps=15)
    assert drive_kind(video) == "video"
    out = tmp_path / "driven.mp4"
    summary = animate_avatar(smoke, video, out, resolution=R, progress=False)
    assert summary["drive"]["kind"] == "video"
    assert summary["fps"] == pytest.approx(15.0)  # the driving video's rate
    assert summary["tracking"]["frames_with_face"] == n
    _check_video(out, n, R)
    tracked = load_expression_sequence(tmp_path / "driven.tracked.csv", head)
    assert len(tracked) == n
    jaw = tracked.expressions[:, head.expression_names.index("jaw_open")]
    assert jaw[-1] > jaw[0] + 0.1


def test_avatar_folder_outside_a_run_uses_a_frontal_camera(smoke, tmp_path):
    from zero1toa.utils.io import read_json, write_json_atomic

    alone = tmp_path / "alone"
    shutil.copytree(smoke / "spatial" / "round_1" / "avatar", alone)
    info = read_json(alone / "avatar.json")
    info.pop("reference_camera", None)  # an avatar from before rounds recorded the camera
    write_json_atomic(alone / "avatar.json", info)
    summary = animate_avatar(alone, "smile", tmp_path / "alone.mp4", resolution=R, frames=3, progress=False)
    assert "frontal" in summary["camera"]
    frontal = _check_video(tmp_path / "alone.mp4", 3, R)
    # a reference camera recorded in avatar.json wins over the fallback
    info = read_json(alone / "avatar.json")
    info["reference_camera"] = read_json(smoke / "head" / "camera.json")
    write_json_atomic(alone / "avatar.json", info)
    summary = animate_avatar(alone, "smile", tmp_path / "alone_ref.mp4", resolution=R, frames=3, progress=False)
    assert summary["camera"] == "avatar.json reference_camera"
    in_run = animate_avatar(smoke, "smile", tmp_path / "in_run.mp4", resolution=R, frames=3, progress=False)
    recorded = _check_video(tmp_path / "alone_ref.mp4", 3, R)
    assert np.array_equal(recorded, _check_video(tmp_path / "in_run.mp4", 3, R))  # same camera, same pictures
    assert in_run["camera"] == "avatar.json reference_camera"
    # the frontal fallback still frames the head: similar coverage to the photo's view
    cover = lambda a: (a.min(-1) < 200).mean()  # noqa: E731
    assert 0.3 < cover(frontal) / cover(recorded) < 3.0


def test_bad_sources_and_outputs_are_named(smoke, tmp_path):
    with pytest.raises(ValueError, match="talk, smile"):
        animate_avatar(smoke, "dance", tmp_path / "x.mp4", progress=False)
    with pytest.raises(FileNotFoundError):
        animate_avatar(smoke, tmp_path / "missing.csv", tmp_path / "x.mp4", progress=False)
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        animate_avatar(smoke, "talk", tmp_path / "x.avi", progress=False)


def test_cli(smoke, tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "cli.mp4"
    rc = main(["animate", str(smoke), "--drive", "surprise", "--out", str(out), "--frames", "4", "--resolution", str(R), "--no-progress"])
    assert rc == 0
    _check_video(out, 4, R)
    assert '"frames": 4' in capsys.readouterr().out
    assert main(["animate", str(smoke), "--drive", "dance", "--out", str(out)]) == 1


def test_a_run_folder_resolves_to_its_own_schedules_last_round(tmp_path):
    """A run re-made with fewer rounds keeps an older schedule's higher rounds on disk: the run's
    avatar is its own schedule's last round (run_config.json), not the highest-numbered folder."""
    from flows.config import compose
    from flows.runconfig import save_run_config

    run = tmp_path / "me"
    for folder in ("spatial/round_1", "temporal/round_1", "temporal/round_2"):
        (run / folder / "avatar").mkdir(parents=True)
        (run / folder / "avatar" / "avatar.json").write_text("{}")
    (run / "head").mkdir()
    (run / "head" / "camera.json").write_text("{}")
    assert find_final_avatar(run) == run / "temporal" / "round_2" / "avatar"  # no record: the newest
    save_run_config(run, compose(["preset=smoke", "stages.spatial.rounds=1", "stages.temporal.rounds=1"]), [])
    assert find_final_avatar(run) == run / "temporal" / "round_1" / "avatar"
    assert resolve_checkpoint(run).avatar_dir == run / "temporal" / "round_1" / "avatar"
    # its final round not trained yet (a run under way): the newest avatar there is
    save_run_config(run, compose(["preset=smoke", "stages.spatial.rounds=1", "stages.temporal.rounds=3"]), [])
    assert find_final_avatar(run) == run / "temporal" / "round_2" / "avatar"
