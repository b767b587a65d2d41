"""The evaluate node: every metric, video, contact sheet and plot of one run, in ``<run>/evaluate/``.

Output folder (written atomically: a crash leaves the previous evaluation, never half of one)::

    metrics.json            flat numbers (or null), + "reasons" for nulls, + "details" (per view/frame values)
    summary.json            the flat numbers alone (DVC flattens "details" into dozens of columns;
                            declare this one as dvc.yaml ``metrics:`` for a tidy ``dvc exp show``)
    turntable.mp4           yaw 0..360 at the photo's elevation and expression
    expressions.mp4         the "expressions" drive preset at the photo's view
    contact_sheet.png       views (columns) x expressions (rows), the CLIP score renders
    plots/loss_curves.png   loss per round over iterations (from the round manifests)
    plots/metrics_per_round.png
    plots/loss_curves.csv, plots/metrics_per_round.csv, plots/plots.json   data for `dvc plots`
    manifest.json           node "evaluate": params, input/output digests, code version, timings

A metric that cannot be computed (no CLIP weights, no face found in any render, ...) is null
with a one-line reason in ``reasons`` and a log line; the others are still reported.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import EvaluateConfig
from ..utils.io import atomic_dir, write_json_atomic
from ..identity import code_digest
from ..utils.manifest import Manifest, Timer, digest_path, upstream_digest
from . import metrics as M

log = logging.getLogger("zero1toa.evaluate")

#: The flat metric keys every metrics.json holds (null when unavailable), in display order.
CORE_KEYS = (
    "psnr_reference",
    "ssim_reference",
    "landmark_error",
    "landmark_detected_fraction",
    "mouth_open_render",
    "mouth_open_driving",
    "face_detection_rate",
    "temporal_change_expression",
    "temporal_jitter_expression",
    "temporal_change_camera",
    "temporal_jitter_camera",
    "determinism_max_abs_diff",
    "fps_render",
    "fps_animate_render",
    "identity_distance_0",
    "identity_distance_30",
    "identity_distance_60",
    "identity_distance_90",
    "identity_found_fraction",
    "dataset_consistency_final",
    "dataset_refresh_change_final",
)


class MetricSheet:
    """Collects flat metrics, reasons for nulls and details; logs every unavailable metric."""

    def __init__(self) -> None:
        self.values: dict[str, float | int | None] = {}
        self.reasons: dict[str, str] = {}
        self.details: dict[str, Any] = {}

    def set(self, key: str, value: Any, reason: str = "") -> None:
        if value is not None and isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            reason = reason or f"not finite ({value})"
            value = None
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        self.values[key] = value
        if value is None:
            self.reasons[key] = reason or "unavailable"
            log.warning("metric %s unavailable: %s", key, self.reasons[key])
        else:
            self.reasons.pop(key, None)

    def fail(self, keys: tuple[str, ...], reason: str) -> None:
        for k in keys:
            self.set(k, None, reason)

    def guarded(self, keys: tuple[str, ...], label: str, fn: Callable[[], None]) -> None:
        """Run one metric group; an unexpected error nulls its keys (with the error) instead of
        losing the whole evaluation."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported, logged with traceback
            log.warning("%s failed:\n%s", label, traceback.format_exc())
            self.fail(tuple(k for k in keys if self.values.get(k) is None), f"{label} failed: {type(exc).__name__}: {exc}")

    def to_dict(self) -> dict[str, Any]:
        return {**self.values, "reasons": dict(self.reasons), "details": self.details}


def find_avatar_dir(run_dir: Path, avatar_folder: str | Path) -> Path:
    """``avatar_folder`` is a round folder (``temporal/round_2``) or an avatar folder itself."""
    p = Path(avatar_folder)
    p = p if p.is_absolute() else Path(run_dir) / p
    if (p / "avatar.json").is_file():
        return p
    if (p / "avatar" / "avatar.json").is_file():
        return p / "avatar"
    raise FileNotFoundError(f"no avatar in {p} (expected {p / 'avatar' / 'avatar.json'}): run that round first")


def latest_round_folder(run_dir: Path) -> str:
    """The last finished round of a run folder (temporal rounds after spatial ones)."""
    run_dir = Path(run_dir)
    for stage in ("temporal", "spatial"):
        rounds = []
        for d in (run_dir / stage).glob("round_*"):
            if (d / "avatar" / "avatar.json").is_file() and d.name[6:].isdigit():
                rounds.append((int(d.name[6:]), d))
        if rounds:
            return str(max(rounds)[1].relative_to(run_dir))
    raise FileNotFoundError(f"{run_dir} holds no finished round (spatial/round_k/avatar or temporal/round_k/avatar)")


def round_manifests(run_dir: Path) -> list[dict]:
    """Round manifests in DAG order (spatial_1.., then temporal_1..)."""
    from ..runfolder import read_run_manifests

    found = read_run_manifests(run_dir)
    rounds = []
    for name, man in found.items():
        stage, _, k = name.partition("_")
        if stage in ("spatial", "temporal") and k.isdigit():
            rounds.append((0 if stage == "spatial" else 1, int(k), man))
    return [m for _, _, m in sorted(rounds, key=lambda r: (r[0], r[1]))]


# ----------------------------------------------------------------------------- face analysis


def _upscale_factor(resolution: int, target: int) -> int:
    return max(1, math.ceil(target / max(1, resolution)))


def _to_face_image(rgb: torch.Tensor, k: int) -> np.ndarray:
    """One render [3, H, W] -> uint8 [kH, kW, 3] for the face models (cubic upscale)."""
    import cv2

    img = (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if k > 1:
        img = cv2.resize(img, (img.shape[1] * k, img.shape[0] * k), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(img)


def _detect_landmarks(runner, rgb: torch.Tensor, k: int) -> np.ndarray | None:
    """468 mesh points [468, 2] in render pixels, or None when no face is found."""
    from ..preprocess.errors import PreprocessError
    from ..preprocess.facemesh import find_face

    from .metrics import quiet_photo_warnings

    try:
        with quiet_photo_warnings():
            res = find_face(_to_face_image(rgb, k), runner=runner, min_face_px=0.0, with_iris=False)
    except PreprocessError:
        return None
    return res.landmarks.points[:, :2].astype(np.float64) / k


def _driving_landmarks(scene, cameras, expressions: torch.Tensor, jaws: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """The head's landmarks projected by the render cameras: ([F, L, 2] pixels, mesh indices)."""
    from ..head.base import HeadPose
    from ..render.camera import project_points

    pose = HeadPose.neutral(expressions.shape[0])
    pose.jaw = jaws.float().clone()
    with torch.no_grad():
        verts = scene.head.animate(expressions.float(), pose)
        lmk = scene.head.landmarks(verts)  # [F, L, 3]
    uv, _ = project_points(lmk, cameras)
    return uv.numpy().astype(np.float64), scene.head.landmark_embedding.indices.tolist()


# ----------------------------------------------------------------------------- metric groups


def _fidelity(sheet: MetricSheet, scene, reference, cfg: EvaluateConfig) -> None:
    """PSNR / SSIM at the photo's view and expression, inside the portrait mask."""
    res = cfg.resolution
    render = scene.render_still(scene.cameras([0.0]), scene.reference_expression, scene.reference_jaw)[0]
    ref = M.area_downsample(reference.image, res)
    mask = M.area_downsample(reference.mask[None].float(), res)[0] >= 0.5  # [res, res]
    if not bool(mask.any()):
        sheet.fail(("psnr_reference", "ssim_reference"), "the preprocessing mask is empty at the evaluation resolution")
        return
    sheet.set("psnr_reference", M.psnr(render, ref, mask))
    sheet.set("ssim_reference", M.ssim(render, ref, mask))
    sheet.details["fidelity"] = {"resolution": res, "mask_fraction": float(mask.float().mean()), "view": "reference", "expression": "reference"}


def _expression_accuracy(sheet: MetricSheet, scene, runner, cfg: EvaluateConfig) -> None:
    from ..animate.drive import preset_sequence

    res = cfg.resolution
    k = _upscale_factor(res, cfg.face_analysis_size)
    seq = preset_sequence(cfg.expression_sequence, scene.head, cfg.expression_frames, scene.reference_expression)
    n = len(seq)
    cams = scene.cameras(seq.yaws_deg)
    jaws = scene.reference_jaw[None] + seq.pose.jaw
    renders = scene.render(cams, seq.expressions, jaws)
    driving, idx = _driving_landmarks(scene, cams, seq.expressions, jaws)
    rows = [i for i, m in enumerate(idx) if 0 <= m < 468]
    mesh_ids = [idx[i] for i in rows]
    if M.RIGHT_EYE_OUTER not in mesh_ids or M.LEFT_EYE_OUTER not in mesh_ids:
        sheet.fail(("landmark_error", "landmark_detected_fraction"), f"the head's landmark embedding lacks the eye corners {M.RIGHT_EYE_OUTER}/{M.LEFT_EYE_OUTER} needed to normalise")
        return
    r_eye, l_eye = mesh_ids.index(M.RIGHT_EYE_OUTER), mesh_ids.index(M.LEFT_EYE_OUTER)
    errors: list[float | None] = []
    for f in range(n):
        pts = _detect_landmarks(runner, renders[f], k)
        if pts is None:
            errors.append(None)
            continue
        errors.append(M.normalised_landmark_error(pts[mesh_ids], driving[f][rows], r_eye, l_eye))
    found = [e for e in errors if e is not None]
    sheet.set("landmark_detected_fraction", len(found) / n)
    sheet.set("landmark_error", float(np.mean(found)) if found else None, "" if found else f"no face found in any of the {n} '{cfg.expression_sequence}' renders")
    sheet.details["expression_accuracy"] = {
        "sequence": cfg.expression_sequence,
        "frames": n,
        "landmarks_compared": len(rows),
        "normalisation": "inter-ocular distance (mesh 33-263) of the driving landmarks",
        "face_image_upscale": k,
        "per_frame_error": [None if e is None else round(e, 6) for e in errors],
    }


def _mouth_opening(sheet: MetricSheet, scene, runner, cfg: EvaluateConfig) -> None:
    """Lip gap (13-14 / IOD) in renders of neutral vs jaw_open, and the same on the driving mesh."""
    k = _upscale_factor(cfg.resolution, cfg.face_analysis_size)
    cam = scene.cameras([0.0])
    out: dict[str, Any] = {}
    gaps_r, gaps_d = {}, {}
    for name in ("neutral", "jaw_open"):
        e, j = scene.preset(name)
        img = scene.render_still(cam, e, j)[0]
        driving, idx = _driving_landmarks(scene, cam, e[None], j[None])
        pos = {m: i for i, m in enumerate(idx)}
        needed = (M.UPPER_LIP_INNER, M.LOWER_LIP_INNER, M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER)
        if all(m in pos for m in needed):
            d = driving[0]
            gaps_d[name] = M.lip_gap(d[[pos[m] for m in needed]], 0, 1, 2, 3)
        pts = _detect_landmarks(runner, img, k)
        if pts is not None:
            gaps_r[name] = M.lip_gap(pts, M.UPPER_LIP_INNER, M.LOWER_LIP_INNER, M.RIGHT_EYE_OUTER, M.LEFT_EYE_OUTER)
    out["render_lip_gap"] = gaps_r
    out["driving_lip_gap"] = gaps_d
    if len(gaps_r) == 2:
        sheet.set("mouth_open_render", gaps_r["jaw_open"] - gaps_r["neutral"])
    else:
        sheet.set("mouth_open_render", None, f"no face found in the {'/'.join(n for n in ('neutral', 'jaw_open') if n not in gaps_r)} render")
    if len(gaps_d) == 2:
        sheet.set("mouth_open_driving", gaps_d["jaw_open"] - gaps_d["neutral"])
    else:
        sheet.set("mouth_open_driving", None, "the head's landmark embedding lacks the lip/eye points 13, 14, 33, 263")
    out["meaning"] = "lip gap (mesh 13-14) / inter-ocular distance, jaw_open minus neutral; the render should open about as much as the driving mesh"
    sheet.details["mouth_opening"] = out


def _detection_sweep(sheet: MetricSheet, scene, runner, cfg: EvaluateConfig) -> None:
    k = _upscale_factor(cfg.resolution, cfg.face_analysis_size)
    yaws = list(cfg.sweep_yaw_deg)
    renders = scene.render_still(scene.cameras(yaws), scene.reference_expression, scene.reference_jaw)
    rate, flags = M.detection_rate([_to_face_image(r, k) for r in renders], runner)
    sheet.set("face_detection_rate", rate if yaws else None, "" if yaws else "evaluate.sweep_yaw_deg is empty")
    sheet.details["face_detection"] = {f"{y:+.0f}": bool(f) for y, f in zip(yaws, flags)}


def _temporal(sheet: MetricSheet, scene, cfg: EvaluateConfig) -> None:
    T = max(3, int(cfg.stability_frames))
    t = torch.linspace(0.0, 1.0, T)[:, None]
    e_s, j_s = scene.head.expression_preset("smile", 1.0)
    exprs = scene.reference_expression[None] + t * e_s.float()[None]
    jaws = scene.reference_jaw[None] + t * j_s.float()[None]
    cams = scene.cameras(np.zeros(T))
    a = scene.render(cams, exprs, jaws)
    b = scene.render(cams, exprs, jaws)
    sheet.set("temporal_change_expression", M.temporal_change(a))
    sheet.set("temporal_jitter_expression", M.temporal_jitter(a))
    sheet.set("determinism_max_abs_diff", M.max_abs_difference(a, b))
    yaws = np.linspace(0.0, cfg.stability_yaw_deg, T)
    c = scene.render_still(scene.cameras(yaws), scene.reference_expression, scene.reference_jaw)
    sheet.set("temporal_change_camera", M.temporal_change(c))
    sheet.set("temporal_jitter_camera", M.temporal_jitter(c))
    sheet.details["temporal"] = {
        "frames": T,
        "expression_ramp": "reference -> reference + smile (linear)",
        "expression_step_per_frame": 1.0 / (T - 1),
        "camera_ramp_deg": [0.0, cfg.stability_yaw_deg],
        "camera_step_deg_per_frame": cfg.stability_yaw_deg / (T - 1),
        "units": "mean |frame difference| over all pixels and channels, intensity in [0, 1], per frame step; jitter = mean |2nd difference| / mean |1st difference| (0 smooth, 2 flicker)",
        "per_step_change_expression": [round(float(v), 6) for v in M.frame_changes(a)],
        "per_step_change_camera": [round(float(v), 6) for v in M.frame_changes(c)],
    }


def _fps(sheet: MetricSheet, scene, cfg: EvaluateConfig, device: torch.device) -> None:
    from ..head.base import HeadPose
    from .fps import measure_fps

    pose = HeadPose.neutral(1)
    pose.jaw = scene.reference_jaw[None].float().clone()
    cam = scene.cameras([0.0], resolution=cfg.fps_resolution)
    res = measure_fps(scene.gaussians, scene.head, cam, scene.reference_expression, pose, cfg.fps_warmup, cfg.fps_repeats, device)
    sheet.set("fps_render", res["fps_render"])
    sheet.set("fps_animate_render", res["fps_animate_render"])
    sheet.details["fps"] = {k: v for k, v in res.items() if k not in ("fps_render", "fps_animate_render")}


def _identity(sheet: MetricSheet, scene, reference, cfg: EvaluateConfig) -> None:
    """dlib face-identity distance photo <-> renders per yaw (see evaluate/identity.py)."""
    from .identity import FaceIdentity, IdentityUnavailable, identity_sweep

    keys = tuple(k for k in CORE_KEYS if k.startswith("identity_"))
    try:
        identity = FaceIdentity()
    except IdentityUnavailable as exc:
        sheet.fail(keys, str(exc))
        return
    yaws = list(cfg.identity_yaw_deg)
    renders = scene.render_still(scene.cameras(yaws, resolution=cfg.identity_size), scene.reference_expression, scene.reference_jaw)
    images = {float(y): _to_face_image(r, 1) for y, r in zip(yaws, renders)}
    values, reasons, details = identity_sweep(identity, _to_face_image(reference.image, 1), images)
    for key in sorted(set(values) | set(keys)):
        sheet.set(key, values.get(key), reasons.get(key, "" if key in values else f"yaw {key.rsplit('_', 1)[-1]} is not in evaluate.identity_yaw_deg"))
    sheet.details["identity"] = {**details, "render_size": cfg.identity_size}


def _dataset_consistency(sheet: MetricSheet, run_dir: Path) -> None:
    from .consistency import run_consistency

    folders = [m["folder"] for m in round_manifests(run_dir)]
    rows = run_consistency(run_dir, folders)
    sheet.details["dataset_consistency"] = {
        "per_round": rows,
        "meaning": "mean |difference| (intensity 0..1) of frames showing the same view and expression: across clips (views) and before/after a refresh (refresh); 0 = consistent",
    }
    if not rows:
        sheet.fail(("dataset_consistency_final", "dataset_refresh_change_final"), "the run has no dataset version (SDS rounds write none)")
        return
    last = rows[-1]
    sheet.set("dataset_consistency_final", last["views"], last.get("views_reason", ""))
    sheet.set("dataset_refresh_change_final", last["refresh"], last.get("refresh_reason", ""))


def _heldout(sheet: MetricSheet, out: Path, scene, reference, cfg: EvaluateConfig) -> None:
    """Held-out views/expressions against the truth subject (ground-truth benchmark runs only)."""
    from ..bench.heldout import AvatarVsTruth, HeldoutSpec, comparison_sheet, heldout_metrics
    from ..bench.truth import TruthSubject

    truth = TruthSubject.load(Path(cfg.truth_dir))
    vs = AvatarVsTruth(scene.gaussians, scene.head, scene.reference_expression, scene.reference_jaw, truth, scene.background)
    spec = HeldoutSpec(cfg.resolution, cfg.heldout_yaw_step_deg, list(cfg.heldout_elevations_deg), list(cfg.heldout_expression_yaws_deg), scene.background)
    values, reasons, details, _ = heldout_metrics(vs, spec)
    for key, v in values.items():
        sheet.set(key, v, reasons.get(key, ""))
    sheet.details["heldout"] = details
    from .visuals import save_png

    save_png(out / "heldout.png", comparison_sheet(vs, [0.0, 60.0, 120.0, 180.0, -120.0, -60.0], cfg.resolution))


# ----------------------------------------------------------------------------- the node


#: Values that measure this machine's speed, not the avatar: they differ on every run, so the
#: evaluation's output digest leaves them out (the files keep them; MLflow and DVC show them).
MEASURED_TIMINGS = frozenset({"fps_render", "fps_animate_render", "fps"})


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in MEASURED_TIMINGS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def rounded(obj, digits: int = 10):
    """Floats to ``digits`` significant digits: the last bits of a float64 reduction are noise,
    and written they would make identical evaluations differ."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def output_digest_of(path: Path) -> str:
    """A file's digest for the manifest's ``outputs``: JSON files without measured timings.

    Two evaluations of the same avatar with the same settings get the same output digest, so
    ``zero1toa compare`` and lineage see them as the same result.
    """
    from ..utils.io import digest_obj, read_json

    if path.suffix == ".json":
        try:
            return digest_obj(_without_timings(read_json(path)))
        except ValueError:
            pass
    return digest_path(path)


def evaluate_run(run_dir: Path, avatar_folder: str, cfg: EvaluateConfig, seed: int) -> dict:
    """Evaluate the avatar in ``run_dir/avatar_folder`` -> ``run_dir/evaluate/``; returns the manifest dict."""
    from ..avatar.checkpoint import load_avatar
    from ..runfolder import load_reference
    from ..preprocess.facemesh import FaceMeshRunner
    from .clip_score import clip_metrics
    from .fps import resolve_device
    from .visuals import (
        EvalScene,
        expression_frames,
        grid_renders,
        grid_sheet,
        plot_loss_curves,
        plot_metrics_per_round,
        round_histories,
        save_png,
        save_video,
        turntable_frames,
        write_plot_data,
    )

    t_start = time.perf_counter()
    timer = Timer()
    run_dir = Path(run_dir)
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"evaluate.device must be auto, cpu or cuda, got {cfg.device!r}")
    device = resolve_device(cfg.device)
    avatar_dir = find_avatar_dir(run_dir, avatar_folder)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))

    with timer("load"):
        gaussians, head, info = load_avatar(avatar_dir)
        _, reference = load_reference(run_dir)
        gaussians = gaussians.to(device)
        scene = EvalScene(gaussians, head, reference.camera, reference.expression.float(), reference.jaw.float(), reference.target, cfg.resolution)
        runner = FaceMeshRunner(num_threads=2)
    with timer("warmup"):  # first render loads/builds the rasterizer: keep it out of the metric timings
        scene.render_still(scene.cameras([0.0], resolution=32), scene.reference_expression, scene.reference_jaw)

    sheet = MetricSheet()
    sheet.set("num_gaussians", gaussians.num_gaussians)
    sheet.set("resolution", cfg.resolution)
    yaws, exprs = list(cfg.clip_views_yaw_deg), list(cfg.clip_expressions)
    labels = [f"{e}@{y:+.0f}" for e in exprs for y in yaws]

    with atomic_dir(run_dir / "evaluate") as out:
        (out / "plots").mkdir()
        with timer("grid"):
            grid = grid_renders(scene, yaws, exprs)
            save_png(out / "contact_sheet.png", grid_sheet(grid, yaws, exprs))
        with timer("clip"):
            clip_keys = tuple(f"clip_{kind}_{k}" for k in cfg.clip_models for kind in ("score", "identity"))

            def clip_group() -> None:
                values, reasons, details = clip_metrics(grid, reference.image, cfg.caption, dict(cfg.clip_models), device, labels)
                for key, v in values.items():
                    sheet.set(key, v, reasons.get(key, ""))
                sheet.details["clip"] = {"renders": labels, "views_yaw_deg": yaws, "expressions": exprs, "backbones": details}

            sheet.guarded(clip_keys, "CLIP score", clip_group)
        with timer("fidelity"):
            sheet.guarded(("psnr_reference", "ssim_reference"), "reference fidelity", lambda: _fidelity(sheet, scene, reference, cfg))
        with timer("expression_accuracy"):
            sheet.guarded(("landmark_error", "landmark_detected_fraction"), "expression accuracy", lambda: _expression_accuracy(sheet, scene, runner, cfg))
            sheet.guarded(("mouth_open_render", "mouth_open_driving"), "mouth opening", lambda: _mouth_opening(sheet, scene, runner, cfg))
        with timer("detection_sweep"):
            sheet.guarded(("face_detection_rate",), "face detection sweep", lambda: _detection_sweep(sheet, scene, runner, cfg))
        with timer("temporal"):
            keys = ("temporal_change_expression", "temporal_jitter_expression", "temporal_change_camera", "temporal_jitter_camera", "determinism_max_abs_diff")
            sheet.guarded(keys, "temporal stability", lambda: _temporal(sheet, scene, cfg))
        with timer("identity"):
            sheet.guarded(tuple(k for k in CORE_KEYS if k.startswith("identity_")), "face identity", lambda: _identity(sheet, scene, reference, cfg))
        with timer("dataset_consistency"):
            sheet.guarded(("dataset_consistency_final", "dataset_refresh_change_final"), "dataset consistency", lambda: _dataset_consistency(sheet, run_dir))
        if cfg.truth_dir:
            from ..bench.heldout import HELDOUT_KEYS

            with timer("heldout"):
                sheet.guarded(HELDOUT_KEYS, "held-out metrics against the truth subject", lambda: _heldout(sheet, out, scene, reference, cfg))
        with timer("fps"):
            sheet.guarded(("fps_render", "fps_animate_render"), "render FPS", lambda: _fps(sheet, scene, cfg, device))
        with timer("videos"):
            save_video(out / "turntable.mp4", turntable_frames(scene, cfg.video_frames), cfg.video_fps)
            save_video(out / "expressions.mp4", expression_frames(scene, cfg.video_frames), cfg.video_fps)
        with timer("plots"):
            loss_rows, summary = round_histories(round_manifests(run_dir))
            plot_loss_curves(loss_rows, out / "plots" / "loss_curves.png")
            plot_metrics_per_round(summary, out / "plots" / "metrics_per_round.png")
            sheet.details["plots"] = write_plot_data(out / "plots", loss_rows, summary)

        for key in CORE_KEYS:  # every run's metrics.json has the same keys
            if key not in sheet.values:
                sheet.set(key, None, "not computed")
        sheet.details["avatar"] = {"folder": str(avatar_dir.relative_to(run_dir)) if avatar_dir.is_relative_to(run_dir) else str(avatar_dir), "head": info.get("head"), "sh_degree": gaussians.sh_degree}
        sheet.details["device"] = str(device)
        write_json_atomic(out / "metrics.json", rounded(sheet.to_dict()))
        write_json_atomic(out / "summary.json", rounded(dict(sheet.values)))  # numbers only: a clean `dvc exp show` target

        outputs = {p.relative_to(out).as_posix(): output_digest_of(p) for p in sorted(out.rglob("*")) if p.is_file()}
        inputs = {"avatar": digest_path(avatar_dir), "preprocess": upstream_digest(run_dir / "preprocess"), "head": upstream_digest(run_dir / "head")}
        if cfg.truth_dir:
            inputs["truth_subject"] = digest_path(Path(cfg.truth_dir))
        timings = {**timer.timings, "total": round(time.perf_counter() - t_start, 3)}
        manifest = Manifest(
            node="evaluate",
            params=asdict(cfg),
            inputs=inputs,
            outputs=outputs,
            code_version=code_digest("evaluate"),
            seed=seed,
            timings=timings,
            metrics=rounded(dict(sheet.values)),  # the numbers metrics.json holds
            extra={"reasons": dict(sheet.reasons), "avatar_folder": str(avatar_folder), "licence": head.licence},
        )
        manifest.write(out)
    log.info("evaluation of %s done in %.1f s -> %s", avatar_dir, timings["total"], run_dir / "evaluate")
    return manifest.to_dict()


def metrics_table(metrics: dict) -> "Any":
    """metrics.json -> a two-column pandas table (metric, value or the reason it is null)."""
    import pandas as pd

    reasons = metrics.get("reasons", {})
    rows = []
    for key, value in metrics.items():
        if key in ("reasons", "details"):
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else ("null: " + reasons.get(key, "") if value is None else value)
        rows.append({"metric": key, "value": shown})
    return pd.DataFrame(rows)


__all__ = ["evaluate_run", "find_avatar_dir", "latest_round_folder", "round_manifests", "MetricSheet", "CORE_KEYS", "metrics_table"]
