"""The optimisation loop of one SymGEN round, resumable.

gsplat's ``simple_trainer`` shape: one config dataclass, Adam per parameter group (what gsplat's
strategies expect), and densification as a strategy object (gsplat's ``DefaultStrategy``,
working unchanged on our bound Gaussians because the binding travels inside the parameter dict).

Resumability: every ``checkpoint_every`` iterations the loop saves the Gaussians, the optimiser
states, the densification state, the iteration, the RNG states and the dataset it trains on
(via the data source). A killed process resumes from the last checkpoint and, with the same
seeds, continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import logging

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import faults
from ..avatar.checkpoint import CheckpointError, TrainState, capture_rng, load_train_state, restore_rng, save_train_state
from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar
from ..head.base import HeadModel, HeadPose
from ..render.camera import Cameras
from .losses import AvatarLoss, LossConfig
from .samples import SampleTensors
from .sds import SDSConfig

log = logging.getLogger("zero1toa.train")


@dataclass
class OptimConfig:
    """Adam learning rates; positions/scales are in triangle-local units (see avatar.gaussians)."""

    means: float = 3e-3
    means_final: float = 3e-4  # exponential decay of the position lr over a round
    scales: float = 1.7e-2
    quats: float = 1e-3
    opacities: float = 5e-2
    sh0: float = 5e-3
    shN_factor: float = 1 / 20  # shN lr = sh0 lr x this


@dataclass
class DensifyConfig:
    """gsplat DefaultStrategy settings (scene scale = 1 triangle size)."""

    enabled: bool = True
    refine_start: int = 30  # round-local iteration
    refine_stop_fraction: float = 0.75  # stop refining after this fraction of the round
    refine_every: int = 30
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.35  # split (not clone) Gaussians larger than this many triangle sizes
    prune_opa: float = 0.01
    max_gaussians: int = 60000  # growth stops at this count (memory and CPU time stay bounded)


@dataclass
class TrainConfig:
    # symgen: reconstruction on the SymGEN dataset (the method); sds: the paper's SDS-only
    # baseline, distilling each step straight from the video diffusion model (needs a diffusion
    # generator: generator=tiny or generator=animatediff)
    mode: str = "symgen"
    sds: SDSConfig = field(default_factory=SDSConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    background: float = 1.0
    # Each step renders a view_px square: frames larger than that alternate between the whole
    # frame downsampled to view_px (even steps: the whole head) and a view_px window of the frame
    # at full resolution around a random foreground pixel (odd steps: the detail). Rendering cost
    # per step is then that of a view_px frame. 0: always the whole frame at full resolution.
    view_px: int = 256
    checkpoint_every: int = 60  # iterations; 0 disables mid-round checkpoints
    log_every: int = 10


class BatchSource(Protocol):
    """What the loop trains on: the samples to draw this step's frame from.

    The trainer knows nothing of where the samples come from (a SymGEN dataset version that the
    round refreshes between training segments, one fresh target per step for the SDS baseline)
    or of refresh policies. ``state`` must hold only tensors and plain values: checkpoints load
    with ``weights_only=True``.
    """

    def batch(self, step: int, gaussians: BoundGaussians) -> SampleTensors: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...


def make_optimizers(gaussians: BoundGaussians, cfg: OptimConfig) -> dict[str, torch.optim.Optimizer]:
    lrs = {
        "means": cfg.means,
        "scales": cfg.scales,
        "quats": cfg.quats,
        "opacities": cfg.opacities,
        "sh0": cfg.sh0,
        "shN": cfg.sh0 * cfg.shN_factor,
    }
    return {
        name: torch.optim.Adam([{"params": p, "lr": lrs[name], "name": name}], eps=1e-15)
        for name, p in gaussians.params.items()
        if p.requires_grad
    }


class _BoundedStrategy:
    """gsplat DefaultStrategy with a ceiling on the Gaussian count."""

    def __init__(self, cfg: DensifyConfig, iterations: int) -> None:
        from gsplat.strategy import DefaultStrategy

        self.cfg = cfg
        self.strategy = DefaultStrategy(
            prune_opa=cfg.prune_opa,
            grow_grad2d=cfg.grow_grad2d,
            grow_scale3d=cfg.grow_scale3d,
            refine_start_iter=cfg.refine_start,
            refine_stop_iter=max(cfg.refine_start + 1, int(iterations * cfg.refine_stop_fraction)),
            refine_every=cfg.refine_every,
            reset_every=10**9,  # short rounds: no opacity reset
            absgrad=False,
            verbose=False,
        )
        self.state = self.strategy.initialize_state(scene_scale=1.0)

    def check(self, params, optimizers) -> None:
        self.strategy.check_sanity(params, optimizers)

    def pre_backward(self, params, optimizers, step: int, info: dict) -> None:
        self.strategy.step_pre_backward(params, optimizers, self.state, step, info)

    def post_backward(self, params, optimizers, step: int, info: dict) -> None:
        full = params["means"].shape[0] >= self.cfg.max_gaussians
        saved = self.strategy.grow_grad2d
        if full:
            self.strategy.grow_grad2d = float("inf")  # prune only
        try:
            self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)
        finally:
            self.strategy.grow_grad2d = saved


@dataclass
class TrainResult:
    steps: int
    losses: list[dict]  # every log_every iterations: step, total and each term
    seconds: float
    resumed_from: int  # 0 when started fresh
    num_gaussians: int
    active_terms: dict[str, float]
    inactive_terms: dict[str, str]


class OptimisationLoop:
    """What every avatar training loop shares (the reconstruction trainer and the SDS baseline).

    Adam per parameter group, the densification strategy, the sampling RNG, the position-lr
    decay, averaged log rows, the progress bar, and checkpoint save/resume: a checkpoint is
    accepted only when it was written under the same ``identity`` (the round's
    :class:`zero1toa.identity.NodeIdentity` digest), round and ``mode``, and is readable; any other
    is discarded with a log line and training starts afresh. ``extra`` carries what the caller
    needs to continue (its data source, say) and comes back through :attr:`resumed_extra`.
    """

    def __init__(
        self,
        gaussians: BoundGaussians,
        cfg: TrainConfig,
        iterations: int,
        seed: int,
        checkpoint_path: Path | None,
        round_name: str,
        mode: str,
        identity: str = "",
    ) -> None:
        self.gaussians, self.cfg, self.iterations = gaussians, cfg, iterations
        self.checkpoint_path, self.round_name, self.mode, self.identity = checkpoint_path, round_name, mode, identity
        self.gen = torch.Generator().manual_seed(seed)
        self.optimizers = make_optimizers(gaussians, cfg.optim)
        self.strategy = _BoundedStrategy(cfg.densify, iterations) if cfg.densify.enabled else None
        self.start = 0
        self.history: list[dict] = []
        self.resumed_extra: dict | None = None
        self._running: dict[str, float] = {}
        st = self._acceptable_checkpoint()
        if st is not None:
            _restore(gaussians, self.optimizers, self.strategy, st)
            self.gen.set_state(st.extra["sampler_rng"])
            restore_rng(st.rng)
            self.history = list(st.extra.get("history", []))
            self.start = st.step
            self.resumed_extra = st.extra
            log.info("%s: resuming %s from iteration %d", round_name, mode, self.start)
        if self.strategy is not None:
            self.strategy.check(gaussians.params, self.optimizers)
        self.decay = (cfg.optim.means_final / cfg.optim.means) ** (1.0 / max(iterations, 1))
        for group in self.optimizers["means"].param_groups:
            group["lr"] = cfg.optim.means * self.decay**self.start

    def _acceptable_checkpoint(self):
        """The checkpoint to resume from, or None (a foreign, stale or unreadable one is deleted)."""
        path = self.checkpoint_path
        if path is None or not Path(path).exists():
            return None
        try:
            st = load_train_state(path)
        except CheckpointError as exc:
            log.warning("%s: discarding an unreadable checkpoint (%s); training from the start", self.round_name, exc)
            Path(path).unlink(missing_ok=True)
            return None
        why = None
        if st.round_name != self.round_name or st.extra.get("mode", "symgen") != self.mode:
            why = f"it belongs to {st.round_name} ({st.extra.get('mode', 'symgen')})"
        elif st.extra.get("identity", "") != self.identity:
            why = "it was written under other settings, inputs or code"
        if why:
            log.warning("%s: discarding its checkpoint: %s; training from the start", self.round_name, why)
            Path(path).unlink(missing_ok=True)
            return None
        return st

    def steps(self, progress: bool, desc: str):
        self.bar = _progress(range(self.start, self.iterations), progress, desc, total=self.iterations, initial=self.start)
        return self.bar

    def open_bar(self, progress: bool, desc: str) -> None:
        """A progress bar advanced by hand (for loops run in segments)."""
        self.bar = _progress(None, progress, desc, total=self.iterations, initial=self.start)

    def pre_backward(self, step: int, info: dict) -> None:
        if self.strategy is not None:
            self.strategy.pre_backward(self.gaussians.params, self.optimizers, step, info)

    def apply(self, step: int, info: dict | None) -> None:
        """Adam step on every group, densification with ``info`` (None: skip), position-lr decay."""
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.strategy is not None and info is not None:
            self.strategy.post_backward(self.gaussians.params, self.optimizers, step, info)
        for group in self.optimizers["means"].param_groups:
            group["lr"] *= self.decay

    def record(self, step: int, values: dict[str, float], postfix: dict[str, tuple[str, str]], on_step=None) -> None:
        """Accumulate this step's values; every ``log_every`` steps append their average to the history.

        ``postfix``: what the progress bar shows, ``{label: (key in values, format)}``.
        """
        for k, v in values.items():
            self._running[k] = self._running.get(k, 0.0) + v
        if (step + 1) % self.cfg.log_every == 0 or step + 1 == self.iterations:
            n = (step % self.cfg.log_every) + 1
            row = {"step": step + 1, **{k: v / n for k, v in self._running.items()}, "num_gaussians": self.gaussians.num_gaussians}
            self.history.append(row)
            self._running = {}
            if hasattr(self.bar, "set_postfix"):
                self.bar.set_postfix(**{label: fmt.format(row[key]) for label, (key, fmt) in postfix.items()}, n=self.gaussians.num_gaussians)
            if on_step is not None:
                on_step(step + 1, row)

    def maybe_save(self, step: int, extra: dict) -> None:
        """Checkpoint after ``step`` on the configured cadence (never after the last step)."""
        done = step + 1
        if self.checkpoint_path is None or not self.cfg.checkpoint_every or done % self.cfg.checkpoint_every or done >= self.iterations:
            return
        self.save(done, extra)

    def save(self, done: int, extra: dict) -> None:
        """Checkpoint now: ``done`` iterations are behind us."""
        if self.checkpoint_path is None:
            return
        save_train_state(
            self.checkpoint_path,
            TrainState(
                step=done,
                params={k: v.detach().clone() for k, v in self.gaussians.params.items()},
                optimizers={k: o.state_dict() for k, o in self.optimizers.items()},
                strategy_state=dict(self.strategy.state) if self.strategy is not None else {},
                sh_degree=self.gaussians.sh_degree,
                round_name=self.round_name,
                dataset_version="",  # the trainer knows no datasets (the field stays for old checkpoints)
                rng=capture_rng(),
                extra={"mode": self.mode, "identity": self.identity, "sampler_rng": self.gen.get_state(), "history": self.history, **extra},
            ),
        )


class Trainer:
    """The reconstruction trainer of one round, run in segments by its caller.

    ``run(source, stop)`` optimises from the current iteration up to ``stop`` on whatever
    ``source`` hands it; between two calls the caller may change the data (SymGEN refreshes its
    dataset there) and force a checkpoint with :meth:`save`. Checkpoints on the configured cadence
    happen inside ``run``. A checkpoint carries the source's ``state()``; after a resume it is in
    :attr:`resumed_source_state` for the caller to restore.
    """

    def __init__(
        self,
        gaussians: BoundGaussians,
        head: HeadModel,
        iterations: int,
        cfg: TrainConfig,
        seed: int,
        checkpoint_path: Path | None = None,
        round_name: str = "round",
        progress: bool = True,
        on_step: Callable[[int, dict], None] | None = None,
        identity: str = "",
    ) -> None:
        self.t0 = time.perf_counter()
        self.gaussians, self.head, self.iterations, self.cfg = gaussians, head, iterations, cfg
        self.loss_fn = AvatarLoss(cfg.loss)
        self.loop = OptimisationLoop(gaussians, cfg, iterations, seed, checkpoint_path, round_name, "symgen", identity)
        self.step = self.loop.start
        self.on_step = on_step
        self.resumed_source_state = self.loop.resumed_extra.get("source") if self.loop.resumed_extra is not None else None
        self.loop.open_bar(progress, round_name)

    def run(self, source: BatchSource, stop: int) -> None:
        loop, gen, cfg = self.loop, self.loop.gen, self.cfg
        for step in range(self.step, min(stop, self.iterations)):
            t = source.batch(step, self.gaussians)
            n = t.frames.shape[0]
            if t.weights is None:
                idx = int(torch.randint(0, n, (1,), generator=gen))
            else:
                idx = int(torch.multinomial(t.weights, 1, generator=gen))
            cams, frame, mask = training_view(t, idx, cfg.view_px, step, gen)
            pose = HeadPose.neutral(1)
            pose.jaw = t.jaws[idx : idx + 1]
            out = render_avatar(self.gaussians, self.head, cams, t.expressions[idx : idx + 1], pose, cfg.background)
            info = out.metas[0]
            loop.pre_backward(step, info)
            crop_at = tuple(torch.rand(2, generator=gen).tolist())
            loss, parts = self.loss_fn(out.rgb, out.alpha, frame, mask, self.gaussians.params, crop_at)
            loss.backward()
            loop.apply(step, info)
            loop.record(step, {"total": float(loss.detach()), **parts}, {"loss": ("total", "{:.3f}"), "l1": ("l1", "{:.4f}")}, self.on_step)
            if hasattr(loop.bar, "update"):
                loop.bar.update(1)
            loop.maybe_save(step, {"source": source.state()})
            faults.point("round:step")
            self.step = step + 1

    def save(self, source: BatchSource) -> None:
        """Checkpoint at the current iteration (e.g. right after the caller changed the data)."""
        if self.step < self.iterations:
            self.loop.save(self.step, {"source": source.state()})

    def result(self) -> TrainResult:
        if hasattr(self.loop.bar, "close"):
            self.loop.bar.close()
        return TrainResult(
            steps=self.iterations,
            losses=self.loop.history,
            seconds=time.perf_counter() - self.t0,
            resumed_from=self.loop.start,
            num_gaussians=self.gaussians.num_gaussians,
            active_terms=self.loss_fn.active_terms,
            inactive_terms=self.loss_fn.inactive_terms,
        )


def training_view(t: SampleTensors, idx: int, view_px: int, step: int, gen: torch.Generator) -> tuple[Cameras, Tensor, Tensor]:
    """(camera, target frame [1, 3, v, v], mask [1, 1, v, v]) of sample ``idx`` at ``step`` (see TrainConfig.view_px)."""
    R = t.resolution
    frame, mask = t.frames[idx : idx + 1], t.masks[idx : idx + 1]  # [1, 3, R, R], [1, 1, R, R]
    cams = Cameras(t.viewmats[idx : idx + 1], t.Ks[idx : idx + 1], R, R)
    if view_px <= 0 or view_px >= R:
        return cams, frame, mask
    if step % 2 == 0:
        size = (view_px, view_px)
        return cams.resized(view_px, view_px), F.interpolate(frame.float(), size=size, mode="area"), F.interpolate(mask.float(), size=size, mode="area")
    fg = torch.nonzero(mask[0, 0] > 0.5)  # [P, 2] (row, col)
    if len(fg):
        row, col = fg[int(torch.randint(0, len(fg), (1,), generator=gen))].tolist()
    else:
        row, col = R // 2, R // 2
    y0 = min(max(row - view_px // 2, 0), R - view_px)
    x0 = min(max(col - view_px // 2, 0), R - view_px)
    Ks = t.Ks[idx : idx + 1].clone()
    Ks[:, 0, 2] -= x0
    Ks[:, 1, 2] -= y0
    window = (slice(None), slice(None), slice(y0, y0 + view_px), slice(x0, x0 + view_px))
    return Cameras(t.viewmats[idx : idx + 1], Ks, view_px, view_px), frame[window], mask[window]


def train_round(
    gaussians: BoundGaussians,
    head: HeadModel,
    source: BatchSource,
    iterations: int,
    cfg: TrainConfig,
    seed: int,
    checkpoint_path: Path | None = None,
    round_name: str = "round",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    identity: str = "",
) -> TrainResult:
    """Optimise ``gaussians`` on ``source`` for ``iterations`` steps in one go (resuming if a
    checkpoint written under the same ``identity`` exists)."""
    trainer = Trainer(gaussians, head, iterations, cfg, seed, checkpoint_path, round_name, progress, on_step, identity)
    if trainer.resumed_source_state is not None:
        source.load_state(trainer.resumed_source_state)
    trainer.run(source, iterations)
    return trainer.result()


def _restore(gaussians: BoundGaussians, optimizers: dict, strategy: _BoundedStrategy | None, st: TrainState) -> None:
    """Put a checkpoint's Gaussians (count may differ after densification) and optimizer states back."""
    for name, value in st.params.items():
        gaussians.params[name] = torch.nn.Parameter(value.clone(), requires_grad=(name != "binding"))
    for name, opt in optimizers.items():
        opt.param_groups[0]["params"] = [gaussians.params[name]]
        opt.state.clear()
        opt.load_state_dict(st.optimizers[name])
    if strategy is not None:
        strategy.state.update(st.strategy_state)


def _progress(it, enabled: bool, desc: str, total: int, initial: int):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, initial=initial, leave=False, dynamic_ncols=True, mininterval=1.0)




