"""The SDS-only baseline: distil the avatar straight from the video diffusion model, no dataset.

Zero-1-to-A argues that score distillation (SDS) from a portrait video diffusion model
over-smooths a 4D avatar, because the model's pseudo ground truth is spatially and temporally
inconsistent and SDS averages its gradients; SymGEN caches and refines that pseudo ground truth
instead. This module is the baseline of that comparison: the same avatar, the same views and
expressions (the progressive schedule's clips), the same diffusion model (the
:class:`~zero1toa.generate.diffusion.AnimateDiffControlNetGenerator`: AnimateDiff UNet + landmark
ControlNet + optional IP-Adapter reference), the same regularisers and densification, but no
dataset: each step the avatar learns from the diffusion model's score directly.

One step, exactly:

1. Pick a clip of the round (uniformly, seeded) and a window of ``frames_per_step`` consecutive
   frames of it (default: the whole clip, at most the generator's window). Render those frames of
   the avatar *with gradients* at the generator's resolution (cameras orbiting the reference
   view, the clip's expressions and jaw), and draw the head's landmark maps for them (no
   gradient; the ControlNet's condition, as in generation).
2. Encode the renders with the pipeline's VAE: ``z0 = scaling_factor * E(2 x - 1)`` (posterior
   mean), per frame, arranged as a video latent ``[1, 4, F, h, w]``.
3. Draw one timestep for the clip, ``t ~ U{t_min T, ..., t_max T}`` (T the scheduler's training
   steps; ``t_max`` may anneal linearly to ``t_max_final`` over the round), and Gaussian noise
   ``eps``; ``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps`` with ``a_t`` the scheduler's
   ``alphas_cumprod`` (the DDPM forward process every SD sampler is trained on; no sampler's
   ``scale_model_input`` is involved, so the result does not depend on the configured sampler).
4. Predict the noise with the video UNet under the landmark ControlNet (residuals from the
   landmark maps at ``controlnet_conditioning_scale``), the prompt, and the IP-Adapter reference
   embedding when the model folder has one, with classifier-free guidance
   ``eps_hat = eps_u + s (eps_c - eps_u)``: the unconditional branch gets the negative prompt and
   zero image embeddings, both branches get the ControlNet (diffusers' pipeline does the same).
   ``v``-prediction models are converted to ``eps``. No gradient flows through this prediction.
5. The SDS gradient on the latents is ``g = w(t) (eps_hat - eps)`` with ``w(t) = 1 - a_t``
   (DreamFusion's weighting; ``weighting="uniform"``: ``w = 1``), optionally clamped elementwise
   (``grad_clip``) and with non-finite values zeroed. It is pulled back to the rendered pixels
   through the VAE encoder (vector-Jacobian product, frames in chunks of ``vae_chunk`` so memory
   stays bounded), divided by the number of frames, and scaled by ``weight``. Equivalently the
   step minimises ``weight * 0.5 ||z0 - sg(z0 - g)||^2 / F``, the value logged as ``sds``.
6. The reconstruction trainer's regularisers are added (position offset from the parent
   triangle and size hinge penalties, with ``train.loss.position`` / ``train.loss.scale`` and
   their thresholds), optionally a reference-view L1 + mask term (``reference_weight``, 0 by
   default: the pure baseline), and one backward pass through the renderer updates the
   Gaussians with the reconstruction trainer's Adam groups, learning-rate decay and gsplat
   densification (its 2D-gradient statistics gathered over all rendered frames).

Checkpoints and resume work as in :func:`zero1toa.train.trainer.train_round` (same
``TrainState``; the sampler's RNG is part of it). Diffusion modules are frozen for the duration
(their ``requires_grad`` flags are restored afterwards); nothing of the generator is trained.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor


from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar
from ..head.base import HeadModel, HeadPose
from .losses import regulariser_terms

if TYPE_CHECKING:  # the trainer is imported inside the functions, so trainer.py may import SDSConfig from here
    from .trainer import TrainConfig, TrainResult

log = logging.getLogger("zero1toa.train.sds")


@dataclass
class SDSConfig:
    """Settings of the SDS baseline (see the module docstring for where each one acts)."""

    guidance_scale: float | None = None  # CFG scale; None: the generator's setting. DreamFusion used 100 for text-only SDS; image+landmark conditioning needs far less
    t_min: float = 0.02  # timestep range as fractions of the scheduler's training steps (DreamFusion)
    t_max: float = 0.98
    t_max_final: float | None = None  # anneal t_max linearly to this over the round (None: fixed range)
    weighting: str = "sds"  # sds: w(t) = 1 - alphas_cumprod[t] | uniform: w = 1
    weight: float = 1.0  # multiplier of the SDS term against the regularisers
    grad_clip: float | None = None  # elementwise clamp of the latent gradient (None: off)
    frames_per_step: int | None = None  # frames rendered per step (None: the clip's, at most the generator's window)
    vae_chunk: int = 4  # frames per VAE-encoder backward chunk (memory bound)
    controlnet_conditioning_scale: float | None = None  # None: the generator's
    ip_adapter_scale: float | None = None  # None: the generator's
    prompt: str | None = None  # None: the generator's prompt / negative prompt
    negative_prompt: str | None = None
    reference_weight: float = 0.0  # L1 + mask to the photo in the reference view (0: the pure SDS baseline)


@contextlib.contextmanager
def _frozen(modules: list[torch.nn.Module]) -> Iterator[None]:
    """No gradient into the diffusion modules while distilling; flags restored afterwards."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _vae_in_float32(vae: torch.nn.Module) -> Iterator[None]:
    """Hold a half-precision VAE in float32 while distilling when its config asks for that
    (``force_upcast``, as SD's VAE does: its encoder overflows in float16). diffusers' pipeline
    upcasts for each encode; we backpropagate through the encoder, so the whole round runs in
    float32 and the original dtype comes back afterwards."""
    dtype = vae.dtype
    upcast = dtype in (torch.float16, torch.bfloat16) and bool(vae.config.get("force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype)


class SDSGuidance:
    """The diffusion side of SDS: encode renders, predict noise, pull the gradient back to pixels.

    Built once per round: the prompt and the reference's IP-Adapter embedding are encoded here.
    ``generator`` is an :class:`~zero1toa.generate.diffusion.AnimateDiffControlNetGenerator`.
    """

    def __init__(self, generator, reference_image: Tensor, cfg: SDSConfig) -> None:
        if cfg.weighting not in ("sds", "uniform"):
            raise ValueError(f"sds.weighting must be sds or uniform, got {cfg.weighting!r}")
        if not 0.0 <= cfg.t_min < cfg.t_max <= 1.0:
            raise ValueError(f"sds timestep range must satisfy 0 <= t_min < t_max <= 1, got {cfg.t_min}, {cfg.t_max}")
        pipe = getattr(generator, "pipeline", None)
        if pipe is None or not hasattr(pipe, "controlnet"):
            raise ValueError(
                "the SDS baseline needs a diffusion generator (generator.kind=animatediff with a local model folder, "
                f"or tiny); got {getattr(getattr(generator, 'info', None), 'name', type(generator).__name__)!r}"
            )
        self.generator, self.pipe, self.cfg = generator, pipe, cfg
        s = generator.settings
        self.guidance_scale = float(s.guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale)
        self.cfg_on = self.guidance_scale > 1.0
        self.control_scale = float(s.controlnet_conditioning_scale if cfg.controlnet_conditioning_scale is None else cfg.controlnet_conditioning_scale)
        self.device = generator.device
        self.resolution = generator.info.resolution
        self.max_frames = generator.info.frames_per_call
        sched = pipe.scheduler
        self.num_train_timesteps = int(sched.config.num_train_timesteps)
        self.alphas = sched.alphas_cumprod.to(self.device, torch.float32)  # [T]
        self.prediction_type = sched.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"SDS supports epsilon and v_prediction models, the scheduler says {self.prediction_type!r}")
        prompt = cfg.prompt if cfg.prompt is not None else s.prompt
        negative = cfg.negative_prompt if cfg.negative_prompt is not None else s.negative_prompt
        with torch.no_grad():
            pos, neg = pipe.encode_prompt(prompt, self.device, 1, self.cfg_on, negative if self.cfg_on else None)
            self.text = torch.cat([neg, pos]) if self.cfg_on else pos  # [B, seq, D], B = 2 with CFG
            self.image_embeds = None
            if generator.use_ip_adapter:
                pipe.set_ip_adapter_scale(float(s.ip_adapter_scale if cfg.ip_adapter_scale is None else cfg.ip_adapter_scale))
                pixels = generator._reference_pixels(reference_image.detach().cpu())
                self.image_embeds = pipe.prepare_ip_adapter_image_embeds(pixels, None, self.device, 1, self.cfg_on)

    def modules(self) -> list[torch.nn.Module]:
        p = self.pipe
        return [m for m in (p.vae, p.unet, p.controlnet, p.text_encoder, getattr(p, "image_encoder", None)) if m is not None]

    def encode(self, rgb: Tensor) -> Tensor:
        """[F, 3, R, R] in [0, 1] (on any device) -> latents [F, 4, h, w] float32 (differentiable)."""
        vae = self.pipe.vae
        x = (rgb.to(self.device, vae.dtype) * 2 - 1)
        return vae.encode(x).latent_dist.mean.float() * float(vae.config.scaling_factor)

    @torch.no_grad()
    def latent_gradient(self, latents: Tensor, maps: Tensor, t: int, noise: Tensor) -> tuple[Tensor, dict]:
        """SDS gradient on latents [F, 4, h, w] at timestep ``t`` with ``noise`` [F, 4, h, w]."""
        pipe = self.pipe
        Fn = latents.shape[0]
        a = self.alphas[t]
        z0 = latents.permute(1, 0, 2, 3)[None]  # [1, 4, F, h, w]
        eps = noise.to(self.device, torch.float32).permute(1, 0, 2, 3)[None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        B = 2 if self.cfg_on else 1
        model_in = zt.repeat(B, 1, 1, 1, 1).to(pipe.unet.dtype)  # [B, 4, F, h, w]
        ts = torch.tensor(t, device=self.device)
        text = self.text.repeat_interleave(Fn, dim=0).to(pipe.unet.dtype)  # [B*F, seq, D]
        ctrl_in = model_in.transpose(1, 2).reshape(B * Fn, model_in.shape[1], *model_in.shape[-2:])  # [B*F, 4, h, w], batch-major
        cond = maps.to(self.device, pipe.controlnet.dtype).clamp(0, 1).repeat(B, 1, 1, 1)  # [B*F, 3, R, R]
        down, mid = pipe.controlnet(
            ctrl_in, ts, encoder_hidden_states=text, controlnet_cond=cond,
            conditioning_scale=self.control_scale, guess_mode=False, return_dict=False,
        )  # fmt: skip
        added = {"image_embeds": self.image_embeds} if self.image_embeds is not None else None
        pred = pipe.unet(
            model_in, ts, encoder_hidden_states=text, added_cond_kwargs=added,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample.float()  # fmt: skip
        if self.cfg_on:
            uncond, cond_pred = pred.chunk(2)
            pred = uncond + self.guidance_scale * (cond_pred - uncond)
        if self.prediction_type == "v_prediction":
            pred = a.sqrt() * pred + (1 - a).sqrt() * zt  # v -> eps
        w = (1 - a) if self.cfg.weighting == "sds" else torch.ones((), device=self.device)
        grad = w * (pred - eps)
        if self.cfg.grad_clip is not None:
            grad = grad.clamp(-self.cfg.grad_clip, self.cfg.grad_clip)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        grad = grad[0].permute(1, 0, 2, 3).contiguous()  # [F, 4, h, w]
        info = {"t": int(t), "w": float(w), "grad_norm": float(grad.norm()), "sds": float(0.5 * grad.pow(2).sum() / Fn)}
        return grad, info

    def pixel_gradient(self, rgb: Tensor, maps: Tensor, t: int, noise: Tensor) -> tuple[Tensor, dict]:
        """d(SDS)/d(pixels) [F, 3, R, R] for renders ``rgb`` (detached inside), divided by F."""
        Fn = rgb.shape[0]
        chunk = max(1, int(self.cfg.vae_chunk))
        x_all = rgb.detach()
        if Fn <= chunk:  # one pass: keep the encoder graph, reuse its latents
            x = x_all.to(self.device, self.pipe.vae.dtype).requires_grad_(True)
            lat = self.encode(x)
            grad, info = self.latent_gradient(lat.detach(), maps, t, noise)
            (dx,) = torch.autograd.grad(lat, x, grad_outputs=grad)  # input gradient only: nothing accumulates in the VAE
            return (dx.float() / Fn).to(rgb.device), info
        with torch.no_grad():  # latents of all frames first (the video model sees them together)
            lat = torch.cat([self.encode(x_all[s : s + chunk]) for s in range(0, Fn, chunk)])
        grad, info = self.latent_gradient(lat, maps, t, noise)
        out = []
        for s in range(0, Fn, chunk):  # then the encoder's VJP chunk by chunk
            x = x_all[s : s + chunk].to(self.device, self.pipe.vae.dtype).requires_grad_(True)
            (dx,) = torch.autograd.grad(self.encode(x), x, grad_outputs=grad[s : s + chunk])
            out.append(dx.float())
        return (torch.cat(out) / Fn).to(rgb.device), info


def _merge_metas(metas: list[dict]) -> dict | None:
    """One densification record for F separately rendered frames (gsplat's layout, C = F)."""
    grads = [m["means2d"].grad for m in metas]
    if any(g is None for g in grads):
        return None
    return {
        "means2d": SimpleNamespace(grad=torch.cat(grads)),
        "radii": torch.cat([m["radii"] for m in metas]),
        "width": metas[0]["width"],
        "height": metas[0]["height"],
        "n_cameras": sum(int(m.get("n_cameras", 1)) for m in metas),
        "gaussian_ids": None,
    }


def sds_train(
    gaussians: BoundGaussians,
    head: HeadModel,
    reference,  # zero1toa.symgen.round.Reference
    generator,  # AnimateDiffControlNetGenerator
    clips: list,  # progressive.schedules.Clip
    iterations: int,
    cfg: TrainConfig,
    seed: int,
    sds: SDSConfig | None = None,
    checkpoint_path: Path | None = None,
    round_name: str = "sds",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    identity: str = "",
) -> TrainResult:
    """Optimise ``gaussians`` by SDS for ``iterations`` steps (resuming from a checkpoint if any).

    ``sds`` defaults to ``cfg.sds`` when the train config carries one, else :class:`SDSConfig`.
    Logged rows (every ``cfg.log_every`` steps, averaged): total, sds, position, scale,
    (reference), grad_norm, t, num_gaussians.
    """
    from ..render.camera import clip_cameras
    from ..render.landmark_maps import head_landmark_maps
    from .trainer import OptimisationLoop, TrainResult

    if not clips:
        raise ValueError("the SDS baseline needs at least one clip (views/expressions to distil)")
    sds = sds or getattr(cfg, "sds", None) or SDSConfig()
    t0 = time.perf_counter()
    guidance = SDSGuidance(generator, reference.image, sds)
    R = guidance.resolution
    window = min(guidance.max_frames, sds.frames_per_step or guidance.max_frames)
    loop = OptimisationLoop(gaussians, cfg, iterations, seed, checkpoint_path, round_name, "sds", identity)
    gen = loop.gen

    ref_cam = ref_target = ref_mask = None
    if sds.reference_weight > 0:
        dev = gaussians.params["means"].device
        ref_cam = reference.camera.resized(R, R)
        ref_target = F.interpolate(reference.image[None].float(), size=(R, R), mode="bilinear", antialias=True, align_corners=False).to(dev)
        ref_mask = F.interpolate(reference.mask[None, None].float(), size=(R, R), mode="bilinear", antialias=True, align_corners=False).to(dev)
    maps_cache: dict[tuple[int, int], tuple] = {}

    def clip_window(ci: int, s: int, n: int) -> tuple:
        key = (ci, s)
        if key not in maps_cache:
            clip = clips[ci]
            cams = clip_cameras(clip, reference.camera, reference.target, R)[s : s + n]
            expr = torch.from_numpy(clip.expressions[s : s + n]).float()
            poses = clip.poses()[s : s + n]
            with torch.no_grad():
                maps = head_landmark_maps(head, head.animate(expr, poses), cams, style=generator.info.landmark_style)
            maps_cache[key] = (cams, expr, poses, maps)
        return maps_cache[key]

    t_lo = max(1, int(round(sds.t_min * guidance.num_train_timesteps)))
    with _frozen(guidance.modules()), _vae_in_float32(guidance.pipe.vae):
        for step in loop.steps(progress, f"{round_name} (sds)"):
            ci = int(torch.randint(0, len(clips), (1,), generator=gen))
            n_frames = clips[ci].num_frames
            n = min(window, n_frames)
            s0 = int(torch.randint(0, n_frames - n + 1, (1,), generator=gen))
            cams, expr, poses, maps = clip_window(ci, s0, n)
            frac = step / max(1, iterations - 1)
            t_max = sds.t_max if sds.t_max_final is None else sds.t_max + frac * (sds.t_max_final - sds.t_max)
            t_hi = max(t_lo + 1, int(round(t_max * guidance.num_train_timesteps)))
            t = int(torch.randint(t_lo, min(t_hi, guidance.num_train_timesteps - 1) + 1, (1,), generator=gen))
            h, w = R // guidance.pipe.vae_scale_factor, R // guidance.pipe.vae_scale_factor
            noise = torch.randn(n, 4, h, w, generator=gen)

            out = render_avatar(gaussians, head, cams, expr, poses, cfg.background)
            for meta in out.metas:
                loop.pre_backward(step, meta)
            d_rgb, info = guidance.pixel_gradient(out.rgb, maps, t, noise)
            parts = regulariser_terms(gaussians.params, cfg.loss)
            weights = {"position": cfg.loss.position, "scale": cfg.loss.scale}
            objective = sds.weight * (out.rgb * d_rgb).sum() + sum(weights[k] * v for k, v in parts.items())
            if sds.reference_weight > 0:
                pose = HeadPose.neutral(1)
                pose.jaw = reference.jaw.reshape(1, 3).float()
                ref_out = render_avatar(gaussians, head, ref_cam, reference.expression.reshape(1, -1).float(), pose, cfg.background)
                parts["reference"] = (ref_out.rgb - ref_target).abs().mean() + (ref_out.alpha - ref_mask).abs().mean()
                objective = objective + sds.reference_weight * parts["reference"]
            objective.backward()
            loop.apply(step, _merge_metas(out.metas) if loop.strategy is not None else None)
            reg_total = sum(weights.get(k, sds.reference_weight) * float(v.detach()) for k, v in parts.items())
            row = {"total": sds.weight * info["sds"] + reg_total, "sds": info["sds"], **{k: float(v.detach()) for k, v in parts.items()}, "grad_norm": info["grad_norm"], "t": float(t)}
            loop.record(step, row, {"sds": ("sds", "{:.3f}"), "t": ("t", "{:.0f}")}, on_step)
            loop.maybe_save(step, {})
    active = {"sds": sds.weight, "position": cfg.loss.position, "scale": cfg.loss.scale}
    if sds.reference_weight > 0:
        active["reference"] = sds.reference_weight
    inactive = {k: "SDS baseline: no dataset to reconstruct" for k in ("l1", "ssim", "lpips", "alpha") if getattr(cfg.loss, k, 0) > 0}
    return TrainResult(
        steps=iterations,
        losses=loop.history,
        seconds=time.perf_counter() - t0,
        resumed_from=loop.start,
        num_gaussians=gaussians.num_gaussians,
        active_terms={k: v for k, v in active.items() if v > 0},
        inactive_terms=inactive,
    )


@dataclass
class SDSRoundResult:
    """What :func:`run_sds_round` returns: :class:`zero1toa.symgen.round.RoundResult` minus the dataset."""

    avatar_dir: Path
    train: TrainResult
    seconds: float
    timings: dict = field(default_factory=dict)
    refreshes: int = 0  # no dataset, nothing refreshed (kept for code that reads RoundResult)
    diff: dict = field(default_factory=dict)


def run_sds_round(
    spec,  # zero1toa.symgen.round.RoundSpec
    gaussians: BoundGaussians,
    head: HeadModel,
    reference,
    generator,
    out_dir: Path,
    train_cfg: TrainConfig,
    sds_cfg: SDSConfig | None = None,
    previous_avatar: str = "init",
    progress: bool = True,
    record: dict | None = None,
    identity=None,
) -> SDSRoundResult:
    """One SDS round into ``out_dir/avatar`` (no ``dataset/``); resumes from ``out_dir/.work``.

    The same inputs as :func:`zero1toa.symgen.round.run_round` minus the dataset ones (previous
    version, object store, SymGEN settings): ``spec.clips`` are the views/expressions distilled,
    ``spec.iterations`` the steps, ``spec.seed`` the seed. ``identity`` guards the resume as in
    :func:`~zero1toa.symgen.round.run_round`.
    """
    from ..avatar.checkpoint import save_avatar
    from ..symgen.round import open_work_folder, standalone_identity
    from ..utils.io import write_json_atomic

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    sds_cfg = sds_cfg or getattr(train_cfg, "sds", None) or SDSConfig()
    if identity is None:
        train_with_sds = replace(train_cfg, sds=sds_cfg) if hasattr(train_cfg, "sds") else train_cfg
        identity = standalone_identity(spec, None, train_with_sds, generator, None, previous_avatar, out_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not open_work_folder(work, identity, spec.name):
        write_json_atomic(work / "spec.json", {"identity": identity.record(), "round": spec.name})
    tt = time.perf_counter()
    if getattr(generator, "pipeline", None) is None:
        # An image generator (the benchmark's simulated one): SDS's mechanism is a fresh target
        # from the current render at a random strength every step, used once.
        from .fresh_targets import FreshTargets, clip_frames
        from .trainer import train_round

        cams, expr, jaws = clip_frames(spec.clips, reference, generator.info.resolution)
        source = FreshTargets(head, reference.image, generator, cams, expr, jaws, (sds_cfg.t_min, sds_cfg.t_max), spec.seed, train_cfg.background)
        result = train_round(
            gaussians, head, source, spec.iterations, train_cfg, spec.seed,
            checkpoint_path=work / "checkpoint.pt", round_name=spec.name, progress=progress, identity=identity.digest,
        )  # fmt: skip
    else:
        result = sds_train(
            gaussians, head, reference, generator, spec.clips, spec.iterations, train_cfg, spec.seed,
            sds=sds_cfg, checkpoint_path=work / "checkpoint.pt", round_name=spec.name, progress=progress, identity=identity.digest,
        )  # fmt: skip
    timings = {"train": round(time.perf_counter() - tt, 3)}
    avatar_dir = save_avatar(
        out_dir / "avatar",
        gaussians,
        head,
        {
            "round": spec.name,
            "mode": "sds",
            "trained_on_dataset": None,
            "previous_avatar": previous_avatar,
            "iterations": spec.iterations,
            "clips": [c.clip_id for c in spec.clips],
            "losses": result.losses,
            "active_loss_terms": result.active_terms,
            "inactive_loss_terms": result.inactive_terms,
            "sds": asdict(sds_cfg),
            "reference_camera": reference.camera.to_dict(),  # lets animate/export find the view without the run folder
            **(record or {}),
        },
    )
    shutil.rmtree(work, ignore_errors=True)
    return SDSRoundResult(avatar_dir, result, time.perf_counter() - t0, timings)
