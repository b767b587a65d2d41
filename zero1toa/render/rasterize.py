"""The project's one Gaussian rendering entry point: gsplat on CUDA, our compositor on CPU.

Why one entry: training, dataset refresh and evaluation all render, and they must see the same
image, alpha, depth and densification statistics whichever device they run on. Both backends
follow gsplat 1.5.3's ``rasterization(packed=False, rasterize_mode="classic")`` semantics, and
both return the meta that ``gsplat.strategy.DefaultStrategy`` reads (``means2d`` with its
gradient, ``radii`` [C, N, 2] int32, ``width``, ``height``, ``n_cameras``, ``gaussian_ids``),
so densification code never branches on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

RENDER_MODES = ("RGB", "RGB+ED", "RGB+D")
BACKENDS = ("auto", "gsplat", "cpu")


@dataclass
class RenderOutput:
    """Rendered images for C cameras.

    ``depth`` is the expected depth (sum w_i z_i / alpha) for "RGB+ED", the accumulated depth
    (sum w_i z_i) for "RGB+D", and None for "RGB". ``meta`` is gsplat's meta dict (packed=False)
    plus ``backend`` ("gsplat", "cpu-cpp" or "cpu-torch").
    """

    rgb: Tensor  # [C, H, W, D]
    alpha: Tensor  # [C, H, W, 1]
    depth: Tensor | None  # [C, H, W, 1]
    meta: dict[str, Any] = field(default_factory=dict)


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, backgrounds, render_mode):
    N = means.shape[0] if means.dim() == 2 else -1
    C = viewmats.shape[0] if viewmats.dim() == 3 else -1

    def bad(name: str, tensor: Tensor, want: str) -> ValueError:
        return ValueError(f"rasterize: {name} must be {want}, got shape {tuple(tensor.shape)}")

    if means.dim() != 2 or means.shape[1] != 3:
        raise bad("means", means, "[N, 3]")
    if quats.shape != (N, 4):
        raise bad("quats", quats, f"[{N}, 4]")
    if scales.shape != (N, 3):
        raise bad("scales", scales, f"[{N}, 3] (linear scales, not log)")
    if opacities.shape != (N,):
        raise bad("opacities", opacities, f"[{N}] (post-sigmoid)")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise bad("viewmats", viewmats, "[C, 4, 4]")
    if Ks.shape != (C, 3, 3):
        raise bad("Ks", Ks, f"[{C}, 3, 3]")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            raise bad("colors", colors, f"[{N}, D] or [{C}, {N}, D] when sh_degree is None")
    else:
        ok = (colors.dim() == 3 and colors.shape[0] == N) or (colors.dim() == 4 and colors.shape[:2] == (C, N))
        if not ok or colors.shape[-1] != 3:
            raise bad("colors", colors, f"SH coefficients [{N}, K, 3] when sh_degree={sh_degree}")
        if (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(f"rasterize: sh_degree={sh_degree} needs {(sh_degree + 1) ** 2} SH coefficients, colors has {colors.shape[-2]}")
    D = 3 if sh_degree is not None else colors.shape[-1]
    if backgrounds is not None and backgrounds.shape != (C, D):
        raise bad("backgrounds", backgrounds, f"[{C}, {D}]")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    devices = {t.device for t in (means, quats, scales, opacities, colors, viewmats, Ks)}
    if backgrounds is not None:
        devices.add(backgrounds.device)
    if len(devices) != 1:
        raise ValueError(f"rasterize: all tensors must be on one device, got {sorted(map(str, devices))}")


def rasterize(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] wxyz (normalised inside)
    scales: Tensor,  # [N, 3] linear (not log)
    opacities: Tensor,  # [N] in (0, 1)
    colors: Tensor,  # [N, D] post-activation, or SH coefficients [N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4] world -> camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: str = "RGB+ED",  # "RGB", "RGB+ED", "RGB+D"
    backend: str = "auto",  # "auto" | "gsplat" | "cpu"
) -> RenderOutput:
    """Render Gaussians into C cameras.

    ``backend="auto"`` uses gsplat when the tensors are on CUDA and the project's CPU
    compositor otherwise (the C++ kernel when it builds, else pure torch; see
    :mod:`zero1toa.render.cpu_rasterizer`). Call ``out.meta["means2d"].retain_grad()`` before
    ``backward()`` to feed DefaultStrategy, exactly as with gsplat.
    """
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, backgrounds, render_mode)
    on_cuda = means.device.type == "cuda"
    if backend == "auto":
        backend = "gsplat" if on_cuda else "cpu"
    if backend == "gsplat" and not on_cuda:
        raise ValueError("rasterize: backend='gsplat' needs CUDA tensors (gsplat has no CPU path); use backend='cpu'")
    if backend == "cpu" and means.device.type != "cpu":
        raise ValueError(f"rasterize: backend='cpu' needs CPU tensors, got {means.device}; move them with .cpu()")

    if backend == "gsplat":
        from gsplat import rasterization

        render, alpha, meta = rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
            packed=False, backgrounds=backgrounds, render_mode=render_mode,
        )  # fmt: skip
        meta["backend"] = "gsplat"
    else:
        from zero1toa.render.cpu_rasterizer import rasterize_cpu

        render, alpha, meta = rasterize_cpu(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
            backgrounds=backgrounds, render_mode=render_mode,
        )  # fmt: skip

    if render_mode == "RGB":
        return RenderOutput(rgb=render, alpha=alpha, depth=None, meta=meta)
    return RenderOutput(rgb=render[..., :-1], alpha=alpha, depth=render[..., -1:], meta=meta)
