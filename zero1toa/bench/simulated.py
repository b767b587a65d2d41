"""``generator=simulated``: a portrait video generator whose inconsistency we control.

**A test instrument, never a model.** It knows the answer (it renders the truth subject for the
requested frames) and then corrupts that answer the way the Zero-1-to-A paper says portrait video
diffusion fails, one knob per failure, all scaled by one ``inconsistency`` level:

- *spatial inconsistency*, drawn per call (per generated clip):
  - a smooth random geometric warp of the frames (features land a few pixels off, differently
    in every clip; it drifts smoothly through the clip), ``warp``;
  - an appearance drift: per-channel gain and a brightness offset, drifting through the clip,
    ``colour_gain`` / ``colour_offset``;
  - re-hallucinated detail where the reference photo did not see the surface: the fine octaves
    of the truth's procedural texture are replaced by another seed's (a different plausible
    texture every call; the coarse colours stay plausible), ``hallucination``;
- *temporal inconsistency*, per frame: the requested expression is executed with a per-clip
  bias and per-frame jitter of the expression coefficients and the jaw, ``expression_error``,
  ``expression_jitter``, ``jaw_error_rad``.

``strength`` has SDEdit semantics: with ``init_frames`` (the avatar's renders), the result keeps
their low spatial frequencies and takes only the detail above a cutoff from the corrupted prior;
the cutoff is a Gaussian low-pass whose sigma grows as ``sdedit_sigma_px * s / (1 - s)`` (pixels
at 256 px, scaled with resolution): strength 0 returns the init frames, strength 1 ignores them.

Inconsistency 0 is the oracle: the prior is the exact truth (``strength`` still blends as above;
at strength 1, which new clips and the static dataset use, the frames are the truth exactly).
The presets (magnitudes chosen once, documented with pictures in
``benchmarks/results/simulator_levels.png``, then frozen): ``low`` = 0.5, ``medium`` = 1,
``high`` = 2 times the per-knob magnitudes of :class:`SimulatorConfig`.

Cameras and expressions arrive in the *pipeline's* world (its own fitted head and camera); they
are mapped to the truth's by the landmark similarity of :func:`~.truth.align_heads`, and
expressions relative to the photo's (both heads are the built-in rig with the same named basis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..generate.base import GenerationRequest, GenerationResult, GeneratorInfo, VideoGenerator
from ..head.base import HeadModel
from ..utils.io import digest_obj
from .truth import TruthSubject, align_heads, truth_cameras

#: Named inconsistency levels -> multiplier of the per-knob magnitudes.
LEVELS: dict[str, float] = {"0": 0.0, "oracle": 0.0, "low": 0.5, "medium": 1.0, "high": 2.0}


@dataclass
class SimulatorConfig:
    """Per-knob magnitudes at inconsistency level 1 (``medium``); each scales with the level."""

    warp: float = 0.0125  # warp amplitude, fraction of the frame width (3.2 px at 256 px)
    warp_cycles: float = 1.5  # spatial frequency of the warp field, cycles per frame
    colour_gain: float = 0.05  # std of the per-channel gain (1 + N(0, this))
    colour_offset: float = 0.03  # std of the brightness offset (intensity in [0, 1])
    hallucination: float = 0.6  # fraction of the unseen fine detail re-drawn per call (capped at 1)
    expression_error: float = 0.12  # std of the per-clip bias of each expression coefficient
    expression_jitter: float = 0.05  # std of the per-frame jitter of each coefficient
    jaw_error_rad: float = 0.03  # std of the per-clip jaw bias (and a third of it per frame)
    sdedit_sigma_px: float = 4.0  # low-pass sigma at strength 0.5, pixels at 256 px (0.6 -> 6 px, 0.9 -> 36 px)
    supersample: int = 2  # antialiasing of the truth renders
    background: float = 1.0  # frames are composited over this grey (the trainer's background)


def level_value(level: str | float) -> float:
    """'0' | 'oracle' | 'low' | 'medium' | 'high' | a number >= 0 -> the multiplier."""
    if isinstance(level, (int, float)):
        value = float(level)
    elif str(level).strip().lower() in LEVELS:
        value = LEVELS[str(level).strip().lower()]
    else:
        try:
            value = float(level)
        except ValueError:
            raise ValueError(f"generator.inconsistency must be one of {', '.join(LEVELS)} or a number >= 0, got {level!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"generator.inconsistency must be >= 0, got {level!r}")
    return value


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian low-pass of [B, C, H, W] (replicate padding); sigma in pixels."""
    if sigma <= 0:
        return x
    H, W = x.shape[-2:]
    radius = int(min(math.ceil(3 * sigma), max(H, W) - 1))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def sdedit_blend(prior: Tensor, init: Tensor, strength: float, resolution: int, sigma_at_half: float) -> Tensor:
    """Low frequencies of ``init`` + high frequencies of ``prior`` (see the module docstring)."""
    if strength >= 1.0:
        return prior
    if strength <= 0.0:
        return init
    sigma = sigma_at_half * (resolution / 256.0) * strength / (1.0 - strength)
    return gaussian_blur(init, sigma) + prior - gaussian_blur(prior, sigma)


def _warp_field(rng: np.random.Generator, size: int, amplitude_px: float, cycles: float, terms: int = 4) -> Tensor:
    """A smooth displacement field [H, W, 2] in pixels (sum of random plane waves per axis)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    field = torch.zeros(size, size, 2)
    for axis in range(2):
        for _ in range(terms):
            ang = rng.uniform(0, 2 * np.pi)
            f = cycles * rng.uniform(0.5, 1.5)
            ph = rng.uniform(0, 2 * np.pi)
            field[..., axis] += float(rng.normal()) * torch.cos(2 * np.pi * f * (math.cos(ang) * xs + math.sin(ang) * ys) + ph)
    return field * (amplitude_px / math.sqrt(terms))


def apply_warp(images: Tensor, displacement_px: Tensor, fill: float) -> Tensor:
    """Sample [F, C, H, W] at pixel + displacement [F, H, W, 2] (x, y); outside -> ``fill``."""
    Fn, C, H, W = images.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5, indexing="ij")
    gx = (xs[None] + displacement_px[..., 0]) / W * 2 - 1
    gy = (ys[None] + displacement_px[..., 1]) / H * 2 - 1
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class SimulatedGenerator(VideoGenerator):
    """Truth renders, corrupted per call and per frame (see the module docstring)."""

    def __init__(
        self,
        truth: TruthSubject,
        pipeline_head: HeadModel,
        reference_expression: Tensor,  # [E] the pipeline's fitted photo expression
        reference_jaw: Tensor,  # [3]
        inconsistency: str | float = "medium",
        config: SimulatorConfig | None = None,
        resolution: int = 256,
    ) -> None:
        if pipeline_head.expression_dim != truth.head.expression_dim or pipeline_head.expression_names != truth.head.expression_names:
            raise ValueError(
                "generator=simulated maps the pipeline's expressions onto the truth subject's by name: "
                f"the pipeline's head ({pipeline_head.name}) must be the built-in rig (head=facemesh)"
            )
        self.truth, self.cfg = truth, config or SimulatorConfig()
        self.level = level_value(inconsistency)
        self.level_name = str(inconsistency)
        self.ref_expression = reference_expression.float()
        self.ref_jaw = reference_jaw.float()
        self.alignment = align_heads(pipeline_head, self.ref_expression, self.ref_jaw, truth)
        self.info = GeneratorInfo(
            name="simulated",
            resolution=int(resolution),
            frames_per_call=1024,  # one call per clip: the per-call corruption is per clip
            overlap=0,
            deterministic=True,
            weights=f"none (test instrument: the truth subject {truth.digest()[:12]} at inconsistency {self.level_name})",
        )
        self._lo = torch.full((truth.head.expression_dim,), -0.2)

    def _knob(self, value: float) -> float:
        return value * self.level

    def truth_request(self, request: GenerationRequest, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """The truth expressions [F, E] and jaws [F, 3] this call executes (with its errors)."""
        Fn = request.num_frames
        E = self.truth.head.expression_dim
        expr = (request.expressions.float() if request.expressions is not None else self.ref_expression[None].expand(Fn, -1)) - self.ref_expression
        jaws = (request.poses.jaw.float() if request.poses is not None else self.ref_jaw[None].expand(Fn, -1)) - self.ref_jaw
        c = self.cfg
        if self.level > 0:
            bias = torch.from_numpy(rng.normal(0, self._knob(c.expression_error), size=E)).float()
            jitter = torch.from_numpy(rng.normal(0, self._knob(c.expression_jitter), size=(Fn, E))).float()
            expr = torch.maximum(expr + bias + jitter, torch.minimum(expr, self._lo))
            jaw_bias = float(rng.normal(0, self._knob(c.jaw_error_rad)))
            jaw_jit = torch.from_numpy(rng.normal(0, self._knob(c.jaw_error_rad) / 3, size=Fn)).float()
            jaws = jaws.clone()
            jaws[:, 0] = jaws[:, 0] + jaw_bias + jaw_jit
        return self.truth.expression + expr, self.truth.jaw + jaws

    def _generate_window(self, request: GenerationRequest) -> GenerationResult:
        if request.cameras is None:
            raise ValueError("the simulated generator renders the truth subject: the request needs cameras")
        c, L = self.cfg, self.level
        Fn = request.num_frames
        R = request.landmark_maps.shape[-1]
        rng = np.random.default_rng([int(request.seed) % (2**32), 515])
        cams_t = truth_cameras(request.cameras.resized(R, R), self.alignment)
        expr, jaws = self.truth_request(request, rng)
        mix = min(1.0, self._knob(c.hallucination))
        detail = self.truth.appearance.with_fine_seed(int(digest_obj(["hallucination", int(request.seed)])[:8], 16)) if mix > 0 else None
        out = self.truth.render(cams_t, expr, jaws, background=c.background, supersample=c.supersample, detail=detail, detail_mix=mix)
        rgb, alpha = out.rgb, out.alpha
        if L > 0:
            t = torch.linspace(0, 1, Fn)[:, None, None, None]
            amp = self._knob(c.warp) * R
            if amp > 0:
                a, b = _warp_field(rng, R, amp, c.warp_cycles), _warp_field(rng, R, amp, c.warp_cycles)
                disp = (1 - t[..., 0, None]) * a[None] + t[..., 0, None] * b[None]  # [F, H, W, 2]
                rgb = apply_warp(rgb, disp, c.background)
                alpha = apply_warp(alpha, disp, 0.0)
            g0, g1 = (torch.from_numpy(rng.normal(0, self._knob(c.colour_gain), size=3)).float() for _ in range(2))
            o0, o1 = (float(rng.normal(0, self._knob(c.colour_offset))) for _ in range(2))
            gain = 1 + ((1 - t) * g0.view(1, 3, 1, 1) + t * g1.view(1, 3, 1, 1))
            offset = (1 - t) * o0 + t * o1
            fg = rgb - c.background * (1 - alpha)  # premultiplied foreground
            rgb = (fg * gain + alpha * offset + c.background * (1 - alpha)).clamp(0, 1)
        if request.init_frames is not None:
            rgb = sdedit_blend(rgb, request.init_frames.float(), request.strength, R, c.sdedit_sigma_px).clamp(0, 1)
            if request.init_alphas is not None:
                alpha = sdedit_blend(alpha, request.init_alphas.float(), request.strength, R, c.sdedit_sigma_px).clamp(0, 1)
        return GenerationResult(rgb, alpha, {"seen": out.seen, "expressions": expr, "jaws": jaws})


def build_simulated(cfg, head: HeadModel, reference) -> SimulatedGenerator:
    """From the run's GeneratorConfig (``truth_dir``, ``inconsistency``, ``simulator``)."""
    from pathlib import Path

    if not cfg.truth_dir:
        raise ValueError("generator=simulated needs generator.truth_dir: a truth subject folder (python benchmarks/truth.py --build-only --out DIR)")
    truth = TruthSubject.load(Path(cfg.truth_dir))
    return SimulatedGenerator(truth, head, reference.expression, reference.jaw, cfg.inconsistency, cfg.simulator, cfg.resolution)
