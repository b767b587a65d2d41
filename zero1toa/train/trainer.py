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
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import Tensor

from ..avatar.checkpoint import TrainState, capture_rng, load_train_state, restore_rng, save_train_state
from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar
from ..head.base import HeadModel, HeadPose
from ..render.camera import Cameras
from ..symgen.dataset import SampleTensors
from .losses import AvatarLoss, LossConfig
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
    checkpoint_every: int = 60  # iterations; 0 disables mid-round checkpoints
    log_every: int = 10


class DataSource(Protocol):
    """What the loop trains on; SymGEN's round implements it (and refreshes it)."""

    tensors: SampleTensors

    def maybe_refresh(self, step: int, gaussians: BoundGaussians) -> bool: ...

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


def train_round(
    gaussians: BoundGaussians,
    head: HeadModel,
    data: DataSource,
    iterations: int,
    cfg: TrainConfig,
    seed: int,
    checkpoint_path: Path | None = None,
    round_name: str = "round",
    dataset_version: str = "",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Optimise ``gaussians`` on ``data`` for ``iterations`` steps (resuming if a checkpoint exists)."""
    t0 = time.perf_counter()
    loss_fn = AvatarLoss(cfg.loss)
    gen = torch.Generator().manual_seed(seed)
    start = 0
    history: list[dict] = []
    optimizers = make_optimizers(gaussians, cfg.optim)
    strategy = _BoundedStrategy(cfg.densify, iterations) if cfg.densify.enabled else None

    if checkpoint_path is not None and Path(checkpoint_path).exists():
        st = load_train_state(checkpoint_path)
        if st.round_name == round_name:
            _restore(gaussians, optimizers, strategy, st)
            data.load_state(st.extra["data"])
            gen.set_state(st.extra["sampler_rng"])
            restore_rng(st.rng)
            history = list(st.extra.get("history", []))
            start = st.step
            log.info("%s: resuming from iteration %d", round_name, start)
        else:
            log.warning("%s: ignoring checkpoint of %s", round_name, st.round_name)
    if strategy is not None:
        strategy.check(gaussians.params, optimizers)

    decay = (cfg.optim.means_final / cfg.optim.means) ** (1.0 / max(iterations, 1))
    for group in optimizers["means"].param_groups:
        group["lr"] = cfg.optim.means * decay**start

    def save(step: int) -> None:
        if checkpoint_path is None:
            return
        save_train_state(
            checkpoint_path,
            TrainState(
                step=step,
                params={k: v.detach().clone() for k, v in gaussians.params.items()},
                optimizers={k: o.state_dict() for k, o in optimizers.items()},
                strategy_state=dict(strategy.state) if strategy is not None else {},
                sh_degree=gaussians.sh_degree,
                round_name=round_name,
                dataset_version=dataset_version,
                rng=capture_rng(),
                extra={"data": data.state(), "sampler_rng": gen.get_state(), "history": history},
            ),
        )

    bar = _progress(range(start, iterations), progress, round_name, total=iterations, initial=start)
    running: dict[str, float] = {}
    for step in bar:
        if data.maybe_refresh(step, gaussians):
            pass  # the data source swapped in refreshed frames
        t = data.tensors
        idx = int(torch.randint(0, t.frames.shape[0], (1,), generator=gen))
        cams = Cameras(t.viewmats[idx : idx + 1], t.Ks[idx : idx + 1], t.resolution, t.resolution)
        pose = HeadPose.neutral(1)
        pose.jaw = t.jaws[idx : idx + 1]
        out = render_avatar(gaussians, head, cams, t.expressions[idx : idx + 1], pose, cfg.background)
        info = out.metas[0]
        if strategy is not None:
            strategy.pre_backward(gaussians.params, optimizers, step, info)
        crop_at = tuple(torch.rand(2, generator=gen).tolist())
        loss, parts = loss_fn(out.rgb, out.alpha, t.frames[idx : idx + 1], t.masks[idx : idx + 1], gaussians.params, crop_at)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if strategy is not None:
            strategy.post_backward(gaussians.params, optimizers, step, info)
        for group in optimizers["means"].param_groups:
            group["lr"] *= decay
        for k, v in {"total": float(loss.detach()), **parts}.items():
            running[k] = running.get(k, 0.0) + v
        if (step + 1) % cfg.log_every == 0 or step + 1 == iterations:
            n = (step % cfg.log_every) + 1
            row = {"step": step + 1, **{k: v / n for k, v in running.items()}, "num_gaussians": gaussians.num_gaussians}
            history.append(row)
            running = {}
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{row['total']:.3f}", l1=f"{row['l1']:.4f}", n=gaussians.num_gaussians)
            if on_step is not None:
                on_step(step + 1, row)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < iterations:
            save(step + 1)
    return TrainResult(
        steps=iterations,
        losses=history,
        seconds=time.perf_counter() - t0,
        resumed_from=start,
        num_gaussians=gaussians.num_gaussians,
        active_terms=loss_fn.active_terms,
        inactive_terms=loss_fn.inactive_terms,
    )


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


def describe(cfg: TrainConfig) -> dict:
    return asdict(cfg)


