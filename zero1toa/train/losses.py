"""The avatar's losses (reconstruction, not SDS).

Paper (public summaries): 10 x L1 + 10 x LPIPS + 0.1 x position + 10 x scale. We add SSIM and
a mask/alpha term, both standard for Gaussian avatars and named in the method's issue text.
The regularisers follow GaussianAvatars' form: hinge penalties on a Gaussian's offset from its
parent triangle (off its plane, and far along it) and on its size, all in units of the
triangle's size, so they only bite when a Gaussian drifts away from the mesh or grows large.

LPIPS needs pretrained backbone weights that cannot be downloaded here: :class:`LPIPS` loads
them from a local safetensors file when configured; otherwise the term is inactive and the run
records that (``active_terms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LossConfig:
    l1: float = 10.0  # paper
    ssim: float = 2.0  # not in the paper's list; standard 3DGS D-SSIM term
    ssim_crop: int = 128  # D-SSIM on a random crop of this size per step (CPU cost), 0 = whole frame
    lpips: float = 10.0  # paper; active only with lpips_weights
    lpips_weights: str | None = None  # local safetensors file (see LPIPS)
    lpips_required: bool = False  # true: a run without lpips_weights fails before it starts (preset=paper)
    alpha: float = 1.0  # rendered alpha vs the frame's mask
    position: float = 0.1  # paper
    normal_threshold: float = 0.5  # offset off the triangle's plane (triangle sizes) before the penalty starts
    tangent_threshold: float = 3.0  # in-plane offset from the centroid (slivers reach ~2) before the penalty starts
    scale: float = 10.0  # paper
    scale_threshold: float = 0.6  # largest axis (triangle sizes) before the penalty starts


def _gaussian_kernel(window: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of [B, C, H, W] images in [0, 1].

    Same definition as kornia.metrics.ssim (Gaussian window 11, sigma 1.5, reflect padding,
    C1 = 0.01^2, C2 = 0.03^2) but with the Gaussian filter applied separably (two 1-D passes
    instead of one 11x11): ~5x cheaper, which matters in the CPU training loop.
    """
    B, C, H, W = x.shape
    k = _gaussian_kernel(window, sigma, x.device, x.dtype)
    kh = k.view(1, 1, 1, window).expand(5 * C, 1, 1, window)
    kv = k.view(1, 1, window, 1).expand(5 * C, 1, window, 1)
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)  # [B, 5C, H, W]
    pad = window // 2
    stack = F.pad(stack, (pad, pad, pad, pad), mode="reflect")
    blurred = F.conv2d(F.conv2d(stack, kh, groups=5 * C), kv, groups=5 * C)
    mu_x, mu_y, xx, yy, xy = blurred.split(C, 1)
    c1, c2 = 0.01**2, 0.03**2
    sxx, syy, sxy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


class LPIPS(nn.Module):
    """LPIPS (VGG-16 variant) in plain torch, weights from a local file.

    File layout (safetensors): ``features.{i}.weight/bias`` for VGG-16's 13 convolutions with
    torchvision's ``features`` indices (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) and
    ``lin{k}.weight`` [1, C_k, 1, 1] for LPIPS' five linear heads. Converting the public
    torchvision VGG-16 + LPIPS v0.1 weights into it is a rename; see ``scripts/convert_lpips.py``.
    """

    CONV_IDX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    TAPS = (2, 4, 7, 10, 13)  # after these conv(+relu) counts: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    POOL_AFTER = (2, 4, 7, 10)

    def __init__(self) -> None:
        super().__init__()
        convs = []
        cin = 3
        for c in self.CHANNELS:
            convs.append(nn.Conv2d(cin, c, 3, padding=1))
            cin = c
        self.features = nn.ModuleDict({str(i): conv for i, conv in zip(self.CONV_IDX, convs)})
        tap_channels = [self.CHANNELS[t - 1] for t in self.TAPS]
        for k, c in enumerate(tap_channels):
            self.register_parameter(f"lin{k}", nn.Parameter(torch.ones(1, c, 1, 1) / c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale_", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: Path) -> "LPIPS":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"LPIPS weights {path} not found (expected a safetensors file, see zero1toa.train.losses.LPIPS)")
        state = load_file(str(path))
        model = cls()
        mapped = {k.replace("features.", "features.", 1): v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        missing = [m for m in missing if m not in ("shift", "scale_")]
        if missing or unexpected:
            raise ValueError(f"{path}: LPIPS weights do not match (missing {missing[:4]}, unexpected {unexpected[:4]})")
        return model.eval()

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale_
        out = []
        for n, idx in enumerate(self.CONV_IDX, start=1):
            x = F.relu(self.features[str(idx)](x))
            if n in self.TAPS:
                out.append(x)
            if n in self.POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: [B, 3, H, W] in [0, 1] -> mean LPIPS distance."""
        total = x.new_zeros(())
        for k, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (getattr(self, f"lin{k}") * (fx - fy) ** 2).sum(1).mean()
        return total


def regulariser_terms(params: dict[str, Tensor], cfg: LossConfig) -> dict[str, Tensor]:
    """Hinge penalties on a Gaussian's offset from its parent triangle (off its plane, and far
    along it) and on its size, in triangle-size units. Unweighted; shared by the reconstruction
    trainer and the SDS baseline."""
    parts: dict[str, Tensor] = {}
    if cfg.position > 0:
        m = params["means"]
        parts["position"] = F.relu(m[:, 2].abs() - cfg.normal_threshold).mean() + F.relu(m[:, :2].norm(dim=-1) - cfg.tangent_threshold).mean()
    if cfg.scale > 0:
        parts["scale"] = F.relu(torch.exp(params["scales"]).amax(-1) - cfg.scale_threshold).mean()
    return parts


class AvatarLoss(nn.Module):
    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lpips = LPIPS.from_file(Path(cfg.lpips_weights)) if (cfg.lpips_weights and cfg.lpips > 0) else None

    @property
    def active_terms(self) -> dict[str, float]:
        c = self.cfg
        terms = {"l1": c.l1, "ssim": c.ssim, "alpha": c.alpha, "position": c.position, "scale": c.scale}
        if self.lpips is not None:
            terms["lpips"] = c.lpips
        return {k: v for k, v in terms.items() if v > 0}

    @property
    def inactive_terms(self) -> dict[str, str]:
        if self.cfg.lpips > 0 and self.lpips is None:
            return {"lpips": "no local LPIPS weights configured (train.loss.lpips_weights); the term is off"}
        return {}

    def forward(
        self,
        rgb: Tensor,
        alpha: Tensor,
        target: Tensor,
        mask: Tensor,
        params: dict[str, Tensor],
        crop_at: tuple[float, float] = (0.5, 0.5),
    ) -> tuple[Tensor, dict[str, float]]:
        """rgb/target [B, 3, H, W]; alpha/mask [B, 1, H, W]; params: the Gaussians' local params.

        ``crop_at``: where (fractions of the free range) the D-SSIM crop sits this step.
        """
        c = self.cfg
        parts: dict[str, Tensor] = {}
        parts["l1"] = (rgb - target).abs().mean()
        if c.ssim > 0:
            H, W = rgb.shape[-2:]
            ch, cw = (min(H, c.ssim_crop), min(W, c.ssim_crop)) if c.ssim_crop > 0 else (H, W)
            y0, x0 = int(crop_at[0] * (H - ch)), int(crop_at[1] * (W - cw))
            parts["ssim"] = 1.0 - ssim(rgb[..., y0 : y0 + ch, x0 : x0 + cw], target[..., y0 : y0 + ch, x0 : x0 + cw])
        if self.lpips is not None:
            parts["lpips"] = self.lpips(rgb, target)
        if c.alpha > 0:
            parts["alpha"] = (alpha - mask).abs().mean()
        parts.update(regulariser_terms(params, c))
        weights = {"l1": c.l1, "ssim": c.ssim, "lpips": c.lpips, "alpha": c.alpha, "position": c.position, "scale": c.scale}
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
