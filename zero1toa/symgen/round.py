"""One SymGEN round: generate the round's clips, then train and refresh in turn.

Symbiotic generation (Zero-1-to-A): the video generator's outputs are cached in an updatable
dataset; the avatar is trained on that dataset with reconstruction losses (not SDS); and the
dataset is refreshed by running the generator *from the avatar's current renders*, so the
pseudo ground truth grows more consistent as the avatar improves and vice versa.

A round reads top-down (:func:`run_round`):

1. **generate**: take the previous dataset version, drop the oldest clips of the round's stage
   beyond the stage's clip budget, and add the round's new clips (from the progressive schedule),
   generated with the current avatar's renders as ``init_frames``;
2. **train and refresh in turn**: the trainer optimises for ``refresh_every`` iterations (paper:
   30) on the dataset (plus the reference photo itself, a permanent target with
   ``reference_weight``), then the refresh policy (:mod:`.refresh`) picks clips, which are
   re-rendered from the avatar and regenerated with the round's ``strength``; repeat;
3. **write** the new immutable dataset version and the new avatar, each with a manifest.

The trainer knows nothing of datasets or refreshes: it trains on what it is handed. Everything in
between lives in ``<round>/.work`` (the working table after each refresh as parquet, the
training checkpoint), so a killed round resumes where it stopped and produces the same result.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import faults
from ..avatar.checkpoint import save_avatar
from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar_frames
from ..generate.base import GenerationRequest, VideoGenerator
from ..head.base import HeadModel
from ..progressive.schedules import Clip, clip_cameras
from ..render.camera import Cameras
from ..render.camera import project_points
from ..render.landmark_maps import head_landmark_maps, maps_from_points
from ..train.samples import SampleTensors
from ..train.trainer import Trainer, TrainConfig, TrainResult
from ..utils.io import atomic_path, digest_obj, read_json, sha256_bytes, write_json_atomic
from .dataset import COLUMNS, DatasetVersion, ObjectStore, rows_to_tensors, to_uint8, write_version
from .refresh import clips_per_event, clips_to_drop, pick_clips, refresh_steps

log = logging.getLogger("zero1toa.symgen")


@dataclass
class SymGenConfig:
    """The dataset update rule. Paper: refresh every 30 avatar iterations; which clips and how
    strongly is open: here the stalest clips of the whole dataset first, enough per refresh that
    every clip is refreshed once per round, strength decaying over a stage's rounds."""

    refresh_every: int = 30
    refresh_policy: str = "stalest"  # stalest | stage_round_robin (see symgen/refresh.py)
    clips_per_refresh: int = 0  # 0 = auto: every clip of the dataset refreshed once per round
    update_dataset: bool = True  # ablation switch: False = generate each clip once, never refresh
    new_clip_strength: float = 1.0  # a clip enters the dataset fully generated
    strength_first: float = 0.9  # refresh strength in a stage's first round ...
    strength_last: float = 0.6  # ... and its last (the avatar is trusted more as it improves)
    # The photo itself is a permanent target: this fraction of the training steps draws the
    # reference view at the reference expression (the paper trains on generated frames only and
    # does not say; the one real image is the only pixel-exact truth there is, so we keep it in).
    reference_weight: float = 0.1
    # Landmark re-extraction (paper: landmarks are extracted from the generated pseudo ground
    # truth): the face mesh runs on every generated frame within +-landmark_check_max_yaw (of
    # generators that do not render the requested geometry themselves); a frame
    # with no face or a mean landmark error above landmark_max_error (inter-ocular distances) is
    # regenerated once, then down-weighted (landmark_failure_weight) or dropped.
    landmark_check: bool = True
    landmark_max_error: float = 0.12
    landmark_check_max_yaw: float = 40.0  # the shipped detector's reliable range
    landmark_failure: str = "downweight"  # downweight | drop
    landmark_failure_weight: float = 0.2
    condition_on_extracted: bool = False  # refreshes draw their landmark maps from the extracted landmarks


@dataclass
class Reference:
    """The portrait and its fit, as every round needs them."""

    image: Tensor  # [3, S, S] in [0, 1]
    mask: Tensor  # [S, S]
    camera: Cameras  # 1 camera, S x S
    expression: Tensor  # [E]
    jaw: Tensor  # [3]
    target: Tensor  # [3] orbit centre
    completion: object | None = None  # texture.completion.TextureAtlas: the head's completed texture


@dataclass
class RoundSpec:
    name: str  # e.g. "spatial_1"
    stage: str
    index: int  # 0-based within the stage
    iterations: int
    clips: list[Clip]
    strength: float
    max_clips: int
    seed: int

    def digest(self) -> str:
        return digest_obj(
            {
                "name": self.name,
                "iterations": self.iterations,
                "strength": self.strength,
                "max_clips": self.max_clips,
                "seed": self.seed,
                "clips": [[c.clip_id, c.yaws_deg.round(4).tolist(), c.elevations_deg.round(4).tolist(), c.expressions.round(4).tolist(), c.jaws.round(4).tolist()] for c in self.clips],
            }
        )


@dataclass
class RoundResult:
    version: DatasetVersion
    avatar_dir: Path
    train: TrainResult
    refreshes: int
    diff: dict
    seconds: float
    timings: dict = field(default_factory=dict)
    refresh_log: list[dict] = field(default_factory=list)  # per refresh: iteration, clip ids


def _clip_from_rows(rows: pd.DataFrame) -> Clip:
    rows = rows.sort_values("frame_index")
    first = rows.iloc[0]
    return Clip(
        clip_id=first["clip_id"],
        stage=first["stage"],
        round_index=-1,
        yaws_deg=rows["yaw_deg"].to_numpy(np.float64),
        elevations_deg=rows["elevation_deg"].to_numpy(np.float64),
        expressions=np.stack(rows["expression"].map(np.asarray).tolist()).astype(np.float32),
        jaws=np.stack(rows["jaw"].map(np.asarray).tolist()).astype(np.float32),
        source=first["clip_source"],
    )


class ClipGenerator:
    """Renders the avatar for a clip, asks the generator for its pseudo ground truth, and checks
    the generated faces (landmark re-extraction, see :mod:`.landmark_check`)."""

    def __init__(self, head: HeadModel, reference: Reference, generator: VideoGenerator, background: float, cfg: "SymGenConfig | None" = None) -> None:
        self.head, self.reference, self.generator, self.background = head, reference, generator, background
        self.resolution = generator.info.resolution
        self.cfg = cfg
        self.checker = None
        if cfg is not None and cfg.landmark_check and not generator.info.geometry_exact:
            from .landmark_check import LandmarkChecker

            self.checker = LandmarkChecker(cfg.landmark_check_max_yaw)

    def _generate_once(self, clip: Clip, gaussians: BoundGaussians | None, strength: float, seed: int, points: Tensor | None) -> dict:
        R = self.resolution
        cams = clip_cameras(clip, self.reference.camera, self.reference.target, R)
        expr = torch.from_numpy(clip.expressions).float()
        poses = clip.poses()
        style = self.generator.info.landmark_style
        with torch.no_grad():
            verts = self.head.animate(expr, poses)
            requested_uv, _ = project_points(self.head.landmarks(verts), cams)
            if points is None:
                maps = head_landmark_maps(self.head, verts, cams, style=style)
            else:  # conditioned on the landmarks extracted from the clip's current frames
                maps = maps_from_points(points, torch.arange(points.shape[1]), R, style)
            init, init_alpha = (None, None)
            if gaussians is not None:
                init, init_alpha = render_avatar_frames(gaussians, self.head, cams, expr, poses, self.background)
            request = GenerationRequest(
                reference=self.reference.image,
                landmark_maps=maps,
                init_frames=init,
                init_alphas=init_alpha,
                strength=float(strength),
                seed=int(seed),
                cameras=cams,
                expressions=expr,
                poses=poses,
            )
            result = self.generator.generate(request)
        frames, masks = result.frames, result.masks
        if masks is None:  # diffusion backends return no masks: segment the person in each frame
            masks = person_masks(frames)
            if masks is not None:
                # one background for every generator: outside the person, the trainer's own, so
                # the losses never fit a generated background (generators that return masks, the
                # embedded and simulated ones, composite their frames over it themselves)
                frames = composite_over(frames, masks, self.background)
        if masks is None:  # no segmentation model installed: the avatar's silhouette stands in
            masks = init_alpha if init_alpha is not None else torch.ones(len(cams), 1, R, R)
        return {"frames": frames, "masks": masks, "maps": maps, "cameras": cams, "requested_uv": requested_uv}

    def generate(self, clip: Clip, gaussians: BoundGaussians | None, strength: float, seed: int, points: Tensor | None = None) -> dict:
        """Frames, masks, maps, cameras and per frame: landmark status, error, extracted points, weight."""
        out = self._generate_once(clip, gaussians, strength, seed, points)
        n = clip.num_frames
        out["status"], out["error"], out["points"], out["weight"] = ["unchecked"] * n, [math.nan] * n, [None] * n, [1.0] * n
        if self.checker is None:
            return out
        cfg = self.cfg
        ids = self.head.landmark_embedding.indices.tolist()
        checks = self.checker.check(out["frames"], out["requested_uv"], ids, clip.yaws_deg)
        reasons = [c.failed(cfg.landmark_max_error) for c in checks]
        if any(reasons):  # regenerate the clip once; keep the second try of each failed frame that passes
            retry = self._generate_once(clip, gaussians, strength, seed + 7919, points)
            again = self.checker.check(retry["frames"], retry["requested_uv"], ids, clip.yaws_deg)
            for f, why in enumerate(reasons):
                if why is None:
                    continue
                why2 = again[f].failed(cfg.landmark_max_error)
                if why2 is None:
                    out["frames"][f], out["masks"][f], checks[f] = retry["frames"][f], retry["masks"][f], again[f]
                    out["status"][f] = "regenerated"
                else:
                    dropped = cfg.landmark_failure == "drop"
                    out["status"][f] = f"{'dropped' if dropped else 'downweighted'}: {why2} (after one regeneration)"
                    out["weight"][f] = 0.0 if dropped else cfg.landmark_failure_weight
        for f, c in enumerate(checks):
            if c.checked and out["status"][f] == "unchecked":
                out["status"][f] = "ok"
            out["error"][f] = math.nan if c.error is None else c.error
            out["points"][f] = c.points
        return out


def person_masks(frames: Tensor) -> Tensor | None:
    """[F, 3, H, W] -> person probability [F, 1, H, W] from the selfie segmentation model that
    the setup extracts (MediaPipe, Apache-2.0); None when it is not installed."""
    from ..preprocess.assets import selfie_model_path
    from ..preprocess.mask import selfie_probabilities

    model = selfie_model_path()
    if model is None:
        log.warning("no selfie segmentation model (bash scripts/setup.sh extracts it): generated frames are masked by the avatar's silhouette")
        return None
    u8 = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.stack([torch.from_numpy(selfie_probabilities(np.ascontiguousarray(f), model)) for f in u8])[:, None]


def composite_over(frames: Tensor, masks: Tensor, background: float) -> Tensor:
    """Frames [F, 3, H, W] where masks [F, 1, H, W] say person, ``background`` elsewhere."""
    m = masks.float().clamp(0, 1)
    return frames.float() * m + background * (1 - m)


def _rows_for_clip(clip: Clip, out: dict, store: ObjectStore, round_name: str, generator: str, source_avatar: str, strength: float, seed: int, refresh_count: int, clip_round: str, when: str, order: int) -> list[dict]:
    cams: Cameras = out["cameras"]
    rows = []
    for f in range(clip.num_frames):
        rows.append(
            {
                "sample_id": f"{clip.clip_id}/{f:03d}",
                "clip_id": clip.clip_id,
                "frame_index": f,
                "stage": clip.stage,
                "clip_round": clip_round,
                "generated_round": round_name,
                "refresh_count": refresh_count,
                "last_refreshed": when,
                "refresh_order": int(order),
                "generator": generator,
                "source_avatar": source_avatar,
                "strength": float(strength),
                "seed": int(seed),
                "clip_source": clip.source,
                "yaw_deg": float(clip.yaws_deg[f]),
                "elevation_deg": float(clip.elevations_deg[f]),
                "viewmat": cams.viewmats[f].reshape(-1).tolist(),
                "K": cams.Ks[f].reshape(-1).tolist(),
                "resolution": cams.width,
                "expression": clip.expressions[f].tolist(),
                "jaw": clip.jaws[f].tolist(),
                "frame": store.put(to_uint8(out["frames"][f])),
                "mask": store.put(to_uint8(out["masks"][f])),
                "landmarks": store.put(to_uint8(out["maps"][f])),
                "landmark_status": out["status"][f],
                "landmark_error": float(out["error"][f]),
                "landmarks_extracted": [] if out["points"][f] is None else np.round(out["points"][f], 3).reshape(-1).tolist(),
                "sample_weight": float(out["weight"][f]),
            }
        )
    return rows


def avatar_digest(gaussians: BoundGaussians) -> str:
    """Content digest of the avatar's parameters as they are now (the lineage of a refresh)."""
    parts = [f"{name}:{tuple(p.shape)}:{sha256_bytes(p.detach().cpu().contiguous().numpy().tobytes())}" for name, p in sorted(gaussians.params.items())]
    return digest_obj(parts)


def reference_sample(reference: Reference, resolution: int, background: float) -> SampleTensors:
    """The photo as one training sample at the dataset's resolution, composited over the
    trainer's background with its mask (the photo's own background is not part of the avatar)."""
    import torch.nn.functional as F

    img = F.interpolate(reference.image[None].float(), size=(resolution, resolution), mode="area")
    mask = F.interpolate(reference.mask[None, None].float(), size=(resolution, resolution), mode="area")
    frame = img * mask + background * (1 - mask)
    cam = reference.camera.resized(resolution, resolution)
    return SampleTensors(frame, mask, cam.viewmats.clone(), cam.Ks.clone(), reference.expression[None].float(), reference.jaw[None].float(), resolution)


def write_table_atomic(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(Path(path)) as tmp:
        table.to_parquet(tmp, index=False)


class RoundDataset:
    """The round's working dataset (a table + its decoded frames, and the photo), refreshed by the
    round between training segments. The trainer sees it only through :meth:`batch`."""

    def __init__(self, table: pd.DataFrame, store: ObjectStore, clips: ClipGenerator, spec: RoundSpec, cfg: SymGenConfig, reference: SampleTensors | None, work: Path) -> None:
        self.store, self.clips, self.spec, self.cfg, self.reference, self.work = store, clips, spec, cfg, reference, work
        self.initial = table  # the round's table before any refresh (what a resume at step 0 needs)
        self.table_step = 0  # the iteration whose refresh produced the current table (0: the round's start)
        self.refreshes = 0
        self.log: list[dict] = []
        self._set_table(table)

    def _set_table(self, table: pd.DataFrame) -> None:
        self.table = table.sort_values("sample_id").reset_index(drop=True)
        data = rows_to_tensors(self.table, self.store.get)
        ref, w = self.reference, self.cfg.reference_weight
        if ref is not None and w > 0:
            n = data.frames.shape[0]
            cat = lambda a, b: torch.cat([a, b.to(a.dtype)])  # noqa: E731
            base = data.weights if data.weights is not None else torch.full((n,), 1.0 / max(1, n))
            weights = torch.cat([base * (1 - w), torch.tensor([w if n else 1.0])])
            data = SampleTensors(
                cat(data.frames, ref.frames), cat(data.masks, ref.masks), cat(data.viewmats, ref.viewmats), cat(data.Ks, ref.Ks),
                cat(data.expressions, ref.expressions), cat(data.jaws, ref.jaws), data.resolution, weights,
            )  # fmt: skip
        self.tensors = data

    def batch(self, step: int, gaussians: BoundGaussians) -> SampleTensors:
        return self.tensors

    def refresh(self, step: int, event_index: int, events: int, gaussians: BoundGaussians) -> list[str]:
        """Regenerate the clips the policy picks at this event; writes ``.work/table_<step>.parquet``."""
        cfg, spec = self.cfg, self.spec
        n_clips = self.table["clip_id"].nunique()
        count = clips_per_event(cfg.clips_per_refresh, n_clips, events)
        chosen = pick_clips(self.table, cfg.refresh_policy, count, spec.stage, event_index)
        source = avatar_digest(gaussians)
        order = int(self.table["refresh_order"].max()) + 1 if len(self.table) else 0
        table = self.table
        for k, clip_id in enumerate(chosen):
            rows = table[table["clip_id"] == clip_id]
            clip = _clip_from_rows(rows)
            count_k = int(rows["refresh_count"].max()) + 1
            seed = _seed(spec.seed, spec.name, clip_id, count_k)
            out = self.clips.generate(clip, gaussians, spec.strength, seed, self._extracted(rows) if cfg.condition_on_extracted else None)
            new_rows = _rows_for_clip(
                clip, out, self.store, spec.name, self.clips.generator.info.name, source, spec.strength, seed, count_k,
                rows["clip_round"].iloc[0], f"{spec.name}@{step}", order + k,
            )  # fmt: skip
            table = pd.concat([table[table["clip_id"] != clip_id], pd.DataFrame(new_rows)])
        write_table_atomic(self.work / f"table_{step}.parquet", table)
        self._set_table(table)
        self.table_step = step
        self.refreshes += 1
        self.log.append({"step": step, "clips": chosen})
        return chosen

    @staticmethod
    def _extracted(rows: pd.DataFrame) -> Tensor | None:
        """The landmarks extracted from a clip's current frames [F, 468, 2], if every frame has them."""
        rows = rows.sort_values("frame_index")
        pts = [np.asarray(p, np.float32) for p in rows["landmarks_extracted"]]
        if any(p.size != 468 * 2 for p in pts):
            return None
        return torch.from_numpy(np.stack(pts).reshape(len(pts), 468, 2))

    def state(self) -> dict:
        return {"table_step": self.table_step, "refreshes": self.refreshes, "log": [[e["step"], list(e["clips"])] for e in self.log]}

    def load_state(self, state: dict) -> None:
        step = int(state["table_step"])
        self._set_table(self.initial if step == 0 else pd.read_parquet(self.work / f"table_{step}.parquet"))
        self.table_step = step
        self.refreshes = int(state["refreshes"])
        self.log = [{"step": int(s), "clips": list(c)} for s, c in state.get("log", [])]

    def prune(self) -> None:
        """Drop working tables older than the current one (the checkpoint no longer needs them)."""
        for p in self.work.glob("table_*.parquet"):
            if p.stem != f"table_{self.table_step}":
                p.unlink(missing_ok=True)


def _seed(base: int, *parts: object) -> int:
    return int(digest_obj([base, *parts])[:8], 16)


def standalone_identity(spec: RoundSpec, sym_cfg: SymGenConfig | None, train_cfg: TrainConfig, generator: VideoGenerator, previous: DatasetVersion | None, previous_avatar: str, out_dir: Path):
    """The identity of a round run outside the DAG (no run folder, no config): its own settings and inputs."""
    from dataclasses import asdict

    from ..identity import NodeIdentity

    return NodeIdentity(
        node=spec.name,
        kind="round",
        run_dir=str(Path(out_dir).resolve()),
        upstream={"previous_dataset": previous.digest if previous is not None else "", "previous_avatar": previous_avatar},
        params=json.loads(json.dumps({"spec": spec.digest(), "symgen": asdict(sym_cfg) if sym_cfg is not None else None, "train": asdict(train_cfg), "generator": asdict(generator.info)}, default=str)),
        seed=spec.seed,
    )


def open_work_folder(work: Path, identity, name: str) -> bool:
    """Keep ``work`` only when it belongs to this round as configured now; True when kept.

    ``identity`` is the round's :class:`zero1toa.identity.NodeIdentity`. A folder recorded under another identity,
    or without one (a write that never finished), is discarded with a log line naming what
    changed: it is never resumed.
    """
    from ..identity import describe_changes

    marker = work / "spec.json"
    if marker.exists():
        try:
            recorded = read_json(marker).get("identity")
        except ValueError:
            recorded = None
        changes = identity.changes(recorded)
        if not changes:
            return True
        log.warning("%s: discarding its work folder from an earlier attempt: %s changed; starting the round afresh", name, describe_changes(changes))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    return False


def run_round(
    spec: RoundSpec,
    gaussians: BoundGaussians,
    head: HeadModel,
    reference: Reference,
    generator: VideoGenerator,
    previous: DatasetVersion | None,
    store: ObjectStore,
    out_dir: Path,
    train_cfg: TrainConfig,
    sym_cfg: SymGenConfig,
    previous_avatar: str = "init",
    progress: bool = True,
    record: dict | None = None,
    identity=None,
) -> RoundResult:
    """Run one round into ``out_dir`` (``dataset/``, ``avatar/``); resumes from ``out_dir/.work``.

    ``identity`` (:class:`zero1toa.identity.NodeIdentity`) guards the resume: the ``.work``
    folder and the checkpoint are used only when recorded under the same identity.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    clips = ClipGenerator(head, reference, generator, train_cfg.background, sym_cfg)
    if identity is None:
        identity = standalone_identity(spec, sym_cfg, train_cfg, generator, previous, previous_avatar, out_dir)
    initial_path = work / "initial.parquet"
    marker = work / "spec.json"
    timings: dict[str, float] = {}
    kept = open_work_folder(work, identity, spec.name)

    # 1. generate the round's new clips
    if kept and initial_path.exists():
        table = pd.read_parquet(initial_path)
    else:
        tg = time.perf_counter()
        table = _generate_new_clips(spec, previous, clips, store, generator, sym_cfg, gaussians, previous_avatar, progress)
        write_table_atomic(initial_path, table)
        write_json_atomic(marker, {"identity": identity.record(), "round": spec.name})
        timings["generate"] = round(time.perf_counter() - tg, 3)

    # 2. train and refresh in turn
    ref = reference_sample(reference, generator.info.resolution, train_cfg.background) if sym_cfg.reference_weight > 0 else None
    data = RoundDataset(table, store, clips, spec, sym_cfg, ref, work)
    tt = time.perf_counter()
    trainer = Trainer(
        gaussians, head, spec.iterations, train_cfg, spec.seed, checkpoint_path=work / "checkpoint.pt", round_name=spec.name,
        progress=progress, identity=identity.digest,
    )  # fmt: skip
    if trainer.resumed_source_state is not None:
        data.load_state(trainer.resumed_source_state)
    events = refresh_steps(spec.iterations, sym_cfg.refresh_every) if sym_cfg.update_dataset else []
    for k, step in enumerate(events):
        trainer.run(data, step)
        if data.table_step < step:  # (after a resume, this refresh may be behind us already)
            data.refresh(step, k, len(events), gaussians)
            trainer.save(data)
            data.prune()
    trainer.run(data, spec.iterations)
    result = trainer.result()
    timings["train"] = round(time.perf_counter() - tt, 3)

    # 3. write the new dataset version and the avatar
    version = write_version(
        out_dir / "dataset",
        data.table,
        store,
        previous.digest if previous is not None else None,
        meta={
            "round": spec.name, "stage": spec.stage, "generator": generator.info.name, "refreshes": data.refreshes,
            "update_dataset": sym_cfg.update_dataset, "refresh_policy": sym_cfg.refresh_policy,
        },
    )  # fmt: skip
    diff = diff_summary(previous, version)
    avatar_dir = save_avatar(
        out_dir / "avatar",
        gaussians,
        head,
        {
            "round": spec.name,
            "trained_on_dataset": version.digest,
            "iterations": spec.iterations,
            "losses": result.losses,
            "active_loss_terms": result.active_terms,
            "inactive_loss_terms": result.inactive_terms,
            **(record or {}),
        },
    )
    shutil.rmtree(work, ignore_errors=True)
    return RoundResult(version, avatar_dir, result, data.refreshes, diff, time.perf_counter() - t0, timings, data.log)


def _generate_new_clips(spec: RoundSpec, previous: DatasetVersion | None, clips: ClipGenerator, store: ObjectStore, generator: VideoGenerator, sym_cfg: SymGenConfig, gaussians: BoundGaussians, previous_avatar: str, progress: bool) -> pd.DataFrame:
    """The previous version, minus this stage's oldest clips beyond the budget, plus the new clips."""
    table = previous.table.copy() if previous is not None else pd.DataFrame(columns=list(COLUMNS))
    table = table[~table["clip_id"].isin(clips_to_drop(table, spec.stage, spec.max_clips, len(spec.clips)))]
    source = previous_avatar if previous_avatar != "init" else f"init:{avatar_digest(gaussians)}"
    order = int(table["refresh_order"].max()) + 1 if len(table) else 0
    rows: list[dict] = []
    for k, clip in enumerate(_bar(spec.clips, progress, f"{spec.name}: generate")):
        seed = _seed(spec.seed, spec.name, clip.clip_id, 0)
        out = clips.generate(clip, gaussians, sym_cfg.new_clip_strength, seed)
        rows += _rows_for_clip(clip, out, store, spec.name, generator.info.name, source, sym_cfg.new_clip_strength, seed, 0, spec.name, f"{spec.name}@0", order + k)
        faults.point("round:generate")  # a clip's frames are in the store, the table not yet written
    table = pd.concat([table, pd.DataFrame(rows)]) if len(table) else pd.DataFrame(rows)
    return table[list(COLUMNS)].sort_values("sample_id").reset_index(drop=True)


def diff_summary(previous: DatasetVersion | None, new: DatasetVersion) -> dict:
    from .dataset import diff_versions

    if previous is None:
        return {"added": len(new), "refreshed": 0, "dropped": 0, "unchanged": 0}
    d = diff_versions(previous, new)
    return {k: (len(v) if isinstance(v, list) else v) for k, v in d.items()}


def _bar(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, dynamic_ncols=True)


