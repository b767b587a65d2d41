"""ARKit blendshape captures (Live Link Face CSV) -> the head's expressions and pose.

Why: people capture faces with a phone (Apple's ARKit face tracking, recorded by Epic's Live Link
Face app as CSV) and want to drive their avatar with that capture. ARKit describes a face with 52
named blendshape coefficients in [0, 1] plus head and eye rotations; our heads have their own
expression spaces (the built-in rig: 9 named shapes; FLAME: PCA). This module is the bridge:

- :data:`ARKIT_NAMES`: the 52 canonical names (Apple's lowerCamel, Live Link Face's order);
  :func:`canonical_name` accepts ``EyeBlinkLeft`` (Live Link Face), ``eyeBlinkLeft`` (Apple),
  ``mouthSmile_L`` / ``eyeBlink_R`` (other tools), case and separators ignored.
- :data:`ARKIT_TO_RIG`: which of the built-in rig's named expressions each ARKit shape drives and
  how much (``jawOpen -> jaw_open``, ``eyeBlinkLeft -> blink_left``, ``mouthSmileLeft/Right ->
  smile`` 0.5 each, ``browInnerUp -> brow_raise`` ...), plus :data:`ARKIT_TO_JAW` (jaw sideways)
  and :data:`ARKIT_TO_EYES` (``eyeLook*`` -> eye rotations). Shapes the rig cannot show
  (``mouthRollLower``, ``cheekPuff``, ``tongueOut`` ...) map to nothing and are listed.
- :func:`arkit_basis`: that mapping for one head as a **pure linear map** (:class:`ArkitBasis`):
  ``expression = values[T, 52] @ basis.expression[52, E]``, ``jaw = values @ basis.jaw[52, 3]``,
  ``eyes = values @ basis.eyes[52, 6]``. On a FLAME head the rig names go through the head's
  named presets (:meth:`zero1toa.head.flame.FlameHead.expression_preset`: fitted, approximate;
  FLAME has no one-eyed blink, so each eye's blink is half of its two-eyed ``blink``; no
  ``lip_stretch`` or ``brow_frown`` preset exists, so those shapes are unmapped there).
- :func:`euler_to_axis_angle`: the documented head/eye rotation conversion (below).
- :func:`load_arkit_csv` / :func:`arkit_sequence`: read a capture and turn it into per-frame
  expressions and a :class:`~zero1toa.head.base.HeadPose`.

**Rotations.** Live Link Face writes ``HeadYaw, HeadPitch, HeadRoll`` and the eyes' yaw, pitch
and roll *normalised*: 1 = 180 degrees. That is what Unreal's AppleARKit face support does to
ARKit's transform before it reaches Live Link (``ToBlendShapeMap``: the rotator's degrees / 180),
and captured files hold values of a few tenths. So by default an angle in radians is
``value * pi`` (``angles="halfturns"``); ``angles="radians"`` or ``"degrees"`` read files that
store those instead. Sign convention, in the head frame (+x the subject's left, +y up, +z out of
the face; right-handed, the same axes as ARKit's face anchor):

- ``HeadYaw > 0``: the head turns to the subject's own left (rotation about +y by +yaw);
- ``HeadPitch > 0``: the head tilts back, the nose goes up (rotation about +x by -pitch);
- ``HeadRoll > 0``: the top of the head tilts to the subject's right (rotation about +z by +roll);
- composed as ``R = Ry(yaw) Rx(-pitch) Rz(roll)`` and stored as axis-angle on the **neck** joint
  (which carries the skull; the torso stays, as a phone sees only the head).
  Eyes use the same convention on their own joints; when the file has eye-rotation columns
  they drive the eyes, else the ``eyeLook*`` coefficients do (:data:`ARKIT_TO_EYES`).

A capture mirrored by its app flips the sign of yaw and roll; pass ``mirror=True``.

**Bad input.** A row with the wrong number of values or a cell that is not a number is skipped,
with a warning naming its line and column (a file with no valid row fails, naming the first
problems); columns that are neither ARKit names nor known extras are ignored with a warning
naming them; coefficients outside [0, 1] are clipped and counted.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..head.base import HeadModel, HeadPose

log = logging.getLogger("zero1toa.animate.arkit")

#: The 52 ARKit blendshapes, Apple's lowerCamel names, in the order Live Link Face writes them.
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawRight", "jawLeft", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
assert len(ARKIT_NAMES) == 52

#: Rotation columns of Live Link Face (yaw, pitch, roll per group), in file order.
ROTATION_NAMES: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
#: Columns that are neither shapes nor rotations but are understood (not "unknown").
EXTRA_NAMES: tuple[str, ...] = ("Timecode", "BlendShapeCount", "frame", "time", "timestamp")

#: ARKit shape -> [(built-in rig expression, weight)]. Left/Right are the subject's own sides
#: (ARKit's convention; the rig's blink_left is the subject's left eye too). Pairs that describe
#: one symmetric rig shape split it in halves, so both sides at 1 give the rig shape at 1.
ARKIT_TO_RIG: dict[str, list[tuple[str, float]]] = {
    "jawOpen": [("jaw_open", 1.0)],
    "eyeBlinkLeft": [("blink_left", 1.0)],
    "eyeBlinkRight": [("blink_right", 1.0)],
    "eyeSquintLeft": [("blink_left", 0.3)],
    "eyeSquintRight": [("blink_right", 0.3)],
    "eyeWideLeft": [("blink_left", -0.2)],  # a lid opened past neutral: the blink shape, reversed a little
    "eyeWideRight": [("blink_right", -0.2)],
    "mouthSmileLeft": [("smile", 0.5)],
    "mouthSmileRight": [("smile", 0.5)],
    "mouthDimpleLeft": [("smile", 0.1)],
    "mouthDimpleRight": [("smile", 0.1)],
    "mouthFrownLeft": [("frown", 0.5)],
    "mouthFrownRight": [("frown", 0.5)],
    "mouthPucker": [("lip_pucker", 1.0)],
    "mouthFunnel": [("lip_pucker", 0.6)],
    "mouthStretchLeft": [("lip_stretch", 0.5)],
    "mouthStretchRight": [("lip_stretch", 0.5)],
    "browInnerUp": [("brow_raise", 0.6)],
    "browOuterUpLeft": [("brow_raise", 0.2)],
    "browOuterUpRight": [("brow_raise", 0.2)],
    "browDownLeft": [("brow_frown", 0.5)],
    "browDownRight": [("brow_frown", 0.5)],
}
#: Jaw rotation (radians, axis-angle [x, y, z]) at coefficient 1: the chin moves to that side.
JAW_SIDE_RAD = 0.1
ARKIT_TO_JAW: dict[str, tuple[float, float, float]] = {"jawLeft": (0.0, JAW_SIDE_RAD, 0.0), "jawRight": (0.0, -JAW_SIDE_RAD, 0.0)}
#: Eye rotation (radians) at ``eyeLook* = 1``.
EYE_LOOK_RAD = 0.4
#: ARKit shape -> (eye slot 0 left / 1 right, axis-angle [3]): up = -x, down = +x, towards the
#: subject's left (+x) = +y. "In" is towards the nose: -x side for the left eye, +x for the right.
ARKIT_TO_EYES: dict[str, tuple[int, tuple[float, float, float]]] = {
    "eyeLookUpLeft": (0, (-EYE_LOOK_RAD, 0.0, 0.0)),
    "eyeLookDownLeft": (0, (EYE_LOOK_RAD, 0.0, 0.0)),
    "eyeLookInLeft": (0, (0.0, -EYE_LOOK_RAD, 0.0)),
    "eyeLookOutLeft": (0, (0.0, EYE_LOOK_RAD, 0.0)),
    "eyeLookUpRight": (1, (-EYE_LOOK_RAD, 0.0, 0.0)),
    "eyeLookDownRight": (1, (EYE_LOOK_RAD, 0.0, 0.0)),
    "eyeLookInRight": (1, (0.0, EYE_LOOK_RAD, 0.0)),
    "eyeLookOutRight": (1, (0.0, -EYE_LOOK_RAD, 0.0)),
}
#: On a head without the rig's names (FLAME): rig expression -> (head preset, weight, keep its jaw).
RIG_TO_PRESET: dict[str, tuple[str, float, bool] | None] = {
    "jaw_open": ("jaw_open", 1.0, True),
    "smile": ("smile", 1.0, True),
    "frown": ("frown", 1.0, True),
    "lip_pucker": ("pucker", 1.0, True),
    "lip_stretch": None,
    "blink_left": ("blink", 0.5, True),
    "blink_right": ("blink", 0.5, True),
    "brow_raise": ("surprise", 1.0, False),  # surprise's brows and lids, without its jaw opening
    "brow_frown": None,
}
ANGLE_UNITS = {"halfturns": math.pi, "radians": 1.0, "degrees": math.pi / 180.0}


def _key(name: str) -> str:
    """Normalised comparison key: ``mouthSmile_L`` / ``MouthSmileLeft`` / ``mouth_smile_left`` -> ``mouthsmileleft``."""
    text = str(name).strip()
    text = re.sub(r"^(blendshapes?|arkit)[._:]", "", text, flags=re.IGNORECASE)
    text = re.sub(r"[_.\- ]?L$", "Left", text)
    text = re.sub(r"[_.\- ]?R$", "Right", text)
    return re.sub(r"[^a-z0-9]", "", text.lower())


_CANONICAL = {_key(n): n for n in ARKIT_NAMES + ROTATION_NAMES + EXTRA_NAMES}


def canonical_name(column: str) -> str | None:
    """The canonical ARKit / Live Link Face name of a CSV column, or None if it is none of them."""
    key = _key(column)
    if key in _CANONICAL:
        return _CANONICAL[key]
    return _CANONICAL.get(re.sub(r"[^a-z0-9]", "", str(column).lower()))  # e.g. a genuine trailing "l"


def is_arkit_header(columns: list[str]) -> bool:
    """Whether CSV columns are an ARKit capture: any ARKit shape, rotation or ``BlendShapeCount``."""
    names = {canonical_name(c) for c in columns}
    return bool(names & (set(ARKIT_NAMES) | set(ROTATION_NAMES) | {"BlendShapeCount"}))


# ----------------------------------------------------------------------------- the linear basis


@dataclass
class ArkitBasis:
    """ARKit coefficients -> one head's expression and joint rotations, as matrices.

    ``expression = values[T, 52] @ expression``; ``jaw = values @ jaw`` (axis-angle, radians,
    added to the jaw joint); ``eyes = values @ eyes`` (left eye then right eye). Rows follow
    :attr:`columns`. Head rotation is not linear in the angles: see :func:`euler_to_axis_angle`.
    """

    columns: list[str]  # the 52 canonical names
    expression: Tensor  # [52, E]
    jaw: Tensor  # [52, 3]
    eyes: Tensor  # [52, 6]
    head: str  # the head's name
    unmapped: list[str] = field(default_factory=list)  # columns whose rows are all zero on this head
    approximate: bool = False  # True when mapped through a PCA head's fitted presets (FLAME)

    def apply(self, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """values [T, 52] -> (expression [T, E], jaw [T, 3], eyes [T, 6])."""
        v = values.to(self.expression)
        return v @ self.expression, v @ self.jaw, v @ self.eyes

    def to_dict(self) -> dict:
        """JSON-ready (lists of floats): for a viewer that plays ARKit captures itself."""
        return {
            "columns": list(self.columns),
            "expression": self.expression.tolist(),
            "jaw": self.jaw.tolist(),
            "eyes": self.eyes.tolist(),
            "head": self.head,
            "unmapped": list(self.unmapped),
            "approximate": self.approximate,
            "rotation": {
                "units": "Live Link Face: 1 = 180 degrees (radians = value * pi)",
                "convention": "R = Ry(yaw) Rx(-pitch) Rz(roll); head frame +x subject's left, +y up, +z out of the face; head -> neck joint",
            },
        }


def _rig_vectors(head: HeadModel) -> dict[str, tuple[Tensor, Tensor]]:
    """Each built-in rig expression name as (expression [E], jaw [3]) on ``head``."""
    from ..head.rig_expressions import EXPRESSION_NAMES

    E = head.expression_dim
    names = head.expression_names or []
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for rig_name in EXPRESSION_NAMES:
        if rig_name in names:
            e = torch.zeros(E)
            e[names.index(rig_name)] = 1.0
            out[rig_name] = (e, torch.zeros(3))
            continue
        spec = RIG_TO_PRESET.get(rig_name)
        if spec is None:
            continue
        preset, weight, keep_jaw = spec
        try:
            e, j = head.expression_preset(preset, weight)
        except (KeyError, ValueError, NotImplementedError):
            continue
        out[rig_name] = (e.detach().float().cpu(), (j.detach().float().cpu() if keep_jaw else torch.zeros(3)))
    return out


def arkit_basis(head: HeadModel) -> ArkitBasis:
    """The ARKit mapping (:data:`ARKIT_TO_RIG`, :data:`ARKIT_TO_JAW`, :data:`ARKIT_TO_EYES`) for ``head``."""
    vectors = _rig_vectors(head)
    E = head.expression_dim
    expr, jaw, eyes = torch.zeros(52, E), torch.zeros(52, 3), torch.zeros(52, 6)
    for k, name in enumerate(ARKIT_NAMES):
        for rig_name, weight in ARKIT_TO_RIG.get(name, []):
            if rig_name in vectors:
                e, j = vectors[rig_name]
                expr[k] += weight * e
                jaw[k] += weight * j
        if name in ARKIT_TO_JAW:
            jaw[k] += torch.tensor(ARKIT_TO_JAW[name])
        if name in ARKIT_TO_EYES:
            slot, aa = ARKIT_TO_EYES[name]
            eyes[k, 3 * slot : 3 * slot + 3] = torch.tensor(aa)
    rows = torch.cat([expr, jaw, eyes], 1)
    unmapped = [n for k, n in enumerate(ARKIT_NAMES) if not bool(rows[k].abs().gt(0).any())]
    return ArkitBasis(list(ARKIT_NAMES), expr, jaw, eyes, head.name, unmapped, approximate=not head.expression_names)


# ----------------------------------------------------------------------------- rotations


def euler_to_axis_angle(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """Angles [T] in radians (the sign convention of the module docstring) -> axis-angle [T, 3]."""
    from ..head.lbs import axis_angle_to_matrix, matrix_to_axis_angle

    z = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack([z, yaw, z], -1))
    rx = axis_angle_to_matrix(torch.stack([-pitch, z, z], -1))
    rz = axis_angle_to_matrix(torch.stack([z, z, roll], -1))
    return matrix_to_axis_angle(ry @ rx @ rz)


# ----------------------------------------------------------------------------- reading a capture


@dataclass
class ArkitCapture:
    """A capture as read from its CSV (before any head is involved)."""

    values: np.ndarray  # [T, 52] coefficients in [0, 1], ARKIT_NAMES order (missing columns are 0)
    rotations: dict[str, np.ndarray]  # "head" / "left_eye" / "right_eye" -> [T, 3] yaw, pitch, roll in radians
    fps: float | None  # derived from the timecodes (or a time column); None when they do not tell
    columns: list[str]  # the canonical ARKit names the file has
    skipped_rows: list[str] = field(default_factory=list)  # why each skipped row was skipped
    unknown_columns: list[str] = field(default_factory=list)
    clipped: int = 0  # coefficients clipped into [0, 1]
    source: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def info(self) -> dict:
        return {
            "frames": len(self),
            "fps": self.fps,
            "columns": len(self.columns),
            "skipped_rows": len(self.skipped_rows),
            "unknown_columns": list(self.unknown_columns),
            "clipped_values": self.clipped,
        }


_TIMECODE = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})[:;.](\d+)(?:\.(\d+))?\s*$")
_STANDARD_RATES = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 90.0, 100.0, 120.0, 240.0)


def parse_timecode(text: str) -> tuple[int, int, float]:
    """``HH:MM:SS:FF.sss`` -> (whole seconds, frame FF, sub-frame fraction). Raises ValueError."""
    m = _TIMECODE.match(str(text))
    if not m:
        raise ValueError(f"timecode {text!r} is not HH:MM:SS:FF(.sss)")
    h, mi, s, ff, sub = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s), int(ff), float(f"0.{sub}") if sub else 0.0


def fps_from_timecodes(codes: list[str]) -> float | None:
    """The capture rate of rows stamped with Live Link Face timecodes.

    The timecode's own rate is the smallest standard rate above the largest frame number seen
    just before a second boundary; the row rate is that rate over the median step between rows
    (in frames, sub-frames included), so 60 rows a second on a 30 fps timecode read as 60.
    None when the rows never cross a second (the frame numbers alone cannot tell the rate).
    """
    parsed = [parse_timecode(c) for c in codes]
    if len(parsed) < 2:
        return None
    before_wrap = [parsed[i][1] for i in range(len(parsed) - 1) if parsed[i + 1][0] > parsed[i][0]]
    if not before_wrap:
        return None
    top = max(max(p[1] for p in parsed), max(before_wrap)) + 1
    tc_rate = next((r for r in _STANDARD_RATES if r >= top), float(top))
    t = np.array([s * tc_rate + f + sub for s, f, sub in parsed])
    steps = np.diff(t)
    steps = steps[steps > 0]
    if len(steps) == 0:
        return None
    rate = tc_rate / float(np.median(steps))
    return float(round(rate)) if abs(rate - round(rate)) < 0.02 else round(rate, 3)


def load_arkit_csv(path: Path, angles: str = "halfturns", mirror: bool = False, max_reported: int = 5) -> ArkitCapture:
    """Read a Live Link Face style CSV (see the module docstring for what is skipped or clipped)."""
    path = Path(path)
    if angles not in ANGLE_UNITS:
        raise ValueError(f"angles must be one of {', '.join(ANGLE_UNITS)}, got {angles!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f)]
    rows_numbered = [(i + 1, r) for i, r in enumerate(rows) if any(cell.strip() for cell in r)]
    if not rows_numbered:
        raise ValueError(f"{path}: the file is empty (expected a header such as Timecode,BlendShapeCount,EyeBlinkLeft,...)")
    (_, header), data = rows_numbered[0], rows_numbered[1:]
    canon = [canonical_name(c) for c in header]
    unknown = [c for c, n in zip(header, canon) if n is None]
    seen: dict[str, int] = {}
    for i, n in enumerate(canon):
        if n is not None:
            if n in seen:
                raise ValueError(f"{path}: columns {header[seen[n]]!r} and {header[i]!r} both name {n}")
            seen[n] = i
    numeric = [(i, n) for i, n in enumerate(canon) if n is not None and n not in ("Timecode",)]
    skipped: list[str] = []
    good: list[tuple[int, list[str]]] = []
    for line, row in data:
        if len(row) != len(header):
            skipped.append(f"line {line}: {len(row)} values, the header has {len(header)} columns")
            continue
        bad = None
        for i, n in numeric:
            try:
                value = float(row[i])
            except ValueError:
                bad = f"line {line}, column {header[i]}: {row[i]!r} is not a number"
                break
            if not math.isfinite(value):
                bad = f"line {line}, column {header[i]}: {row[i]!r} is not a finite number"
                break
        if bad:
            skipped.append(bad)
            continue
        good.append((line, row))
    if not good:
        shown = "; ".join(skipped[:max_reported]) or "no data rows after the header"
        raise ValueError(f"{path}: no valid row ({len(skipped)} skipped: {shown})")
    if skipped:
        more = f" and {len(skipped) - max_reported} more" if len(skipped) > max_reported else ""
        log.warning("%s: skipped %d row(s): %s%s", path, len(skipped), "; ".join(skipped[:max_reported]), more)
    if unknown:
        log.warning("%s: ignored column(s) that are not ARKit blendshapes or Live Link Face rotations: %s", path, ", ".join(unknown))

    T = len(good)
    values = np.zeros((T, 52), dtype=np.float32)
    present = [n for n in ARKIT_NAMES if n in seen]
    for n in present:
        values[:, ARKIT_NAMES.index(n)] = [float(r[seen[n]]) for _, r in good]
    outside = int(((values < 0) | (values > 1)).sum())
    if outside:
        log.warning("%s: clipped %d blendshape value(s) outside [0, 1]", path, outside)
        values = np.clip(values, 0.0, 1.0)
    scale = ANGLE_UNITS[angles]
    rotations: dict[str, np.ndarray] = {}
    for group, cols in (("head", ROTATION_NAMES[0:3]), ("left_eye", ROTATION_NAMES[3:6]), ("right_eye", ROTATION_NAMES[6:9])):
        have = [c for c in cols if c in seen]
        if not have:
            continue
        arr = np.zeros((T, 3), dtype=np.float32)
        for j, c in enumerate(cols):
            if c in seen:
                arr[:, j] = [float(r[seen[c]]) * scale for _, r in good]
        if mirror:
            arr[:, [0, 2]] *= -1  # a mirrored capture turns and tilts the other way
        rotations[group] = arr
    fps = None
    if "Timecode" in seen:
        try:
            fps = fps_from_timecodes([r[seen["Timecode"]] for _, r in good])
        except ValueError as exc:
            log.warning("%s: %s; the frame rate is not derived from the timecodes", path, exc)
    elif "time" in seen or "timestamp" in seen:
        t = np.array([float(r[seen["time" if "time" in seen else "timestamp"]]) for _, r in good])
        dt = np.diff(t)
        dt = dt[dt > 0]
        fps = round(float(1.0 / np.median(dt)), 3) if len(dt) else None
    return ArkitCapture(values, rotations, fps, present, skipped, unknown, outside, str(path))


def arkit_sequence(capture: ArkitCapture, head: HeadModel, basis: ArkitBasis | None = None):
    """A capture -> :class:`zero1toa.progressive.sequences.ExpressionSequence` for ``head``.

    Expressions and jaw through :func:`arkit_basis`; the head rotation on the neck joint; eyes
    from the file's eye rotations when it has them, else from the ``eyeLook*`` coefficients.
    """
    from ..progressive.sequences import ExpressionSequence

    basis = basis or arkit_basis(head)
    values = torch.from_numpy(capture.values)
    expr, jaw, eyes = basis.apply(values)
    T = len(capture)
    pose = HeadPose.neutral(T)
    pose.jaw = jaw.float()
    pose.eyes = eyes.float()
    rot = {k: torch.from_numpy(v).float() for k, v in capture.rotations.items()}
    if "head" in rot:
        pose.neck = euler_to_axis_angle(rot["head"][:, 0], rot["head"][:, 1], rot["head"][:, 2]).float()
    for slot, key in ((0, "left_eye"), (1, "right_eye")):
        if key in rot:
            pose.eyes[:, 3 * slot : 3 * slot + 3] = euler_to_axis_angle(rot[key][:, 0], rot[key][:, 1], rot[key][:, 2]).float()
    return ExpressionSequence(expr.float().numpy(), pose.jaw.numpy().copy(), pose)


def load_arkit_sequence(path: Path, head: HeadModel, angles: str = "halfturns", mirror: bool = False):
    """:func:`load_arkit_csv` then :func:`arkit_sequence`; returns (sequence, capture)."""
    capture = load_arkit_csv(path, angles=angles, mirror=mirror)
    return arkit_sequence(capture, head), capture


def viewer_mapping(head: HeadModel, angles: str = "halfturns") -> tuple[dict, dict[str, np.ndarray]]:
    """What a viewer needs to play a capture as :func:`load_arkit_sequence` poses it on ``head``:
    (JSON metadata, arrays ``arkit_expression [52, E]``, ``arkit_jaw [52, 3]``, ``arkit_eyes [52, 6]``).

    Why all of it: the page (``zero1toa view``) reads a dropped CSV itself, so it must normalise
    column names (the :func:`_key` table, precomputed here; the page ports ``_key``), tell an
    ARKit file from the project's own format like :func:`zero1toa.progressive.sequences.is_arkit_csv`
    (the own format's column names), scale and compose the rotations, and know which pose slot
    each rotation group drives. The README ("The animated package") documents the block.
    """
    from ..head.rig_expressions import EXPRESSION_NAMES
    from ..progressive.sequences import POSE_GROUPS

    if angles not in ANGLE_UNITS:
        raise ValueError(f"angles must be one of {', '.join(ANGLE_UNITS)}, got {angles!r}")
    basis = arkit_basis(head)
    groups = (("head", "neck", 3), ("left_eye", "eye_left", 9), ("right_eye", "eye_right", 12))
    meta = {
        "columns": list(ARKIT_NAMES),
        "rotation_columns": list(ROTATION_NAMES),
        "extra_columns": list(EXTRA_NAMES),
        "keys": dict(_CANONICAL),  # _key(name) -> canonical name
        "own_columns": sorted(set(sum(POSE_GROUPS.values(), ())) | {"frame", "time"} | set(EXPRESSION_NAMES)),
        "own_prefix": "expr_",
        "arrays": {"expression": "arkit_expression", "jaw": "arkit_jaw", "eyes": "arkit_eyes"},
        "head": basis.head,
        "unmapped": list(basis.unmapped),
        "approximate": basis.approximate,
        "clip": [0.0, 1.0],
        "rotation": {
            "units": angles,
            "unit_scale": dict(ANGLE_UNITS),  # radians per stored unit
            "convention": "R = Ry(yaw) Rx(-pitch) Rz(roll) -> axis-angle; head frame +x subject's left, +y up, +z out of the face",
            "groups": {
                g: {"columns": list(ROTATION_NAMES[3 * k : 3 * k + 3]), "joint": joint, "pose_offset": off}
                for k, (g, joint, off) in enumerate(groups)
            },
            "eyes_fallback": "an eye whose group has no column in the file is turned by values @ arkit_eyes (eyeLook*)",
        },
        "timecode_rates": list(_STANDARD_RATES),
    }
    arrays = {
        "arkit_expression": basis.expression.float().numpy().astype(np.float32),
        "arkit_jaw": basis.jaw.float().numpy().astype(np.float32),
        "arkit_eyes": basis.eyes.float().numpy().astype(np.float32),
    }
    return meta, arrays


def mapping_table() -> list[tuple[str, str]]:
    """(ARKit name, what it drives) for all 52 shapes: the README's table."""
    out = []
    for name in ARKIT_NAMES:
        parts = [f"{rig} x{w:g}" for rig, w in ARKIT_TO_RIG.get(name, [])]
        if name in ARKIT_TO_JAW:
            parts.append(f"jaw yaw {ARKIT_TO_JAW[name][1]:+g} rad")
        if name in ARKIT_TO_EYES:
            slot, aa = ARKIT_TO_EYES[name]
            axis = "xyz"[int(np.argmax(np.abs(aa)))]
            parts.append(f"{'left' if slot == 0 else 'right'} eye {axis} {max(aa, key=abs):+g} rad")
        out.append((name, ", ".join(parts) or "-"))
    return out


__all__ = [
    "ARKIT_NAMES",
    "ARKIT_TO_EYES",
    "ARKIT_TO_JAW",
    "ARKIT_TO_RIG",
    "ArkitBasis",
    "ArkitCapture",
    "arkit_basis",
    "arkit_sequence",
    "canonical_name",
    "euler_to_axis_angle",
    "fps_from_timecodes",
    "is_arkit_header",
    "load_arkit_csv",
    "load_arkit_sequence",
    "mapping_table",
    "parse_timecode",
    "viewer_mapping",
]
