"""The DAG's nodes as plain functions over one run folder (no orchestrator needed).

Layout of a run folder (``<run.root>/<run.name>/``)::

    preprocess/                  reference.png, mask.png, landmarks.json, crop.json, manifest.json
    head/                        model/, camera.json, fit.json, preview.png, manifest.json
    objects/                     content-addressed PNG store shared by all dataset versions
    spatial/round_<k>/           dataset/ (a version), avatar/, manifest.json
    temporal/round_<k>/          dataset/, avatar/, manifest.json
    evaluate/                    metrics.json, videos, contact sheet, plots, manifest.json
    export/                      avatar_<expression>.ply, manifest.json

``tasks/`` wraps each function as a cached Prefect task; ``dvc.yaml`` runs each through the CLI
(``zero1toa node <name>``). A notebook can call :func:`run_all`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import Config, node_params
from .dag import RoundPlan, final_round, plan_rounds, previous_round, run_dir_for  # noqa: F401  (the node layer's plan)
from .identity import code_digest
from .utils.manifest import Manifest, digest_path, read_manifest, upstream_digest

log = logging.getLogger("zero1toa")

# ----------------------------------------------------------------------------- preprocess + fit


def node_preprocess(image: Path, run_dir: Path, cfg: Config) -> dict:
    from .preprocess.pipeline import preprocess_image

    return preprocess_image(Path(image), Path(run_dir) / "preprocess", cfg.preprocess)


def node_fit_head(run_dir: Path, cfg: Config) -> dict:
    from .preprocess.head_fit import fit_head

    return fit_head(Path(run_dir) / "preprocess", Path(run_dir) / "head", cfg.head)


# ----------------------------------------------------------------------------- rounds


def round_clips(cfg: Config, plan: RoundPlan, head, reference) -> list:
    """The new clips of a round (progressive schedule, or everything at once for the ablation)."""
    from .progressive.schedules import spatial_clips, temporal_clips

    seed = cfg.run.seed
    ref_e, ref_j = reference.expression.numpy(), reference.jaw.numpy()
    sp, tp = cfg.stages.spatial, cfg.stages.temporal
    if cfg.stages.progressive:
        if plan.stage == "spatial":
            return spatial_clips(sp, plan.index, ref_e, ref_j, seed)
        return temporal_clips(tp, plan.index, head, ref_e, ref_j, seed)
    # Ablation: no simple-to-complex order. Every round draws from the full ranges of both
    # stages (largest yaw, largest expression magnitude), half of its clips each.
    from dataclasses import replace

    n = sp.clips_per_round if plan.stage == "spatial" else tp.clips_per_round
    half = max(1, n // 2)
    sp_full = replace(sp, yaw_start_deg=sp.yaw_end_deg, clips_per_round=half)
    tp_full = replace(tp, magnitude_start=tp.magnitude_end, clips_per_round=n - half)
    stage_offset = 0 if plan.stage == "spatial" else 1000
    clips = spatial_clips(sp_full, plan.index + stage_offset, ref_e, ref_j, seed)
    clips += temporal_clips(tp_full, plan.index + stage_offset, head, ref_e, ref_j, seed) if n - half > 0 else []
    for c, cid in zip(clips, round_clip_ids(cfg, plan), strict=True):  # ids unique per round and stage
        c.clip_id = cid
        c.stage = plan.stage
    return clips


def round_clip_ids(cfg: Config, plan: RoundPlan) -> list[str]:
    """The ids :func:`round_clips` gives a round's new clips (no head needed)."""
    from .progressive.schedules import clip_id

    n = cfg.stages.spatial.clips_per_round if plan.stage == "spatial" else cfg.stages.temporal.clips_per_round
    if cfg.stages.progressive:
        return [clip_id(plan.stage, plan.index, c) for c in range(n)]
    half, offset = max(1, n // 2), 0 if plan.stage == "spatial" else 1000
    ids = [clip_id("spatial", plan.index + offset, c) for c in range(half)] + [clip_id("temporal", plan.index + offset, c) for c in range(n - half)]
    return [f"{plan.stage}-{i}" for i in ids]


def refresh_schedule(cfg: Config):
    """Which clips every round of ``cfg`` refreshes, how often (a pandas table; nothing is run)."""
    from .symgen.refresh import simulate_refreshes

    rounds = []
    for plan in plan_rounds(cfg):
        spatial = plan.stage == "spatial"
        rounds.append(
            {
                "name": plan.name,
                "stage": plan.stage,
                "iterations": cfg.stages.spatial_iterations if spatial else cfg.stages.temporal_iterations,
                "new_clips": round_clip_ids(cfg, plan),
                "max_clips": cfg.stages.spatial.max_clips if spatial else cfg.stages.temporal.max_clips,
            }
        )
    sym = cfg.symgen
    return simulate_refreshes(rounds, sym.refresh_policy, sym.clips_per_refresh, sym.refresh_every if sym.update_dataset else 0)


def _round_strength(cfg: Config, plan: RoundPlan) -> float:
    n = cfg.stages.spatial.rounds if plan.stage == "spatial" else cfg.stages.temporal.rounds
    f = 0.0 if n <= 1 else plan.index / (n - 1)
    return cfg.symgen.strength_first + f * (cfg.symgen.strength_last - cfg.symgen.strength_first)


def initial_avatar(cfg: Config, head, reference):
    from .avatar.gaussians import colour_from_reference, init_on_mesh

    labels = getattr(head, "face_labels", None)
    parts = None
    if labels is not None:
        from .head.facemesh_rig import PART_NAMES

        parts = PART_NAMES
    torch.manual_seed(cfg.run.seed)
    g = init_on_mesh(head, cfg.avatar.init, seed=cfg.run.seed, face_labels=labels, part_names=parts)
    atlas = getattr(reference, "completion", None)
    if cfg.avatar.colour_from_reference:
        if atlas is not None:  # the completed texture first (every Gaussian), the photo where it saw them
            from .avatar.gaussians import colour_from_texture
            from .texture.atlas import atlas_face_mask, lookup

            rgb = atlas.rgb_tensor()
            colour_from_texture(g, head, lambda p: lookup(rgb, atlas.layout, p), atlas_face_mask(head), reference.expression)
        pose = _reference_pose(reference)
        colour_from_reference(g, head, reference.image, reference.camera, reference.mask, reference.expression, pose)
    return g


def _reference_pose(reference):
    from .head.base import HeadPose

    pose = HeadPose.neutral(1)
    pose.jaw = reference.jaw[None].clone()
    return pose


def node_round(run_dir: Path, cfg: Config, name: str, identity=None) -> dict:
    """Run one SymGEN round (``spatial_k`` / ``temporal_k``); resumes from its ``.work`` folder.

    ``identity`` (:class:`zero1toa.identity.NodeIdentity`; computed from the run folder when not
    given) decides whether the ``.work`` folder and its checkpoint belong to this round as it
    is configured now: a different one is discarded, never resumed.
    """
    from .avatar.checkpoint import load_avatar
    from .generate.factory import build_generator
    from .runfolder import load_reference
    from .symgen.dataset import ObjectStore, load_version
    from .symgen.round import RoundSpec, run_round

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    plans = {p.name: p for p in plan_rounds(cfg)}
    if name not in plans:
        raise KeyError(f"no round {name!r} in this configuration (rounds: {', '.join(plans)})")
    plan = plans[name]
    prev = previous_round(cfg, name)
    if identity is None:
        from .identity import identity_from_disk

        identity = identity_from_disk(cfg, name, run_dir)
    head, reference = load_reference(run_dir)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed % (2**32))
    if prev is None:
        gaussians = initial_avatar(cfg, head, reference)
        previous_version = None
        previous_avatar = "init"
        inputs = {"preprocess": upstream_digest(run_dir / "preprocess"), "head": upstream_digest(run_dir / "head")}
    else:
        prev_dir = run_dir / prev.folder
        if not (prev_dir / "avatar" / "avatar.json").exists():
            raise FileNotFoundError(f"round {name} needs {prev.name}'s outputs in {prev_dir}: run that round first")
        gaussians, head, _ = load_avatar(prev_dir / "avatar")
        previous_avatar = digest_path(prev_dir / "avatar")
        # every round reloads the reference and the head: their output digests, as the identity's
        inputs = {"preprocess": upstream_digest(run_dir / "preprocess"), "head": upstream_digest(run_dir / "head"), "previous_avatar": previous_avatar}
        previous_version = None
        if (prev_dir / "dataset" / "manifest.json").exists():  # SDS rounds write no dataset
            previous_version = load_version(prev_dir / "dataset")
            bad = previous_version.corrupt_frames()
            if bad:
                raise CorruptArtifactError(
                    f"round {name} cannot trust {prev.name}'s dataset: {len(bad)} frame(s) do not match their digest "
                    f"(e.g. {bad[0]}). Re-run {prev.name} (`zero1toa run` and `dvc repro` do so themselves)"
                )
            ObjectStore(run_dir / "objects").adopt(previous_version)  # e.g. after a `dvc pull`
            inputs["previous_dataset"] = previous_version.digest
    generator = build_generator(cfg.generator, head, reference, seed=cfg.run.seed)
    iterations = cfg.stages.spatial_iterations if plan.stage == "spatial" else cfg.stages.temporal_iterations
    max_clips = cfg.stages.spatial.max_clips if plan.stage == "spatial" else cfg.stages.temporal.max_clips
    spec = RoundSpec(
        name=plan.name,
        stage=plan.stage,
        index=plan.index,
        iterations=iterations,
        clips=round_clips(cfg, plan, head, reference),
        strength=_round_strength(cfg, plan),
        max_clips=max_clips,
        seed=cfg.run.seed * 1000 + list(plans).index(name),
    )
    record = {
        "generator": generator.info.name,
        "generator_weights": generator.info.weights,
        "head_licence": head.licence,
        "reference_camera": reference.camera.to_dict(),  # an avatar folder copied out of its run keeps the photo's view
    }
    if cfg.train.mode == "sds":
        from .train.sds import run_sds_round

        result = run_sds_round(
            spec, gaussians, head, reference, generator, run_dir / plan.folder, cfg.train, cfg.train.sds,
            previous_avatar=previous_avatar, progress=cfg.run.progress, record=record, identity=identity,
        )  # fmt: skip
        version = None
    else:
        result = run_round(
            spec, gaussians, head, reference, generator, previous_version, ObjectStore(run_dir / "objects"),
            run_dir / plan.folder, cfg.train, cfg.symgen, previous_avatar=previous_avatar,
            progress=cfg.run.progress, record=record, identity=identity,
        )  # fmt: skip
        version = result.version
    final = result.train.losses[-1] if result.train.losses else {}
    outputs = {"avatar": digest_path(result.avatar_dir)}
    metrics = {
        "final_loss": final.get("total"),
        "final_l1": final.get("l1"),
        "num_gaussians": result.train.num_gaussians,
        "refreshes": result.refreshes,
        "resumed_from_iteration": result.train.resumed_from,
    }
    extra = {
        "stage": plan.stage,
        "mode": cfg.train.mode,
        "strength": spec.strength,
        "losses": result.train.losses,
        "active_loss_terms": result.train.active_terms,
        "inactive_loss_terms": result.train.inactive_terms,
        "generator": asdict(generator.info),
        "licences": {"head": head.licence, "generator_weights": generator.info.weights},
    }
    if version is not None:
        outputs = {"dataset": version.digest, **outputs}
        metrics["dataset_samples"] = len(version)
        extra.update({"dataset_diff": result.diff, "trained_on_dataset": version.digest, "refresh_log": result.refresh_log})
    manifest = Manifest(
        node=name,
        params=node_params(cfg, "round"),
        inputs=inputs,
        outputs=outputs,
        code_version=code_digest("round"),
        seed=spec.seed,
        timings={"total": round(time.perf_counter() - t0, 3), **result.timings},
        metrics=metrics,
        extra=extra,
    )
    manifest.write(run_dir / plan.folder)
    return manifest.to_dict()


def round_is_complete(run_dir: Path, plan: RoundPlan) -> bool:
    """A round is done when its manifest and every output it lists exist (SDS rounds have no dataset)."""
    folder = Path(run_dir) / plan.folder
    man = read_manifest(folder)
    if not man or not (folder / "avatar" / "avatar.json").exists():
        return False
    return "dataset" not in man.get("outputs", {}) or (folder / "dataset" / "manifest.json").exists()


# ----------------------------------------------------------------------------- evaluate + export


def node_evaluate(run_dir: Path, cfg: Config) -> dict:
    from .evaluate.run import evaluate_run

    return evaluate_run(Path(run_dir), final_round(cfg).folder, cfg.evaluate, seed=cfg.run.seed)


def node_export(run_dir: Path, cfg: Config) -> dict:
    from .avatar.checkpoint import load_avatar
    from .avatar.ply import export_ply
    from .utils.io import atomic_dir

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    src = run_dir / final_round(cfg).folder / "avatar"
    gaussians, head, info = load_avatar(src)
    names = list(cfg.export.expressions)
    with atomic_dir(run_dir / "export") as tmp:
        files = {}
        for name in names:
            expr, jaw = head.expression_preset(name)
            pose = _reference_pose_from(jaw)
            world = gaussians.posed(head, expr[None], pose)[0]
            path = export_ply(tmp / f"avatar_{name}.ply", world)
            files[path.name] = digest_path(path)
        manifest = Manifest(
            node="export",
            params=node_params(cfg, "export"),
            inputs={"avatar": digest_path(src)},
            outputs=files,
            code_version=code_digest("export"),
            timings={"total": round(time.perf_counter() - t0, 3)},
            extra={"licence": head.licence, "num_gaussians": gaussians.num_gaussians},
        )
        manifest.write(tmp)
    return manifest.to_dict()


def _reference_pose_from(jaw: torch.Tensor):
    from .head.base import HeadPose

    pose = HeadPose.neutral(1)
    pose.jaw = jaw.reshape(1, 3).float()
    return pose


# ----------------------------------------------------------------------------- one node, all nodes


class CorruptArtifactError(RuntimeError):
    """A file a node trusts does not match the digest recorded when it was written."""


def node_function_call(node: str, run_dir: Path, cfg: Config, identity, image: Path | None = None) -> dict:
    """Run one node's function (no identity bookkeeping); returns its manifest dict."""
    kind = identity.kind
    if kind == "preprocess":
        if image is None:
            raise ValueError("the preprocess node needs an input image")
        return node_preprocess(Path(image), run_dir, cfg)
    if kind == "fit_head":
        return node_fit_head(run_dir, cfg)
    if kind == "round":
        return node_round(run_dir, cfg, node, identity=identity)
    if kind == "evaluate":
        return node_evaluate(run_dir, cfg)
    if kind == "export":
        return node_export(run_dir, cfg)
    raise KeyError(node)


def integrity_record(run_dir: Path, cfg: Config, node: str) -> dict[str, str]:
    """Content digest of each of the node's artifacts (what :func:`verify_node` re-checks)."""
    from .dag import artifact_paths

    out = {}
    for rel in artifact_paths(cfg, node):
        p = Path(run_dir) / rel
        if p.name != "manifest.json" and p.exists():
            out[rel] = digest_path(p)
    return out


def stamp_manifest(run_dir: Path, cfg: Config, node: str, manifest: dict, identity) -> dict:
    """Add the node's identity and its artifacts' digests to the manifest it wrote (atomically)."""
    from .dag import node_folder
    from .utils.io import write_json_atomic

    manifest = dict(manifest)
    manifest["identity"] = identity.record()
    manifest["integrity"] = integrity_record(run_dir, cfg, node)
    write_json_atomic(Path(run_dir) / node_folder(cfg, node) / "manifest.json", manifest)
    return manifest


def execute_node(node: str, run_dir: Path, cfg: Config, identity, image: Path | None = None) -> dict:
    """Run ``node`` and record what it was run with: the one way every launcher runs a node."""
    from . import faults

    run_dir = Path(run_dir)
    manifest = node_function_call(node, run_dir, cfg, identity, image)
    manifest = stamp_manifest(run_dir, cfg, node, manifest, identity)
    faults.point(f"after:{node}")
    return manifest


def verify_node(run_dir: Path, cfg: Config, node: str, identity) -> str | None:
    """Why ``node``'s result in ``run_dir`` cannot be reused (None: it is current and intact).

    Current: its manifest records this identity. Intact: every artifact still has the digest
    recorded when it was written (a truncated frame, parquet, checkpoint or .ply is caught here).
    """
    from .dag import artifact_paths, node_folder
    from .identity import describe_changes

    man = read_manifest(Path(run_dir) / node_folder(cfg, node))
    if not man:
        return "not run yet"
    changes = identity.changes(man.get("identity"))
    if changes:
        return f"its inputs changed ({describe_changes(changes)})"
    recorded = man.get("integrity") or {}
    for rel in artifact_paths(cfg, node):
        p = Path(run_dir) / rel
        if p.name == "manifest.json":
            continue
        if not p.exists():
            return f"{rel} is missing"
        if rel in recorded and digest_path(p) != recorded[rel]:
            return f"{rel} changed on disk since it was written (corrupt or edited)"
    return None


def run_all(image: Path, cfg: Config, refresh: bool = False, wait: bool = False, until: str | None = None) -> dict:
    """Every node in order without an orchestrator (what a notebook calls); returns the manifests.

    A node whose recorded identity equals its identity now and whose artifacts are intact is
    reused; any other is run (a killed round resumes from its ``.work`` folder). ``until`` stops
    after that node. The run folder is locked for the duration (:func:`zero1toa.runlock.run_lock`).
    """
    from .dag import dag_nodes, node_folder, output_digest, upstream_nodes
    from .identity import node_identity
    from .runlock import run_lock
    from .utils.io import sha256_file

    run_dir = run_dir_for(cfg).resolve()
    out: dict[str, dict] = {}
    with run_lock(run_dir, wait=wait):
        image_digest = sha256_file(Path(image))
        digests: dict[str, str] = {}
        for node in dag_nodes(cfg):
            upstream = {u: digests[u] for u in upstream_nodes(cfg, node)}
            ident = node_identity(cfg, node, run_dir, upstream, image_digest)
            why = "refresh" if refresh else verify_node(run_dir, cfg, node, ident)
            if why is None:
                man = read_manifest(run_dir / node_folder(cfg, node))
                log.info("%s: up to date", node)
            else:
                log.info("%s: running (%s)", node, why)
                man = execute_node(node, run_dir, cfg, ident, Path(image))
            digests[node] = output_digest(man)
            out[node] = man
            if node == until:
                break
    return out
