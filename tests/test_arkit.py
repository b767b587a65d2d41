"""ARKit / Live Link Face captures: names, timecodes, the mapping onto the rig and FLAME, rotation
signs on posed vertices, bad input, and ``zero1toa animate --drive capture.csv`` end to end."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from zero1toa.env import apply_defaults

apply_defaults()

from zero1toa.animate.arkit import (  # noqa: E402
    ARKIT_NAMES,
    ROTATION_NAMES,
    arkit_basis,
    arkit_sequence,
    canonical_name,
    fps_from_timecodes,
    load_arkit_csv,
    parse_timecode,
)
from zero1toa.head.base import HeadPose  # noqa: E402

DATA = Path(__file__).parent / "data" / "arkit_capture.csv"
LLF = [n[0].upper() + n[1:] for n in ARKIT_NAMES]  # Live Link Face's capitalisation


def write_capture(path: Path, rows: list[dict[str, float]], header: list[str] | None = None, fps: int = 60, start: int = 0) -> Path:
    """A Live Link Face style CSV: Timecode, BlendShapeCount, 52 shapes, 9 rotations."""
    header = header or ["Timecode", "BlendShapeCount"] + LLF + list(ROTATION_NAMES)
    lines = [",".join(header)]
    for i, row in enumerate(rows):
        cells = []
        for col in header:
            if col == "Timecode":
                cells.append(f"01:02:{3 + (i + start) // fps:02d}:{(i + start) % fps:02d}.000")
            elif col == "BlendShapeCount":
                cells.append("61")
            else:
                key = canonical_name(col) or col
                cells.append(str(row.get(key, row.get(col, 0.0))))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rig(fitted_run):
    from zero1toa.preprocess.head_fit import load_fitted_head

    return load_fitted_head(fitted_run / "head").head


def _posed(head, expr: torch.Tensor, pose: HeadPose) -> torch.Tensor:
    with torch.no_grad():
        return head.animate(expr.reshape(1, -1).float(), pose)[0]


def _one(head, values: dict[str, float], tmp_path: Path, name: str = "one.csv"):
    cap = load_arkit_csv(write_capture(tmp_path / name, [values]))
    return arkit_sequence(cap, head)


# ----------------------------------------------------------------------------- parsing


def test_names_are_normalised_from_every_spelling():
    for spelling in ("EyeBlinkLeft", "eyeBlinkLeft", "eyeBlink_L", "EYE_BLINK_LEFT", "blendShapes.eyeBlinkLeft"):
        assert canonical_name(spelling) == "eyeBlinkLeft", spelling
    assert canonical_name("mouthSmile_R") == "mouthSmileRight"
    assert canonical_name("MouthSmileRight") == "mouthSmileRight"
    assert canonical_name("browOuterUp_L") == "browOuterUpLeft"
    assert canonical_name("HeadRoll") == "HeadRoll" and canonical_name("BlendshapeCount") == "BlendShapeCount"
    assert canonical_name("smile") is None and canonical_name("Wobble") is None


def test_the_projects_own_csv_format_is_not_taken_for_a_capture(tmp_path):
    from zero1toa.progressive.sequences import is_arkit_csv

    own = tmp_path / "own.csv"
    own.write_text("frame,jaw_open,smile,blink_left,neck_x,neck_y,neck_z\n0,0.5,0,0,0,0,0\n")
    assert not is_arkit_csv(own)  # jaw_open is this project's name, even though it spells jawOpen too
    capture = tmp_path / "cap.csv"
    capture.write_text("jawOpen,eyeBlink_L\n0.5,0\n")
    assert is_arkit_csv(capture)


def test_timecodes_and_fps():
    assert parse_timecode("12:34:56:07.123") == (12 * 3600 + 34 * 60 + 56, 7, pytest.approx(0.123))
    with pytest.raises(ValueError, match="HH:MM:SS:FF"):
        parse_timecode("12:34")
    at60 = [f"00:00:{s:02d}:{f:02d}.000" for s, f in [(0, 57), (0, 58), (0, 59), (1, 0), (1, 1)]]
    assert fps_from_timecodes(at60) == 60.0
    at30 = [f"00:00:{s:02d}:{f:02d}.000" for s, f in [(0, 28), (0, 29), (1, 0), (1, 1)]]
    assert fps_from_timecodes(at30) == 30.0
    # 60 rows a second on a 30 fps timecode: half-frame steps
    sub = ["00:00:00:28.000", "00:00:00:28.500", "00:00:00:29.000", "00:00:00:29.500", "00:00:01:00.000", "00:00:01:00.500"]
    assert fps_from_timecodes(sub) == 60.0
    assert fps_from_timecodes(["00:00:00:01.000", "00:00:00:02.000"]) is None  # no second boundary: cannot tell


def test_bundled_sample_capture_reads_and_dispatches(rig):
    from zero1toa.progressive.sequences import is_arkit_csv, load_expression_sequence

    assert is_arkit_csv(DATA)
    cap = load_arkit_csv(DATA)
    assert len(cap) == 12 and cap.fps == 60.0 and len(cap.columns) == 52
    assert cap.skipped_rows == [] and cap.unknown_columns == [] and cap.clipped == 0
    assert cap.values[:, ARKIT_NAMES.index("eyeBlinkLeft")].max() == 1.0
    seq = load_expression_sequence(DATA, rig)  # the temporal stage's loader takes captures too
    assert seq.expressions.shape == (12, rig.expression_dim)
    assert seq.expressions[5, rig.expression_names.index("blink_left")] == pytest.approx(1.0)


def test_bad_rows_unknown_columns_and_out_of_range_values(tmp_path, caplog):
    path = tmp_path / "bad.csv"
    path.write_text(
        "Timecode,EyeBlinkLeft,JawOpen,Wobble,HeadYaw\n"
        "00:00:00:00.000,0.1,0.2,7,0\n"
        "00:00:00:01.000,oops,0.2,7,0\n"
        "00:00:00:02.000,0.1,0.2\n"
        "00:00:00:03.000,1.5,-0.25,7,0.1\n"
    )
    with caplog.at_level(logging.WARNING, logger="zero1toa.animate.arkit"):
        cap = load_arkit_csv(path)
    assert len(cap) == 2
    assert cap.skipped_rows == ["line 3, column EyeBlinkLeft: 'oops' is not a number", "line 4: 3 values, the header has 5 columns"]
    assert cap.unknown_columns == ["Wobble"] and cap.clipped == 2
    assert cap.values[1, ARKIT_NAMES.index("eyeBlinkLeft")] == 1.0 and cap.values[1, ARKIT_NAMES.index("jawOpen")] == 0.0
    assert cap.rotations["head"][1, 0] == pytest.approx(0.1 * math.pi)  # rotations are not clipped
    text = caplog.text
    assert "line 3, column EyeBlinkLeft" in text and "line 4: 3 values" in text
    assert "Wobble" in text and "clipped 2" in text
    empty = tmp_path / "empty.csv"
    empty.write_text("Timecode,JawOpen\n00:00:00:00.000,x\n00:00:00:01.000\n")
    with pytest.raises(ValueError, match=r"no valid row \(2 skipped: line 2, column JawOpen: 'x' is not a number; line 3: 1 values"):
        load_arkit_csv(empty)


# ----------------------------------------------------------------------------- mapping on the rig


def test_jaw_open_opens_the_jaw_like_the_rigs_preset(rig, tmp_path):
    seq = _one(rig, {"jawOpen": 1.0}, tmp_path)
    e, j = rig.expression_preset("jaw_open")
    pose = HeadPose.neutral(1)
    pose.jaw = j[None]
    want = _posed(rig, e, pose)
    got = _posed(rig, torch.from_numpy(seq.expressions[0]), seq.pose[0])
    assert torch.allclose(got, want, atol=1e-6)
    chin = 152
    assert float(got[chin, 1] - _posed(rig, torch.zeros(rig.expression_dim), HeadPose.neutral(1))[chin, 1]) < -0.005  # the chin drops


def test_blink_left_closes_only_the_left_eye_and_smile_sums_both_sides(rig, tmp_path):
    names = rig.expression_names
    seq = _one(rig, {"eyeBlinkLeft": 1.0}, tmp_path, "blink.csv")
    expr = seq.expressions[0]
    assert expr[names.index("blink_left")] == pytest.approx(1.0)
    assert np.count_nonzero(expr) == 1  # blink_left only
    seq = _one(rig, {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, tmp_path, "smile.csv")
    e, _ = rig.expression_preset("smile")
    assert np.allclose(seq.expressions[0], e.numpy())
    half = _one(rig, {"mouthSmileLeft": 1.0}, tmp_path, "half.csv").expressions[0]
    assert half[names.index("smile")] == pytest.approx(0.5)
    brow = _one(rig, {"browInnerUp": 1.0}, tmp_path, "brow.csv").expressions[0]
    assert brow[names.index("brow_raise")] == pytest.approx(0.6) and np.count_nonzero(brow) == 1


def test_basis_is_a_linear_map_with_the_documented_unmapped_shapes(rig):
    basis = arkit_basis(rig)
    assert basis.columns == list(ARKIT_NAMES)
    assert basis.expression.shape == (52, rig.expression_dim) and basis.jaw.shape == (52, 3) and basis.eyes.shape == (52, 6)
    assert not basis.approximate
    assert {"tongueOut", "cheekPuff", "mouthRollLower", "jawForward"} <= set(basis.unmapped)
    assert "jawOpen" not in basis.unmapped and "eyeLookUpLeft" not in basis.unmapped
    values = torch.rand(7, 52)
    expr, jaw, eyes = basis.apply(values)
    assert torch.allclose(expr, values @ basis.expression) and torch.allclose(eyes, values @ basis.eyes)
    d = basis.to_dict()
    assert len(d["expression"]) == 52 and len(d["expression"][0]) == rig.expression_dim


def test_head_and_eye_rotation_signs_on_posed_vertices(rig, tmp_path):
    """HeadYaw > 0 turns the face to the subject's left (+x); HeadPitch > 0 lifts the nose;
    HeadRoll > 0 tips the top of the head to the subject's right (-x). The torso stays."""
    zero = torch.zeros(rig.expression_dim)
    rest = _posed(rig, zero, HeadPose.neutral(1))
    nose, forehead = 1, 10

    def moved(values):
        seq = _one(rig, values, tmp_path, f"rot{len(list(tmp_path.iterdir()))}.csv")
        return _posed(rig, torch.from_numpy(seq.expressions[0]), seq.pose[0]) - rest, seq

    d, seq = moved({"HeadYaw": 0.1})  # 18 degrees
    assert float(d[nose, 0]) > 0.005 and abs(float(d[nose, 1])) < 0.5 * float(d[nose, 0])
    assert torch.allclose(seq.pose.neck[0], torch.tensor([0.0, 0.1 * math.pi, 0.0]), atol=1e-5)
    assert torch.count_nonzero(seq.pose.rotation) == 0  # the head turns on its neck, not the root
    lowest = int(torch.argmin(rest[:, 1]))  # a torso vertex: the neck turns the head, not the body
    assert float(d[lowest].norm()) < 1e-4
    d, _ = moved({"HeadPitch": 0.1})
    assert float(d[nose, 1]) > 0.003
    d, _ = moved({"HeadRoll": 0.1})
    assert float(d[forehead, 0]) < -0.003
    # without eye-rotation columns the eyeLook coefficients turn the eyes (up = -x)
    cap = load_arkit_csv(write_capture(tmp_path / "look.csv", [{"eyeLookUpLeft": 1.0}], header=["eyeLookUpLeft", "HeadYaw"]))
    seq = arkit_sequence(cap, rig)
    assert seq.pose.eyes[0, 0] == pytest.approx(-0.4) and torch.count_nonzero(seq.pose.eyes[0, 1:]) == 0
    from zero1toa.head import topology as T

    ids = rig.landmark_embedding.indices.tolist()
    moved_lmk = rig.landmarks(_posed(rig, torch.from_numpy(seq.expressions[0]), seq.pose[0])[None])[0] - rig.landmarks(rest[None])[0]
    assert float(moved_lmk[ids.index(T.IRIS_CENTER_LEFT), 1]) > 0.0005  # the left pupil went up
    assert float(moved_lmk[ids.index(T.IRIS_CENTER_RIGHT)].norm()) < 1e-7  # the right one did not move
    # LeftEye* columns (Live Link Face writes them) drive the eyes instead of eyeLook
    seq = _one(rig, {"eyeLookUpLeft": 1.0, "LeftEyeYaw": 0.05}, tmp_path, "eyes.csv")
    assert torch.allclose(seq.pose.eyes[0, :3], torch.tensor([0.0, 0.05 * math.pi, 0.0]), atol=1e-5)


# ----------------------------------------------------------------------------- FLAME


def test_flame_maps_through_its_presets(tmp_path):
    pytest.importorskip("scipy")
    import flame_synthetic as fs

    from zero1toa.head.flame import FlameHead

    arrays = fs.make_flame_arrays()
    head = FlameHead.from_file(
        fs.write_flame_2020(tmp_path / "FLAME2020" / "generic_model.pkl", arrays),
        fs.write_mediapipe_embedding(tmp_path / "mediapipe_landmark_embedding.npz", arrays),
        n_shape=20,
        n_expr=10,
    )
    basis = arkit_basis(head)
    assert basis.approximate and basis.expression.shape == (52, 10)
    k = ARKIT_NAMES.index
    e_jaw, j_jaw = head.expression_preset("jaw_open")
    assert torch.allclose(basis.jaw[k("jawOpen")], j_jaw.float()) and float(j_jaw[0]) > 0.3
    e_smile, _ = head.expression_preset("smile")
    assert float(e_smile.abs().sum()) > 0
    assert torch.allclose(basis.expression[k("mouthSmileLeft")], 0.5 * e_smile.float(), atol=1e-6)
    e_blink, _ = head.expression_preset("blink")
    assert torch.allclose(basis.expression[k("eyeBlinkLeft")], 0.5 * e_blink.float(), atol=1e-6)  # no one-eyed blink on FLAME
    e_surprise, j_surprise = head.expression_preset("surprise")
    assert torch.allclose(basis.expression[k("browInnerUp")], 0.6 * e_surprise.float(), atol=1e-6)
    assert torch.count_nonzero(basis.jaw[k("browInnerUp")]) == 0  # a brow raise does not open the jaw
    assert {"mouthStretchLeft", "browDownLeft"} <= set(basis.unmapped)  # no preset for them on FLAME
    seq = arkit_sequence(load_arkit_csv(DATA), head)
    verts = head.animate(torch.from_numpy(seq.expressions).float(), seq.pose)
    assert verts.shape[0] == 12 and torch.isfinite(verts).all()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from animate_fixtures import build_animate_smoke

    return build_animate_smoke(tmp_path_factory.getbasetemp() / "animate_smoke_root")


def test_animate_drives_an_avatar_with_a_capture(smoke, tmp_path, capsys):
    from animate_fixtures import decode

    from flows.cli import main
    from zero1toa.animate.animate import animate_avatar

    rows = [{"jawOpen": 0.0}, {"jawOpen": 1.0, "HeadYaw": 0.05}, {"jawOpen": 1.0, "eyeBlinkLeft": 1.0}, {"mouthSmile_L": 1.0}]
    csv_path = write_capture(tmp_path / "capture.csv", rows, header=["Timecode", "jawOpen", "eyeBlinkLeft", "mouthSmile_L", "HeadYaw"], fps=30, start=28)
    summary = animate_avatar(smoke, csv_path, tmp_path / "cap.mp4", resolution=48, progress=False)
    assert summary["drive"]["kind"] == "arkit" and summary["frames"] == 4
    assert summary["fps"] == 30.0  # from the timecodes (frames 28, 29, 0, 1 across a second), not the default 24
    assert summary["arkit"]["frames"] == 4 and summary["arkit"]["skipped_rows"] == 0
    frames = decode(tmp_path / "cap.mp4").astype(np.float32)
    assert frames.shape == (4, 48, 48, 3)
    assert np.abs(frames[1] - frames[0]).mean() > 0.5  # the mouth opened and the head turned: the picture changed
    rc = main(["animate", str(smoke), "--drive", str(DATA), "--out", str(tmp_path / "cli.gif"), "--resolution", "32", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert '"kind": "arkit"' in out and '"fps": 60.0' in out
    assert decode(tmp_path / "cli.gif").shape[0] == 12
