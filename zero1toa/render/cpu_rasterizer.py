"""CPU Gaussian rasterizer with gsplat 1.5.3 semantics (projection, SH, tile compositing).

Why it exists: gsplat has no CPU path, yet the project's default run trains on CPU. This module
renders what ``gsplat.rasterization(packed=False, rasterize_mode="classic")`` renders and
returns the meta that ``gsplat.strategy.DefaultStrategy`` reads, so training code is the same
on both devices.

Pipeline (all cameras at once):
1. :func:`project_gaussians`: EWA projection, ``eps2d`` blur, conics, and the opacity-aware
   screen radius of gsplat's CUDA kernel; culled Gaussians get radius 0.
2. :func:`sh_to_colors`: real spherical harmonics up to degree 3 (3DGS basis and signs),
   ``clamp_min(sh + 0.5, 0)`` like gsplat.
3. :func:`composite`: front-to-back alpha compositing, pixel centres at +0.5,
   ``alpha = min(0.999, o * exp(-sigma))``, skip ``alpha < 1/255``, a pixel stops (exclusively)
   at the Gaussian that would take its transmittance to ``<= 1e-4``, background times the
   final transmittance.

Steps 1 and 3 have two interchangeable implementations, both with analytic backward passes:

- ``cpp``: C++/OpenMP kernels (``csrc/tile_compositor.cpp``, ``csrc/projection.cpp``) compiled
  on first use by ``torch.utils.cpp_extension.load`` into ``$TORCH_EXTENSIONS_DIR`` (a few
  seconds, then cached per CPU and flag set). OpenMP over 16x16 tiles, SIMD over tile rows,
  radix-sorted depth order, per-(Gaussian, tile) gradients summed in a fixed order (bitwise
  the same for any thread count); projection computed in double.
- ``torch``: vectorised tile chunks in plain torch, the fallback when no compiler works.

``$ZERO1TOA_CPU_RASTERIZER=torch|cpp`` forces one (default: ``cpp`` when it builds);
``$ZERO1TOA_CPU_RASTERIZER_MARCH`` replaces ``-march=native`` (e.g. ``x86-64-v3``).
Not supported on CPU (gsplat options the project does not use): packed mode, absgrad,
antialiased mode, distortion, non-pinhole cameras, gradients w.r.t. Ks (viewmats gradients
only through the torch projection, which is chosen automatically when they are needed).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0  # gsplat ALPHA_THRESHOLD
ALPHA_MAX = 0.999
T_MIN = 1e-4  # a pixel is done once its transmittance would drop to this or below
RADIUS_SIGMAS = 3.33  # gsplat's cap on the box half-size, in standard deviations
TILE_SIZES = {"cpp": 16, "torch": 4}  # torch: 4 px tiles measured 1.5-2.7x faster than 8 or 16 (less padding)

_CSRC_DIR = Path(__file__).resolve().parent / "csrc"
_SOURCES = ("tile_compositor.cpp", "projection.cpp")
_EXT_NAME = "zero1toa_cpu_rasterizer"
_OPS_NAMESPACE = "zero1toa_cpu"
ENV_IMPL = "ZERO1TOA_CPU_RASTERIZER"
ENV_MARCH = "ZERO1TOA_CPU_RASTERIZER_MARCH"


# ----------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------
@dataclass
class Projection:
    """Screen-space Gaussians for C cameras; entries with ``radii == 0`` are culled."""

    radii: Tensor  # [C, N, 2] int32
    means2d: Tensor  # [C, N, 2] pixels
    depths: Tensor  # [C, N] camera z
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c)
    valid: Tensor  # [C, N] bool


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (not necessarily unit) wxyz quaternions [..., 4]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, -1).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    impl: str | None = None,
) -> Projection:
    """EWA projection with gsplat 1.5.3's CUDA culling and opacity-aware radii.

    Culled (radius 0): depth outside [near, far], blurred determinant <= 0, opacity < 1/255,
    or the screen box entirely outside the image. Culled entries of means2d/depths/conics are
    zero (gsplat leaves them undefined) and receive no gradient.

    ``impl`` as in :func:`resolve_impl`; the C++ kernel (same maths, analytic backward) is
    skipped when the cameras need gradients, which only the torch version provides.
    """
    cams_need_grad = viewmats.requires_grad or Ks.requires_grad
    if means.device.type == "cpu" and not cams_need_grad and resolve_impl(impl) == "cpp":
        radii, means2d, depths, conics = _CppProject.apply(
            means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane
        )
        return Projection(radii=radii, means2d=means2d, depths=depths, conics=conics, valid=(radii > 0).any(-1))
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    M = R[:, None] @ (rot * scales[:, None, :])[None]  # [C, N, 3, 3] = R_view R_g S
    cov = M @ M.transpose(-1, -2)  # [C, N, 3, 3] camera-space covariance

    x, y, z = means_c.unbind(-1)  # [C, N]
    depth_ok = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(depth_ok, z, torch.ones_like(z))  # keeps culled entries finite
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Clamp the Jacobian's evaluation point to 1.3x the field of view (gsplat/3DGS).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_yn), lim_yp)
    rz = 1.0 / zs
    j00, j02 = fx * rz, -fx * tx * rz * rz
    j11, j12 = fy * rz, -fy * ty * rz * rz
    s00, s01, s02 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 0, 2]
    s11, s12, s22 = cov[..., 1, 1], cov[..., 1, 2], cov[..., 2, 2]
    c00 = j00 * j00 * s00 + 2 * j00 * j02 * s02 + j02 * j02 * s22 + eps2d
    c01 = j00 * j11 * s01 + j00 * j12 * s02 + j02 * j11 * s12 + j02 * j12 * s22
    c11 = j11 * j11 * s11 + 2 * j11 * j12 * s12 + j12 * j12 * s22 + eps2d
    det = c00 * c11 - c01 * c01
    det_ok = det > 0
    inv_det = 1.0 / torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c11 * inv_det, -c01 * inv_det, c00 * inv_det], -1)  # [C, N, 3]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)  # [C, N, 2]

    with torch.no_grad():
        op = opacities.detach()[None].expand_as(z)
        op_ok = op >= ALPHA_MIN
        # Opacity-aware box (gsplat 1.5.3): outside it, alpha < 1/255 for sure.
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(RADIUS_SIGMAS)
        rad_x = torch.ceil(extend * torch.sqrt(c00.detach().clamp_min(0)))
        rad_y = torch.ceil(extend * torch.sqrt(c11.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        inside = (mx + rad_x > 0) & (mx - rad_x < width) & (my + rad_y > 0) & (my - rad_y < height)
        valid = depth_ok & det_ok & op_ok & inside & ((rad_x > 0) | (rad_y > 0))
        radii = torch.stack([rad_x, rad_y], -1).masked_fill(~valid[..., None], 0).to(torch.int32)
    vmask = valid[..., None]
    return Projection(
        radii=radii,
        means2d=torch.where(vmask, means2d, torch.zeros_like(means2d)),
        depths=torch.where(valid, z, torch.zeros_like(z)),
        conics=torch.where(vmask, conics, torch.zeros_like(conics)),
        valid=valid,
    )


# ----------------------------------------------------------------------------------------
# Spherical harmonics (3DGS / gsplat basis: real SH, same constants and signs)
# ----------------------------------------------------------------------------------------
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values [..., (degree+1)^2] at unit directions [..., 3] (degree <= 3)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3 for the CPU rasterizer, got {degree}")
    out = [torch.full_like(dirs[..., 0], _SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _SH_C2[0] * xy,
            _SH_C2[1] * yz,
            _SH_C2[2] * (2.0 * zz - xx - yy),
            _SH_C2[3] * xz,
            _SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _SH_C3[0] * y * (3 * xx - yy),
            _SH_C3[1] * xy * z,
            _SH_C3[2] * y * (4 * zz - xx - yy),
            _SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _SH_C3[4] * x * (4 * zz - xx - yy),
            _SH_C3[5] * z * (xx - yy),
            _SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def sh_to_colors(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colours [..., 3] from SH coefficients [..., K, 3] seen along (unnormalised) ``dirs``.

    Matches gsplat.rasterization: ``clamp_min(sum_k basis_k * coeff_k + 0.5, 0)``.
    """
    n = (degree + 1) ** 2
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh_degree {degree} needs {n} coefficients, colors has {coeffs.shape[-2]}")
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))  # [..., n]
    rgb = (basis[..., None] * coeffs[..., :n, :]).sum(-2)
    return torch.clamp_min(rgb + 0.5, 0.0)


# ----------------------------------------------------------------------------------------
# C++ kernel loading
# ----------------------------------------------------------------------------------------
_ext_lock = threading.Lock()
_ext_state: dict[str, Any] = {}


def _extensions_dir() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    from zero1toa.env import project_root

    return project_root() / ".torch_extensions"


def _cpu_tag() -> str:
    """Short digest of this CPU's model and instruction-set flags."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
        text += "\n".join(sorted(set(lines)))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _ops() -> Any:
    return getattr(torch.ops, _OPS_NAMESPACE)


def _build_attempts() -> list[tuple[list[str], list[str]]]:
    """Compiler flag sets to try, best first: (cflags, ldflags).

    ``-march=native`` lets the pixel loops use this CPU's widest vectors (AVX-512/AVX2);
    ``$ZERO1TOA_CPU_RASTERIZER_MARCH`` picks another target (e.g. ``x86-64-v3`` for a portable
    AVX2 build). Later attempts drop flags a compiler may not know (macOS clang has no OpenMP).
    """
    march = os.environ.get(ENV_MARCH, "native").strip()
    arch = [f"-march={march}"] if march else []
    base = ["-O3", "-Wno-psabi"]
    return [(base + ["-fopenmp"] + arch, ["-fopenmp"]), (base + ["-fopenmp"], ["-fopenmp"]), (base, [])]


def _build_tag(cflags: list[str], ldflags: list[str]) -> str:
    """Digest of the kernel's sources, the flags and torch's version (never of PATH or tools)."""
    import hashlib

    h = hashlib.sha256()
    for f in _SOURCES:
        h.update(f.encode() + b"\0" + (_CSRC_DIR / f).read_bytes())
    h.update(" ".join(cflags).encode() + b"|" + " ".join(ldflags).encode() + b"|" + torch.__version__.encode())
    return h.hexdigest()[:10]


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """One build at a time per build folder (two processes starting together share one build)."""
    import fcntl

    with open(build_dir.with_name(build_dir.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cpp_kernel_available(verbose: bool = False) -> bool:
    """Build (once per machine and flag set, cached on disk) and load the C++ kernel.

    Never raises: if no flag set compiles, a warning names the error and the slower torch
    compositor is used.
    """

    with _ext_lock:
        if "ok" in _ext_state:
            return _ext_state["ok"]
        from torch.utils.cpp_extension import load

        errors = []
        for cflags, ldflags in _build_attempts():
            # The build is named by what it is made of and for: this CPU's feature flags, the
            # sources' contents, the compiler flags and torch's version. A project folder moved
            # to another machine, or an edited .cpp file, builds anew; anything else (PATH
            # switching between the venv's ninja and the system's, as `dvc repro` vs
            # `zero1toa run` does) loads the existing library without asking ninja.
            name = f"{_EXT_NAME}_{_cpu_tag()}_{_build_tag(cflags, ldflags)}"
            try:
                build_dir = _extensions_dir() / name
                build_dir.mkdir(parents=True, exist_ok=True)
                library = build_dir / f"{name}.so"
                with _build_lock(build_dir):
                    if library.is_file():
                        torch.ops.load_library(str(library))
                    else:
                        # torch's own build baton: a build killed mid-way leaves it behind and
                        # every later build would wait on it forever; our flock already makes
                        # this process the only builder
                        (build_dir / "lock").unlink(missing_ok=True)
                        load(
                            name=name,
                            sources=[str(_CSRC_DIR / f) for f in _SOURCES],
                            extra_cflags=cflags,
                            extra_ldflags=ldflags,
                            build_directory=str(build_dir),
                            is_python_module=False,
                            verbose=verbose,
                        )
                _ops().composite_forward  # noqa: B018 - raises if registration failed
                _ops().project_forward  # noqa: B018
                _ext_state.update(ok=True, flags=cflags, failed_attempts=errors)
                if errors:
                    warnings.warn(
                        f"zero1toa: C++ CPU rasterizer built with reduced flags {cflags} (slower); "
                        f"the better flags failed: {errors[0]}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return True
            except Exception as exc:  # no compiler, unknown flag, missing headers, ...
                errors.append(f"{' '.join(cflags)}: {type(exc).__name__}: {str(exc)[:300]}")
        _ext_state.update(ok=False, error=" | ".join(errors))
        warnings.warn(
            f"zero1toa: the C++ CPU rasterizer could not be built, using the slower pure-torch compositor ({errors[0]})",
            RuntimeWarning,
            stacklevel=2,
        )
        return False


def cpp_kernel_error() -> str | None:
    """Why the C++ kernel failed to build (None if it built or was never tried)."""
    return _ext_state.get("error")


def cpp_kernel_flags() -> list[str] | None:
    """The compiler flags the loaded C++ kernel was built with (None if not loaded)."""
    return _ext_state.get("flags")


def resolve_impl(impl: str | None = None) -> str:
    """Pick the compositor: explicit ``impl``, else ``$ZERO1TOA_CPU_RASTERIZER``, else auto."""
    choice = (impl or os.environ.get(ENV_IMPL, "") or "auto").strip().lower()
    if choice not in ("auto", "cpp", "torch"):
        raise ValueError(f"CPU rasterizer implementation must be auto, cpp or torch; got {choice!r} (check ${ENV_IMPL})")
    if choice == "torch":
        return "torch"
    if cpp_kernel_available():
        return "cpp"
    if choice == "cpp":
        raise RuntimeError(f"the C++ CPU rasterizer was requested but could not be built: {cpp_kernel_error()}")
    return "torch"


# ----------------------------------------------------------------------------------------
# Projection: C++ kernel
# ----------------------------------------------------------------------------------------
class _CppProject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
        args = tuple(t.detach().contiguous() for t in (means, quats, scales, opacities, viewmats, Ks))
        geom = (width, height, float(eps2d), float(near_plane), float(far_plane))
        threads = torch.get_num_threads()
        radii, means2d, depths, conics = _ops().project_forward(*args, *geom, threads)
        ctx.args, ctx.geom, ctx.threads = args, geom, threads
        ctx.save_for_backward(radii)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics):
        (radii,) = ctx.saved_tensors
        C, N = ctx.args[4].shape[0], ctx.args[0].shape[0]
        like = ctx.args[0]

        def grad(v: Tensor | None, *shape: int) -> Tensor:
            return like.new_zeros(shape) if v is None else v.contiguous()

        v_means, v_quats, v_scales = _ops().project_backward(
            *ctx.args, *ctx.geom, radii, grad(v_means2d, C, N, 2), grad(v_depths, C, N), grad(v_conics, C, N, 3),
            ctx.threads,
        )
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------
# Binning (torch version; the C++ path has its own counting sort)
# ----------------------------------------------------------------------------------------
def _tile_bounds(means2d: Tensor, radii: Tensor, tile: int, tw: int, th: int) -> tuple[Tensor, ...]:
    """Per Gaussian tile rectangle [x0, x1) x [y0, y1) (gsplat's isect_tiles rule)."""
    t = means2d.detach().float() / tile
    r = radii.float() / tile
    x0 = torch.floor(t[..., 0] - r[..., 0]).clamp(0, tw).long()
    x1 = torch.ceil(t[..., 0] + r[..., 0]).clamp(0, tw).long()
    y0 = torch.floor(t[..., 1] - r[..., 1]).clamp(0, th).long()
    y1 = torch.ceil(t[..., 1] + r[..., 1]).clamp(0, th).long()
    return x0, x1, y0, y1


def bin_gaussians_torch(
    means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile: int = 16
) -> tuple[Tensor, Tensor]:
    """(image, tile) -> depth-sorted Gaussian ids. Returns offsets [I*TH*TW+1], ids [M] (int64)."""
    I, N = depths.shape
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    T = tw * th
    x0, x1, y0, y1 = _tile_bounds(means2d, radii, tile, tw, th)
    ok = (radii > 0).all(-1)
    counts = ((x1 - x0) * (y1 - y0)).masked_fill(~ok, 0)  # [I, N]
    order = torch.argsort(depths.detach().masked_fill(~ok, float("inf")), dim=-1, stable=True)
    flat = (order + torch.arange(I, device=order.device)[:, None] * N).reshape(-1)  # front to back
    cnt = counts.reshape(-1)[flat]
    pair_g = torch.repeat_interleave(flat, cnt)
    M = pair_g.numel()
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(M, device=flat.device) - torch.repeat_interleave(first, cnt)
    w = (x1 - x0).reshape(-1)[pair_g].clamp_min(1)
    tx = x0.reshape(-1)[pair_g] + local % w
    ty = y0.reshape(-1)[pair_g] + local // w
    key = (pair_g // N) * T + ty * tw + tx
    key, perm = torch.sort(key, stable=True)
    ids = (pair_g[perm] % N).to(torch.int64)
    offsets = torch.zeros(I * T + 1, dtype=torch.int64, device=flat.device)
    offsets[1:] = torch.cumsum(torch.bincount(key, minlength=I * T), 0)
    return offsets, ids


# ----------------------------------------------------------------------------------------
# Compositing: C++ kernel
# ----------------------------------------------------------------------------------------
class _CppComposite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, backgrounds, radii, depths, width, height, tile):
        offsets, ids = _ops().bin_gaussians(
            means2d.detach().contiguous(), radii, depths.detach().to(means2d.dtype).contiguous(), width, height, tile
        )
        # Tiny images are not worth a parallel region (and OpenMP barriers suffer most on a
        # busy machine).
        threads = torch.get_num_threads() if means2d.shape[0] * width * height >= 96 * 96 else 1
        args = (
            means2d.detach().contiguous(),
            conics.detach().contiguous(),
            opacities.detach().contiguous(),
            colors.detach().contiguous(),
            None if backgrounds is None else backgrounds.detach().contiguous(),
            radii,
            offsets,
            ids,
        )
        color, T, last = _ops().composite_forward(*args, width, height, tile, threads)
        ctx.args = args
        ctx.geom = (width, height, tile, threads)
        ctx.save_for_backward(T, last)
        ctx.has_bg = backgrounds is not None
        ctx.mark_non_differentiable(last)
        return color, T, last

    @staticmethod
    def backward(ctx, v_color, v_T, _v_last):
        T, last = ctx.saved_tensors
        width, height, tile, threads = ctx.geom
        if v_color is None:
            v_color = T.new_zeros(T.shape + (ctx.args[3].shape[-1],))
        v_color = v_color.contiguous()
        v_T = torch.zeros_like(T) if v_T is None else v_T.contiguous()
        v_m, v_con, v_op, v_col, v_bg = _ops().composite_backward(
            *ctx.args, width, height, tile, T, last, v_color, v_T, threads
        )
        return v_m, v_con, v_op, v_col, (v_bg if ctx.has_bg else None), None, None, None, None, None


# ----------------------------------------------------------------------------------------
# Compositing: pure torch (vectorised tile chunks, analytic backward)
# ----------------------------------------------------------------------------------------
_CHUNK_ELEMS = 1 << 21  # pixel x Gaussian entries per chunk: bounds memory to ~100 MB
_CHUNK_TILES = 64


def _torch_chunks(offsets: Tensor, tile: int) -> list[tuple[Tensor, int]]:
    """Group tiles with similar list lengths so padding stays small: [(tile ids, L)]."""
    counts = offsets[1:] - offsets[:-1]
    order = torch.argsort(counts, descending=True)
    counts_sorted = counts[order].tolist()
    P = tile * tile
    chunks, i, n = [], 0, len(counts_sorted)
    while i < n and counts_sorted[i] > 0:
        L = counts_sorted[i]
        take = max(1, min(_CHUNK_TILES, _CHUNK_ELEMS // max(1, P * L)))
        j = min(n, i + take)
        while j > i and counts_sorted[j - 1] == 0:
            j -= 1
        chunks.append((order[i:j], L))
        i = j
    return chunks


class _TileChunk:
    """Per-chunk geometry shared by the torch forward and backward."""

    def __init__(self, tiles: Tensor, L: int, offsets: Tensor, ids: Tensor, N: int, tw: int, th: int,
                 tile: int, width: int, height: int):  # fmt: skip
        dev = tiles.device
        T = tw * th
        self.tiles = tiles
        img = tiles // T
        t = tiles % T
        ar = torch.arange(L, device=dev)
        start = offsets[tiles]
        cnt = offsets[tiles + 1] - start
        self.lmask = ar[None] < cnt[:, None]  # [nt, L]
        idx = (start[:, None] + ar[None]).clamp_max(max(ids.numel() - 1, 0))
        self.g = ids[idx] + img[:, None] * N  # [nt, L] flat Gaussian ids into [I*N]
        pr = torch.arange(tile, device=dev)
        py = (t // tw)[:, None, None] * tile + pr[None, :, None]  # [nt, tile, 1]
        px = (t % tw)[:, None, None] * tile + pr[None, None, :]  # [nt, 1, tile]
        self.pmask = ((py < height) & (px < width)).reshape(len(tiles), -1)  # [nt, P]
        self.pix = (img[:, None, None] * height + py.clamp_max(height - 1)) * width + px.clamp_max(width - 1)
        self.pix = self.pix.reshape(len(tiles), -1)  # [nt, P] flat pixel ids into [I*H*W]
        self.px = (px + 0.5).expand(-1, tile, tile).reshape(len(tiles), -1, 1)  # [nt, P, 1]
        self.py = (py + 0.5).expand(-1, tile, tile).reshape(len(tiles), -1, 1)

    def evaluate(self, means2d, conics, opac):
        """Alpha and compositing state for every (tile pixel, list entry) of the chunk."""
        g = self.g
        mx, my = means2d[g, 0][:, None, :], means2d[g, 1][:, None, :]  # [nt, 1, L]
        ca, cb, cc = conics[g, 0][:, None, :], conics[g, 1][:, None, :], conics[g, 2][:, None, :]
        o = opac[g][:, None, :]
        dx = mx - self.px.to(mx.dtype)  # [nt, P, L]
        dy = my - self.py.to(my.dtype)
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        vis = torch.exp(-sigma)
        alpha = torch.clamp_max(o * vis, ALPHA_MAX)
        ok = (sigma >= 0) & (alpha >= ALPHA_MIN) & self.lmask[:, None, :] & self.pmask[:, :, None]
        a = torch.where(ok, alpha, torch.zeros_like(alpha))
        P_incl = torch.cumprod(1.0 - a, dim=-1)  # transmittance after each entry
        incl = ok & (P_incl > T_MIN)
        T_excl = torch.cat([torch.ones_like(P_incl[..., :1]), P_incl[..., :-1]], -1)
        w = torch.where(incl, a * T_excl, torch.zeros_like(a))
        T_final = torch.where(incl, P_incl, torch.ones_like(P_incl)).amin(-1)  # [nt, P]
        return dict(dx=dx, dy=dy, vis=vis, o=o, a=a, incl=incl, T_excl=T_excl, w=w, T_final=T_final,
                    ca=ca, cb=cb, cc=cc)  # fmt: skip


class _TorchComposite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, backgrounds, radii, depths, width, height, tile):
        I, N, D = colors.shape
        tw, th = math.ceil(width / tile), math.ceil(height / tile)
        offsets, ids = bin_gaussians_torch(means2d, radii, depths, width, height, tile)
        m2 = means2d.detach().reshape(I * N, 2)
        cn = conics.detach().reshape(I * N, 3)
        op = opacities.detach().reshape(I * N)
        col = colors.detach().reshape(I * N, D)
        out = torch.zeros(I * height * width, D, dtype=colors.dtype, device=colors.device)
        T_out = torch.ones(I * height * width, dtype=colors.dtype, device=colors.device)
        chunks = _torch_chunks(offsets, tile)
        for tiles, L in chunks:
            ch = _TileChunk(tiles, L, offsets, ids, N, tw, th, tile, width, height)
            st = ch.evaluate(m2, cn, op)
            rgb = torch.bmm(st["w"], col[ch.g])  # [nt, P, D]
            sel = ch.pmask
            out[ch.pix[sel]] = rgb[sel]
            T_out[ch.pix[sel]] = st["T_final"][sel]
        out = out.reshape(I, height, width, D)
        T_out = T_out.reshape(I, height, width)
        if backgrounds is not None:
            out = out + T_out[..., None] * backgrounds.detach()[:, None, None, :]
        ctx.save_for_backward(means2d, conics, opacities, colors, backgrounds, T_out, offsets, ids)
        ctx.geom = (width, height, tile)
        ctx.has_bg = backgrounds is not None
        return out, T_out, torch.zeros(0, dtype=torch.int32)

    @staticmethod
    def backward(ctx, v_color, v_T, _v_last):
        means2d, conics, opacities, colors, backgrounds, T_out, offsets, ids = ctx.saved_tensors
        width, height, tile = ctx.geom
        I, N, D = colors.shape
        tw, th = math.ceil(width / tile), math.ceil(height / tile)
        dt, dev = colors.dtype, colors.device
        if v_color is None:
            v_color = torch.zeros(I, height, width, D, dtype=dt, device=dev)
        if v_T is None:
            v_T = torch.zeros(I, height, width, dtype=dt, device=dev)
        vc_all = v_color.reshape(I * height * width, D)
        # Gradient w.r.t. the pixel's alpha (= 1 - T); the background term colour += T * bg.
        va_all = -v_T
        v_bg = None
        if backgrounds is not None:
            va_all = va_all - (v_color * backgrounds[:, None, None, :]).sum(-1)
            v_bg = (v_color * T_out[..., None]).sum((1, 2))
        va_all = va_all.reshape(-1)
        Tf_all = T_out.reshape(-1)
        m2 = means2d.detach().reshape(I * N, 2)
        cn = conics.detach().reshape(I * N, 3)
        op = opacities.detach().reshape(I * N)
        col = colors.detach().reshape(I * N, D)
        g_m = torch.zeros(I * N, 2, dtype=dt, device=dev)
        g_c = torch.zeros(I * N, 3, dtype=dt, device=dev)
        g_o = torch.zeros(I * N, dtype=dt, device=dev)
        g_col = torch.zeros(I * N, D, dtype=dt, device=dev)
        for tiles, L in _torch_chunks(offsets, tile):
            ch = _TileChunk(tiles, L, offsets, ids, N, tw, th, tile, width, height)
            st = ch.evaluate(m2, cn, op)
            vc = vc_all[ch.pix] * ch.pmask[..., None]  # [nt, P, D]
            va = va_all[ch.pix]  # [nt, P]
            Tf = Tf_all[ch.pix]
            cg = col[ch.g]  # [nt, L, D]
            dot = torch.bmm(vc, cg.transpose(1, 2))  # [nt, P, L]  colour_k . dL/dpixel
            w, a, incl = st["w"], st["a"], st["incl"]
            u = w * dot
            after = u.sum(-1, keepdim=True) - torch.cumsum(u, -1)  # sum over entries behind k
            ra = 1.0 / (1.0 - a)
            v_alpha = dot * st["T_excl"] - after * ra + (Tf * va)[..., None] * ra
            grad_ok = incl & (st["o"] * st["vis"] <= ALPHA_MAX)
            v_sigma = torch.where(grad_ok, -st["o"] * st["vis"] * v_alpha, torch.zeros_like(v_alpha))
            dx, dy = st["dx"], st["dy"]
            sx, sy = (v_sigma * dx).sum(1), (v_sigma * dy).sum(1)  # [nt, L]
            ca, cb, cc = st["ca"][:, 0], st["cb"][:, 0], st["cc"][:, 0]
            gm = torch.stack([ca * sx + cb * sy, cb * sx + cc * sy], -1)
            gc = torch.stack(
                [0.5 * (v_sigma * dx * dx).sum(1), (v_sigma * dx * dy).sum(1), 0.5 * (v_sigma * dy * dy).sum(1)], -1
            )
            go = torch.where(grad_ok, st["vis"] * v_alpha, torch.zeros_like(v_alpha)).sum(1)
            gcol = torch.bmm(w.transpose(1, 2), vc)  # [nt, L, D]
            lm = ch.lmask
            gid = ch.g[lm]
            g_m.index_add_(0, gid, gm[lm])
            g_c.index_add_(0, gid, gc[lm])
            g_o.index_add_(0, gid, go[lm])
            g_col.index_add_(0, gid, gcol[lm])
        return (
            g_m.reshape(I, N, 2),
            g_c.reshape(I, N, 3),
            g_o.reshape(I, N),
            g_col.reshape(I, N, D),
            v_bg if ctx.has_bg else None,
            None, None, None, None, None,
        )  # fmt: skip


def composite(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [C, N]
    colors: Tensor,  # [C, N, D]
    radii: Tensor,  # [C, N, 2] int32, 0 = culled
    depths: Tensor,  # [C, N] sort key (front to back)
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # [C, D]
    impl: str | None = None,
    tile_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing; returns (colour [C, H, W, D], alpha [C, H, W, 1]).

    Differentiable w.r.t. means2d, conics, opacities, colors and backgrounds.
    """
    impl = resolve_impl(impl)
    tile_size = tile_size or TILE_SIZES[impl]
    radii = radii.to(torch.int32).contiguous()
    fn = _CppComposite if impl == "cpp" else _TorchComposite
    if impl == "cpp" and means2d.device.type != "cpu":
        raise ValueError("the C++ compositor needs CPU tensors")
    color, T, _ = fn.apply(means2d, conics, opacities, colors, backgrounds, radii, depths, width, height, tile_size)
    return color, (1.0 - T)[..., None]


# ----------------------------------------------------------------------------------------
# Full rasterization (gsplat.rasterization(packed=False) equivalent)
# ----------------------------------------------------------------------------------------
def rasterize_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    impl: str | None = None,
    tile_size: int | None = None,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Same outputs as ``gsplat.rasterization(..., packed=False)``: (colors, alphas, meta).

    ``render_colors`` is [C, H, W, D(+1)] with the (expected) depth as the last channel for
    "RGB+D"/"RGB+ED", alphas [C, H, W, 1]; meta holds what DefaultStrategy reads.
    """
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"render_mode must be RGB, D, ED, RGB+D or RGB+ED; got {render_mode!r}")
    if not near_plane > 0:
        raise ValueError(f"near_plane must be > 0 for the CPU rasterizer, got {near_plane}")
    impl = resolve_impl(impl)
    tile_size = tile_size or TILE_SIZES[impl]
    C = viewmats.shape[0]
    N = means.shape[0]
    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane, impl=impl
    )
    op = opacities[None].expand(C, N)

    if sh_degree is None:
        cols = colors if colors.dim() == 3 else colors[None].expand(C, N, colors.shape[-1])
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        shs = colors if colors.dim() == 4 else colors[None].expand(C, N, *colors.shape[-2:])
        cols = sh_to_colors(sh_degree, dirs, shs)

    bgs = backgrounds
    if render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, proj.depths[..., None]], -1)
        if bgs is not None:
            bgs = torch.cat([bgs, bgs.new_zeros(C, 1)], -1)
    elif render_mode in ("D", "ED"):
        cols = proj.depths[..., None]
        if bgs is not None:
            bgs = bgs.new_zeros(C, 1)

    render, alpha = composite(
        proj.means2d, proj.conics, op, cols, proj.radii, proj.depths, width, height, bgs, impl, tile_size
    )
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], -1)
    meta: dict[str, Any] = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": op,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": 1,
        "n_cameras": C,
        "backend": f"cpu-{impl}",
    }
    return render, alpha, meta
