"""``zero1toa animate``: drive an avatar with a preset, an expression file or a video -> MP4/GIF.

SOURCE (``drive``) is one of:

- a **preset** name (:data:`zero1toa.animate.drive.PRESETS`: talk, smile, blink, surprise,
  turntable, expressions), built from the head's named expressions; ``frames`` sets its length
  (default 48). Presets start from the neutral expression.
- an **expression/pose file**, ``.csv`` or ``.npz``, one row per frame, in the format of
  :mod:`zero1toa.progressive.sequences` (expression columns by name or ``expr_i``, optional
  ``rotation_*``, ``neck_*``, ``jaw_*``, ``eye_*``, ``translation_*`` pose columns). Values are
  absolute: 0 is the head's neutral.
- an **ARKit capture** (a Live Link Face style ``.csv``: ``Timecode``, 52 ARKit blendshape
  columns, head and eye rotations), recognised by its columns and mapped onto the head's
  expressions and neck/jaw/eye pose by :mod:`zero1toa.animate.arkit`; its frame rate comes from
  the timecodes when they tell it.
- a **driving video** (``.mp4``, ``.mov``, ``.avi``, ``.mkv``, ``.webm``, ``.gif``, ...): the
  shipped face-mesh model tracks it and the head's expression and pose are fitted per frame
  with temporal smoothing (:mod:`zero1toa.animate.tracker`); the fitted sequence is written as
  CSV beside the output (``<out stem>.tracked.csv``) so it can be edited and reused.

CHECKPOINT is an avatar folder (``avatar.json`` + ``gaussians.safetensors`` + ``head/``), a round
folder holding ``avatar/``, or a run folder (the last round of its schedule, ``run_config.json``;
while that round is not trained yet, or without a record, the newest round's avatar).

**Camera.** Animations are seen from the portrait's own view (the reference camera, orbited by
``view_yaw_deg`` / the turntable's yaw about the head's centre line), so a neutral frame looks
like the photo. The reference camera is found, in order: ``reference_camera`` recorded in
``avatar.json`` (when the round that wrote it stored it), ``<run>/head/camera.json`` when the
avatar lies inside a run folder, else a frontal camera derived from the head alone
(:func:`frontal_camera`: 20 deg field of view, looking at the head's centre line from the front,
framed like the preprocessing crop: the face's height is 1/2.2 of the image). The result says
which one was used.

Output: MP4 (H.264, yuv420p, via imageio-ffmpeg) or GIF, chosen by ``out``'s suffix, optionally a
GIF beside an MP4. Frames are rendered in chunks and streamed to the encoder, so memory does not
grow with the video's length; files appear atomically (temp name, then rename).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..head.base import HeadModel
from ..render.camera import Cameras
from .drive import PRESETS, DriveSequence, preset_sequence
from .tracker import VIDEO_SUFFIXES, TrackerConfig, TrackResult, track_video

log = logging.getLogger("zero1toa.animate")

SEQUENCE_SUFFIXES = (".csv", ".npz")


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class ResolvedCheckpoint:
    """Where an avatar is, and the run folder around it (if any)."""

    avatar_dir: Path
    run_dir: Path | None


def _round_index(folder: Path) -> int:
    try:
        return int(folder.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _planned_final_round(run_dir: Path) -> str | None:
    """The last round of the run's own schedule (``run_config.json``), e.g. ``temporal/round_2``.

    A folder can hold rounds of an earlier, longer schedule (a run re-made with fewer rounds
    leaves them behind): the run's avatar is its schedule's last round, not the highest number.
    """
    from ..config import from_dict
    from ..dag import final_round
    from ..utils.io import read_json

    path = run_dir / "run_config.json"
    if not path.is_file():
        return None
    try:
        return final_round(from_dict(read_json(path)["config"])).folder
    except Exception as exc:  # an unreadable or older record: fall back to the newest round
        log.debug("%s: no round plan (%s)", path, exc)
        return None


def find_final_avatar(run_dir: Path) -> Path:
    """The run's final avatar: its schedule's last round (``run_config.json``) when that round is
    trained; otherwise (no record, or a run still under way) the newest round's avatar: the last
    temporal round with an avatar, else the last spatial one (all spatial rounds run first)."""
    run_dir = Path(run_dir)
    planned = _planned_final_round(run_dir)
    if planned is not None and (run_dir / planned / "avatar" / "avatar.json").is_file():
        return run_dir / planned / "avatar"
    for stage in ("temporal", "spatial"):
        rounds = [p.parent.parent for p in (run_dir / stage).glob("round_*/avatar/avatar.json")]
        if rounds:
            newest = max(rounds, key=_round_index) / "avatar"
            if planned is not None:
                log.warning("%s: its final round %s has no avatar yet; using the newest one, %s", run_dir, planned, newest.parent.relative_to(run_dir))
            return newest
    raise FileNotFoundError(
        f"{run_dir} holds no trained avatar (looked for temporal/round_*/avatar and spatial/round_*/avatar): run a round first"
    )


def _looks_like_run(folder: Path) -> bool:
    return (folder / "head" / "camera.json").exists() or (folder / "spatial").is_dir() or (folder / "temporal").is_dir()


def resolve_checkpoint(path: Path) -> ResolvedCheckpoint:
    """CHECKPOINT (avatar folder, round folder or run folder) -> the avatar folder and its run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give an avatar folder, a round folder or a run folder)")
    if (path / "avatar.json").exists():
        avatar = path
    elif (path / "avatar" / "avatar.json").exists():
        avatar = path / "avatar"
    elif path.is_dir() and _looks_like_run(path):
        avatar = find_final_avatar(path)
    else:
        raise FileNotFoundError(
            f"{path} is not an avatar folder (no avatar.json), a round folder (no avatar/) or a run folder (no head/, spatial/, temporal/)"
        )
    run = None
    for parent in list(avatar.resolve().parents)[:4]:  # <run>/<stage>/round_k/avatar: 3 levels up
        if (parent / "head" / "camera.json").exists():
            run = parent
            break
    return ResolvedCheckpoint(avatar, run)


# ----------------------------------------------------------------------------- cameras


def frontal_camera(head: HeadModel, size: int = 512, fov_deg: float = 20.0, margin: float = 2.2) -> Cameras:
    """A frontal camera framing the head like the preprocessing crop, from the head alone.

    Looks along -z at the head's centre line (:func:`orbit_target`) from the distance at which
    the face (forehead 10 to chin 152, or the landmarks' height) spans 1/``margin`` of the image.
    """
    from ..head import topology as T
    from ..progressive.schedules import orbit_target
    from ..render.camera import focal_from_fov, orbit_cameras

    with torch.no_grad():
        lmk = head.landmarks(head.neutral_vertices()[None])[0]
    ids = head.landmark_embedding.indices.tolist()
    if T.FOREHEAD_TOP in ids and T.CHIN in ids:
        face_h = float((lmk[ids.index(T.FOREHEAD_TOP)] - lmk[ids.index(T.CHIN)]).norm())
    else:
        face_h = float(lmk[:, 1].max() - lmk[:, 1].min())
    distance = 0.5 * margin * face_h / math.tan(math.radians(fov_deg) / 2)
    target = orbit_target(head)
    return orbit_cameras([0.0], [0.0], distance, target, focal_from_fov(fov_deg, size), size, size)


def reference_view(resolved: ResolvedCheckpoint, head: HeadModel, info: dict) -> tuple[Cameras, str]:
    """The avatar's reference camera and where it came from (see the module docstring)."""
    if isinstance(info.get("reference_camera"), dict):
        return Cameras.from_dict(info["reference_camera"]), "avatar.json reference_camera"
    if resolved.run_dir is not None:
        from ..utils.io import read_json

        path = resolved.run_dir / "head" / "camera.json"
        return Cameras.from_dict(read_json(path)), str(path)
    log.warning("%s: no reference camera stored with the avatar and no run folder around it; using a frontal camera", resolved.avatar_dir)
    return frontal_camera(head), "frontal camera derived from the head (no reference camera found)"


# ----------------------------------------------------------------------------- drives


@dataclass
class ResolvedDrive:
    sequence: DriveSequence
    kind: str  # preset | csv | npz | arkit | video
    source: str
    fps: float | None  # the source's own rate (videos, ARKit timecodes), else None
    track: TrackResult | None = None
    info: dict | None = None  # what reading the source noted (ARKit: skipped rows, unknown columns, clipping)


def drive_kind(drive: str | Path) -> str:
    """preset | csv | npz | video for a SOURCE string (raises naming the accepted kinds)."""
    text = str(drive)
    if text in PRESETS:
        return "preset"
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in SEQUENCE_SUFFIXES or suffix in VIDEO_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"driving file {path} does not exist")
        return suffix[1:] if suffix in SEQUENCE_SUFFIXES else "video"
    raise ValueError(
        f"unknown drive {text!r}: use a preset ({', '.join(PRESETS)}), an expression file (.csv, .npz) "
        f"or a driving video ({', '.join(VIDEO_SUFFIXES)})"
    )


def resolve_drive(
    drive: str | Path,
    head: HeadModel,
    frames: int | None = None,
    tracker: TrackerConfig | None = None,
    progress: bool = False,
    arkit_angles: str = "halfturns",
) -> ResolvedDrive:
    """SOURCE -> per-frame expressions and poses. ``frames``: a preset's length (default 48), or at
    most this many frames of a file or video. ``arkit_angles``: how an ARKit capture stores its
    rotations (:data:`zero1toa.animate.arkit.ANGLE_UNITS`)."""
    kind = drive_kind(drive)
    if kind == "preset":
        seq = preset_sequence(str(drive), head, frames or 48)
        return ResolvedDrive(seq, kind, str(drive), None)
    path = Path(drive)
    if kind == "csv":
        from ..progressive.sequences import is_arkit_csv

        if is_arkit_csv(path):
            from .arkit import load_arkit_sequence

            loaded, capture = load_arkit_sequence(path, head, angles=arkit_angles)
            n = len(loaded) if frames is None else min(len(loaded), int(frames))
            seq = DriveSequence(torch.from_numpy(loaded.expressions[:n]).float(), loaded.pose[:n], np.zeros(n), path.stem)
            return ResolvedDrive(seq, "arkit", str(path), capture.fps, info=capture.info())
    if kind in ("csv", "npz"):
        from ..progressive.sequences import load_expression_sequence

        loaded = load_expression_sequence(path, head)
        n = len(loaded) if frames is None else min(len(loaded), int(frames))
        seq = DriveSequence(torch.from_numpy(loaded.expressions[:n]).float(), loaded.pose[:n], np.zeros(n), path.stem)
        return ResolvedDrive(seq, kind, str(path), None)
    cfg = tracker or TrackerConfig()
    if frames is not None:
        cfg = replace(cfg, max_frames=int(frames))
    track = track_video(path, head, cfg, progress=progress)
    seq = DriveSequence(torch.from_numpy(track.expressions).float(), track.pose, np.zeros(len(track)), path.stem)
    return ResolvedDrive(seq, kind, str(path), track.fps, track)


# ----------------------------------------------------------------------------- video output


class VideoSink:
    """Streams uint8 frames [H, W, 3] into an MP4 (H.264) or GIF that appears atomically.

    The temporary file (:func:`zero1toa.utils.io.atomic_path`) keeps the final suffix, which
    imageio picks its writer by.
    """

    def __init__(self, path: Path, fps: float) -> None:
        import contextlib

        import imageio.v2 as imageio

        from ..utils.io import atomic_path

        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in (".mp4", ".gif"):
            raise ValueError(f"{self.path}: animations are written as .mp4 or .gif")
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_path(self.path))
        self.count = 0
        try:
            if self.suffix == ".mp4":
                self.writer = imageio.get_writer(
                    self.tmp, format="FFMPEG", fps=float(fps), codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p"
                )
            else:
                self.writer = imageio.get_writer(self.tmp, format="GIF", mode="I", duration=1000.0 / float(fps), loop=0)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def append(self, frames: np.ndarray) -> None:
        for frame in frames:
            if self.suffix == ".mp4" and (frame.shape[0] % 2 or frame.shape[1] % 2):
                # yuv420p needs even sizes; pad by one edge pixel rather than rescale
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            self.writer.append_data(frame)
            self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        self.writer.close()
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop the partial file; ``path`` keeps whatever it held before."""
        try:
            self.writer.close()
        except Exception:  # the writer may already be broken; the temp file goes regardless
            pass
        error = RuntimeError("animation aborted")
        self._stack.__exit__(RuntimeError, error, None)


def _to_uint8(rgb: Tensor) -> np.ndarray:
    """[F, 3, H, W] in [0, 1] -> [F, H, W, 3] uint8."""
    return (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but CUDA is not available")
    return torch.device(name)


# ----------------------------------------------------------------------------- animate


def animate_avatar(
    checkpoint: Path,
    drive: str | Path,
    out: Path,
    resolution: int = 256,
    fps: float | None = None,
    frames: int | None = None,
    *,
    gif: bool = False,
    background: float = 1.0,
    view_yaw_deg: float = 0.0,
    view_elevation_deg: float = 0.0,
    device: str = "auto",
    tracker: TrackerConfig | None = None,
    chunk: int = 8,
    progress: bool = True,
    arkit_angles: str = "halfturns",
) -> dict:
    """Render the avatar driven by ``drive`` (see the module docstring) into ``out``.

    ``fps``: output rate (default: the driving video's, else 24). ``frames``: a preset's length
    or a cap on a file/video. ``gif``: also write ``out`` with a .gif suffix (when ``out`` is an
    MP4). Returns a summary (paths, frame count, size, fps, camera source, timings).
    """
    from ..avatar.checkpoint import load_avatar
    from ..avatar.render import render_avatar
    from ..progressive.schedules import orbit_from_reference, orbit_target

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out {out}: animations are written as .mp4 or .gif")
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    resolved = resolve_checkpoint(Path(checkpoint))
    gaussians, head, info = load_avatar(resolved.avatar_dir)
    ref_camera, camera_source = reference_view(resolved, head, info)
    t_load = time.perf_counter()

    tracked_csv = None
    drv = resolve_drive(drive, head, frames, tracker, progress, arkit_angles=arkit_angles)
    if drv.track is not None:
        tracked_csv = drv.track.save_csv(out.with_name(out.stem + ".tracked.csv"), head)
    seq = drv.sequence
    T = len(seq)
    rate = float(fps) if fps else (drv.fps or 24.0)
    t_drive = time.perf_counter()

    dev = _device(device)
    gaussians = gaussians.to(dev)
    target = orbit_target(head)
    yaws = np.asarray(seq.yaws_deg, dtype=np.float64) + view_yaw_deg
    cams = orbit_from_reference(ref_camera, yaws, np.full(T, view_elevation_deg), target, resolution)
    sinks = [VideoSink(out, rate)]
    if gif and out.suffix.lower() != ".gif":
        sinks.append(VideoSink(out.with_suffix(".gif"), rate))
    steps = range(0, T, max(1, chunk))
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc=f"animate {drv.kind}", unit="frame", leave=False, dynamic_ncols=True, mininterval=1.0)
    try:
        for s in steps:
            sl = slice(s, min(T, s + max(1, chunk)))
            with torch.no_grad():
                rendered = render_avatar(gaussians, head, cams[sl], seq.expressions[sl], seq.pose[sl], background)
            frames_u8 = _to_uint8(rendered.rgb)
            for sink in sinks:
                sink.append(frames_u8)
            if progress:
                bar.update(frames_u8.shape[0])
        written = [sink.close() for sink in sinks]
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    finally:
        if progress:
            bar.close()
    t_render = time.perf_counter()
    size = resolution + resolution % 2 if out.suffix.lower() == ".mp4" else resolution  # yuv420p pads odd sizes
    return {
        "video": str(written[0]),
        "gif": next((str(w) for w in written if w.suffix.lower() == ".gif"), None),
        "frames": T,
        "fps": rate,
        "width": size,
        "height": size,
        "drive": {"kind": drv.kind, "source": drv.source, "name": seq.name},
        "tracked_csv": str(tracked_csv) if tracked_csv else None,
        "tracking": drv.track.info if drv.track is not None else None,
        "arkit": drv.info if drv.kind == "arkit" else None,
        "avatar": str(resolved.avatar_dir),
        "camera": camera_source,
        "num_gaussians": gaussians.num_gaussians,
        "device": str(dev),
        "seconds": {
            "load": round(t_load - t0, 3),
            "drive": round(t_drive - t_load, 3),
            "render_encode": round(t_render - t_drive, 3),
            "total": round(t_render - t0, 3),
        },
    }

