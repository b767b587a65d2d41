"""One SymGEN round: refresh the pseudo ground-truth dataset from the avatar, train the avatar on it.

Symbiotic generation (Zero-1-to-A): the video generator's outputs are cached in an updatable
dataset; the avatar is trained on that dataset with reconstruction losses (not SDS); and the
dataset is refreshed by running the generator *from the avatar's current renders*, so the
pseudo ground truth grows more consistent as the avatar improves and vice versa.

A round here:
1. takes the previous dataset version, drops the oldest clips of its stage beyond the stage's
   clip budget, and adds the round's new clips (from the progressive schedule), generated with
   the current avatar's renders as ``init_frames``;
2. trains the avatar for the round's iterations; every ``refresh_every`` iterations (paper: 30)
   the next ``clips_per_refresh`` clips of the round's stage (round-robin) are re-rendered from
   the avatar and regenerated with the round's ``strength`` (the SymGEN update);
3. writes the new immutable dataset version and the new avatar, each with a manifest.

Everything in between lives in ``<round>/.work`` (working table + training checkpoint), so a
killed round resumes where it stopped and produces the same result.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..avatar.checkpoint import save_avatar
from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar_frames
from ..generate.base import GenerationRequest, VideoGenerator
from ..head.base import HeadModel
from ..progressive.schedules import Clip, clip_cameras
from ..render.camera import Cameras
from ..render.landmark_maps import head_landmark_maps
from ..train.trainer import TrainConfig, TrainResult, train_round
from ..utils.io import digest_obj, read_json, write_json_atomic
from .dataset import COLUMNS, DatasetVersion, ObjectStore, SampleTensors, rows_to_tensors, to_uint8, write_version

log = logging.getLogger("zero1toa.symgen")


@dataclass
class SymGenConfig:
    """The dataset update rule. Paper: refresh every 30 avatar iterations; which clips and how
    strongly is open: here round-robin over the round's stage, strength decaying over rounds."""

    refresh_every: int = 30
    clips_per_refresh: int = 1
    update_dataset: bool = True  # ablation switch: False = generate each clip once, never refresh
    new_clip_strength: float = 1.0  # a clip enters the dataset fully generated
    strength_first: float = 0.9  # refresh strength in a stage's first round ...
    strength_last: float = 0.6  # ... and its last (the avatar is trusted more as it improves)


@dataclass
class Reference:
    """The portrait and its fit, as every round needs them."""

    image: Tensor  # [3, S, S] in [0, 1]
    mask: Tensor  # [S, S]
    camera: Cameras  # 1 camera, S x S
    expression: Tensor  # [E]
    jaw: Tensor  # [3]
    target: Tensor  # [3] orbit centre


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
    """Renders the avatar for a clip and asks the generator for its pseudo ground truth."""

    def __init__(self, head: HeadModel, reference: Reference, generator: VideoGenerator, background: float) -> None:
        self.head, self.reference, self.generator, self.background = head, reference, generator, background
        self.resolution = generator.info.resolution

    def generate(self, clip: Clip, gaussians: BoundGaussians | None, strength: float, seed: int) -> dict[str, Tensor | Cameras]:
        R = self.resolution
        cams = clip_cameras(clip, self.reference.camera, self.reference.target, R)
        expr = torch.from_numpy(clip.expressions).float()
        poses = clip.poses()
        with torch.no_grad():
            verts = self.head.animate(expr, poses)
            maps = head_landmark_maps(self.head, verts, cams)
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
        masks = result.masks
        if masks is None:  # diffusion backends return no masks: the avatar's silhouette stands in
            masks = init_alpha if init_alpha is not None else torch.ones(len(cams), 1, R, R)
        return {"frames": result.frames, "masks": masks, "maps": maps, "cameras": cams}


def _rows_for_clip(clip: Clip, out: dict, store: ObjectStore, round_name: str, generator: str, source_avatar: str, strength: float, seed: int, refresh_count: int, clip_round: str) -> list[dict]:
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
            }
        )
    return rows


class RoundData:
    """The round's working dataset: a table + decoded tensors, refreshed in place (a DataSource)."""

    def __init__(self, table: pd.DataFrame, store: ObjectStore, clips: ClipGenerator, spec: RoundSpec, cfg: SymGenConfig) -> None:
        self.table = table.sort_values("sample_id").reset_index(drop=True)
        self.store, self.clips, self.spec, self.cfg = store, clips, spec, cfg
        self.pointer = 0
        self.refreshes = 0
        self._decode()

    def _decode(self) -> None:
        self.tensors: SampleTensors = rows_to_tensors(self.table, self.store.get)

    def stage_clip_ids(self) -> list[str]:
        ids = self.table.loc[self.table["stage"] == self.spec.stage, "clip_id"]
        return sorted(set(ids))

    def maybe_refresh(self, step: int, gaussians: BoundGaussians) -> bool:
        cfg = self.cfg
        if not cfg.update_dataset or step == 0 or step % cfg.refresh_every != 0:
            return False
        ids = self.stage_clip_ids()
        if not ids:
            return False
        for _ in range(cfg.clips_per_refresh):
            clip_id = ids[self.pointer % len(ids)]
            self.pointer += 1
            rows = self.table[self.table["clip_id"] == clip_id]
            clip = _clip_from_rows(rows)
            count = int(rows["refresh_count"].max()) + 1
            seed = _seed(self.spec.seed, self.spec.name, clip_id, count)
            out = self.clips.generate(clip, gaussians, self.spec.strength, seed)
            new_rows = _rows_for_clip(
                clip, out, self.store, self.spec.name, self.clips.generator.info.name, f"{self.spec.name}@{step}",
                self.spec.strength, seed, count, rows["clip_round"].iloc[0],
            )  # fmt: skip
            self.table = pd.concat([self.table[self.table["clip_id"] != clip_id], pd.DataFrame(new_rows)]).sort_values("sample_id").reset_index(drop=True)
        self.refreshes += 1
        self._decode()
        return True

    def state(self) -> dict:
        return {"rows": self.table.to_dict(orient="list"), "pointer": self.pointer, "refreshes": self.refreshes}

    def load_state(self, state: dict) -> None:
        self.table = pd.DataFrame(state["rows"]).sort_values("sample_id").reset_index(drop=True)
        self.pointer = int(state["pointer"])
        self.refreshes = int(state["refreshes"])
        self._decode()


def _seed(base: int, *parts: object) -> int:
    return int(digest_obj([base, *parts])[:8], 16)


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
) -> RoundResult:
    """Run one round into ``out_dir`` (``dataset/``, ``avatar/``); resumes from ``out_dir/.work``."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    clips = ClipGenerator(head, reference, generator, train_cfg.background)
    spec_digest = spec.digest()
    initial_path = work / "initial.parquet"
    marker = work / "spec.json"
    timings: dict[str, float] = {}
    if marker.exists() and read_json(marker).get("spec") != spec_digest:
        log.warning("%s: work folder belongs to other settings; starting the round afresh", spec.name)
        shutil.rmtree(work)
        work.mkdir(parents=True)

    if initial_path.exists():
        table = pd.read_parquet(initial_path)
    else:
        tg = time.perf_counter()
        table = previous.table.copy() if previous is not None else pd.DataFrame(columns=list(COLUMNS))
        # keep the newest clips of this stage within the budget (room for the new ones)
        stage_clips = [c for c in dict.fromkeys(table["clip_id"]) if (table.loc[table["clip_id"] == c, "stage"] == spec.stage).all()]
        budget = max(0, spec.max_clips - len(spec.clips))
        drop = stage_clips[: max(0, len(stage_clips) - budget)]
        table = table[~table["clip_id"].isin(drop)]
        rows: list[dict] = []
        bar = _bar(spec.clips, progress, f"{spec.name}: generate")
        for clip in bar:
            seed = _seed(spec.seed, spec.name, clip.clip_id, 0)
            out = clips.generate(clip, gaussians, sym_cfg.new_clip_strength, seed)
            rows += _rows_for_clip(clip, out, store, spec.name, generator.info.name, previous_avatar, sym_cfg.new_clip_strength, seed, 0, spec.name)
        table = pd.concat([table, pd.DataFrame(rows)]) if len(table) else pd.DataFrame(rows)
        table = table[list(COLUMNS)].sort_values("sample_id").reset_index(drop=True)
        table.to_parquet(initial_path, index=False)
        write_json_atomic(marker, {"spec": spec_digest})
        timings["generate"] = round(time.perf_counter() - tg, 3)

    data = RoundData(table, store, clips, spec, sym_cfg)
    tt = time.perf_counter()
    result = train_round(
        gaussians, head, data, spec.iterations, train_cfg, spec.seed,
        checkpoint_path=work / "checkpoint.pt", round_name=spec.name,
        dataset_version=previous.digest if previous is not None else "", progress=progress,
    )  # fmt: skip
    timings["train"] = round(time.perf_counter() - tt, 3)

    version = write_version(
        out_dir / "dataset",
        data.table,
        store,
        previous.digest if previous is not None else None,
        meta={"round": spec.name, "stage": spec.stage, "generator": generator.info.name, "refreshes": data.refreshes, "update_dataset": sym_cfg.update_dataset},
    )
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
    return RoundResult(version, avatar_dir, result, data.refreshes, diff, time.perf_counter() - t0, timings)


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


