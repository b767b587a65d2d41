"""Seeded procedural solid textures: the truth subject's appearance where the photo is blind.

Why a *solid* texture from random Fourier features: it is defined at every point of 3D space,
so it needs no UV atlas, follows the surface under animation when evaluated at the rest-pose
position of each surface point, and is exactly reproducible from a seed. It is deliberately an
algorithm that no generator of the pipeline uses (the embedded generator fills unseen regions
with the avatar's renders or flat part colours), so no method can score by reproducing its own
fill rule.

Each part gets a look a person would accept as plausible and that carries detail at several
scales (a sharpness metric needs detail to measure):

- hair (skull): strands that run from the crown down along meridians (an orientation field),
  clumped, with a darker nape;
- skin (face, neck): mottling at millimetre and centimetre scales, slightly reddish variation;
- clothing (torso): vertical panels and a fine weave;
- mouth interior: dark red; eyeballs: the part colour with faint veins.

Two seeds: ``coarse_seed`` (centimetre scales and the panel/strand layout) and ``fine_seed``
(millimetre detail). The simulated generator re-hallucinates *detail* by changing only the fine
seed, which keeps the low frequencies plausible, as a diffusion model would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Part names of the built-in rig (index = part id), repeated here so the texture does not need
#: the rig's construction module.
PARTS = ("face", "skull", "neck", "torso", "eyeball", "mouth", "backdrop", "teeth_upper", "teeth_lower", "tongue")  # the rig's PART_NAMES


@dataclass(frozen=True)
class FourierBank:
    """sum_k a_k cos(2 pi f_k . p + phi_k), normalised to unit variance."""

    freqs: Tensor  # [K, 3] cycles per metre
    phases: Tensor  # [K]
    amps: Tensor  # [K]

    @staticmethod
    def make(rng: np.random.Generator, count: int, wavelength_m: tuple[float, float], anisotropy: np.ndarray | None = None) -> "FourierBank":
        dirs = rng.normal(size=(count, 3))
        if anisotropy is not None:
            dirs = dirs * anisotropy[None]
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lo, hi = np.log(wavelength_m[0]), np.log(wavelength_m[1])
        lam = np.exp(rng.uniform(lo, hi, size=count))
        amps = np.sqrt(lam / lam.max())  # longer waves a little stronger (a 1/f-like spectrum)
        amps = amps / np.sqrt((amps**2).sum() / 2)  # unit variance of the sum
        return FourierBank(
            torch.from_numpy(dirs / lam[:, None]).float(),
            torch.from_numpy(rng.uniform(0, 2 * np.pi, size=count)).float(),
            torch.from_numpy(amps).float(),
        )

    def __call__(self, points: Tensor) -> Tensor:
        """points [N, 3] metres -> [N] values (~unit variance)."""
        arg = 2 * math.pi * points @ self.freqs.T + self.phases  # [N, K]
        return torch.cos(arg) @ self.amps


@dataclass(frozen=True)
class StrandBank:
    """Hair strands: stripes across the azimuth about the head's up axis, gently wavy."""

    counts: Tensor  # [K] stripes around the head (integers)
    waves: Tensor  # [K] waviness: phase change per radian of polar angle
    phases: Tensor  # [K]
    amps: Tensor  # [K]

    @staticmethod
    def make(rng: np.random.Generator, count: int) -> "StrandBank":
        n = rng.integers(40, 260, size=count).astype(np.float64)
        amps = 1.0 / np.sqrt(n / n.min())
        amps = amps / np.sqrt((amps**2).sum() / 2)
        return StrandBank(
            torch.from_numpy(n).float(),
            torch.from_numpy(rng.uniform(-6, 6, size=count)).float(),
            torch.from_numpy(rng.uniform(0, 2 * np.pi, size=count)).float(),
            torch.from_numpy(amps).float(),
        )

    def __call__(self, azimuth: Tensor, polar: Tensor) -> Tensor:
        arg = azimuth[:, None] * self.counts + polar[:, None] * self.waves + self.phases
        return torch.cos(arg) @ self.amps


class SolidAppearance:
    """Colour of any surface point from its rest-pose position and part (see module docstring)."""

    def __init__(self, part_colours: Tensor, centre: Tensor, coarse_seed: int, fine_seed: int) -> None:
        self.part_colours = part_colours.float()  # [P, 3] base colour per part id
        self.centre = centre.float()  # [3] head centre (strand frame)
        self.coarse_seed, self.fine_seed = int(coarse_seed), int(fine_seed)
        rc = np.random.default_rng([self.coarse_seed, 7001])
        rf = np.random.default_rng([self.fine_seed, 7002])
        self.coarse = FourierBank.make(rc, 12, (0.03, 0.12))
        self.coarse_tint = FourierBank.make(rc, 8, (0.02, 0.08))
        self.panels = FourierBank.make(rc, 6, (0.025, 0.06), anisotropy=np.array([1.0, 0.05, 1.0]))  # vertical folds/panels
        self.strands = StrandBank.make(rc, 16)
        self.clumps = StrandBank.make(rc, 6)
        self.fine = FourierBank.make(rf, 24, (0.0018, 0.008))
        self.fine_strands = StrandBank.make(rf, 12)

    def with_fine_seed(self, fine_seed: int) -> "SolidAppearance":
        return SolidAppearance(self.part_colours, self.centre, self.coarse_seed, fine_seed)

    def layers(self, points: Tensor, parts: Tensor) -> tuple[Tensor, Tensor]:
        """(base + coarse variation [N, 3], fine detail [N, 3]) so callers can swap the detail."""
        p = points.float()
        base = self.part_colours[parts.clamp(0, len(self.part_colours) - 1)]  # [N, 3]
        coarse = torch.zeros_like(base)
        fine = torch.zeros_like(base)
        q = p - self.centre
        azimuth = torch.atan2(q[:, 0], -q[:, 2])
        polar = torch.acos((q[:, 1] / q.norm(dim=1).clamp_min(1e-6)).clamp(-1, 1))
        skin = (parts == PARTS.index("face")) | (parts == PARTS.index("neck"))
        hair = parts == PARTS.index("skull")
        cloth = parts == PARTS.index("torso")
        mouth = parts == PARTS.index("mouth")
        eye = parts == PARTS.index("eyeball")
        tint = torch.tensor([1.0, 0.55, 0.45])
        if skin.any():
            ps = p[skin]
            coarse[skin] = base[skin] * (0.08 * self.coarse(ps)[:, None] + 0.05 * self.coarse_tint(ps)[:, None] * tint)
            fine[skin] = base[skin] * (0.07 * self.fine(ps)[:, None])
        if hair.any():
            ph, az, po = p[hair], azimuth[hair], polar[hair]
            shade = 0.12 * self.clumps(az, po)[:, None] + 0.10 * self.coarse(ph)[:, None]
            nape = -0.25 * ((po - 1.6) / 0.6).clamp(0, 1)[:, None]  # darker towards the nape
            coarse[hair] = base[hair] * (shade + nape)
            fine[hair] = base[hair] * (0.28 * self.strands(az, po)[:, None] + 0.12 * self.fine_strands(az, po)[:, None])
        if cloth.any():
            pc = p[cloth]
            # additive as well as multiplicative: a dark garment still shows its panels and weave
            lum = base[cloth].mean(1, keepdim=True)
            coarse[cloth] = (base[cloth] + 0.25 - lum.clamp(max=0.25)) * (0.30 * torch.tanh(2 * self.panels(pc))[:, None] + 0.08 * self.coarse(pc)[:, None])
            fine[cloth] = (base[cloth] + 0.25 - lum.clamp(max=0.25)) * (0.14 * self.fine(pc * 1.7)[:, None])
        if mouth.any():
            pm = p[mouth]
            coarse[mouth] = base[mouth] * (0.15 * self.coarse(pm)[:, None])
            fine[mouth] = base[mouth] * (0.10 * self.fine(pm)[:, None])
        if eye.any():
            pe = p[eye]
            fine[eye] = 0.04 * self.fine(pe * 2.0)[:, None] * torch.tensor([0.2, -0.6, -0.6])
        return (base + coarse), fine

    def colour(self, points: Tensor, parts: Tensor) -> Tensor:
        """[N, 3] in [0, 1]."""
        base, fine = self.layers(points, parts)
        return (base + fine).clamp(0, 1)
