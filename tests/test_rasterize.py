"""The CPU rasterizer against a brute-force reference, gsplat's own torch code, and gsplat CUDA.

The reference here is deliberately independent of the code under test: projection comes from
gsplat's pure-torch implementation (``gsplat.cuda._torch_impl``), SH from gsplat's
``_spherical_harmonics``, and compositing is a plain loop over depth-sorted Gaussians that
evaluates every pixel (no tiles, no bounding boxes, no culling by radius). Gradients come from
autograd through that loop, in float64, so agreement means the analytic backward passes are
right.
"""

from __future__ import annotations

import math

from zero1toa.env import apply_defaults

apply_defaults()

import pytest  # noqa: E402
import torch  # noqa: E402
from gsplat.cuda._torch_impl import (  # noqa: E402
    _fully_fused_projection,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from zero1toa.render import cpu_rasterizer as cr  # noqa: E402
from zero1toa.render.camera import intrinsics, look_at  # noqa: E402
from zero1toa.render.rasterize import RenderOutput, rasterize  # noqa: E402

HAS_CPP = cr.cpp_kernel_available()
IMPLS = ["torch", pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CPP, reason="C++ kernel did not build"))]


# ----------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------
def make_scene(seed: int, N: int = 48, W: int = 37, H: int = 29, sh_degree: int | None = None, dtype=torch.float64):
    """Small random scene: 3 cameras, one of them inside the cloud (Gaussians behind it),
    scales from sub-pixel to frame-filling, some off-frame, one clamped (opacity > 0.999)
    and one culled (opacity < 1/255) Gaussian, non-multiple-of-tile image size."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g, dtype=dtype) * torch.tensor([0.9, 0.7, 0.8], dtype=dtype)
    means[:, 2] += 3.0
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.empty(N, 3, dtype=dtype).uniform_(math.log(0.004), math.log(0.5), generator=g))
    opacities = torch.empty(N, dtype=dtype).uniform_(0.05, 0.99, generator=g)
    opacities[0], opacities[1] = 0.9995, 0.002
    means[0] = torch.tensor([0.05, -0.05, 2.5], dtype=dtype)  # centred, large, clamped alpha
    scales[0] = 0.3
    # A stack of opaque Gaussians: pixels behind it terminate early (T <= 1e-4).
    means[2:8] = torch.randn(6, 3, generator=g, dtype=dtype) * 0.08 + torch.tensor([0.1, 0.05, 3.0], dtype=dtype)
    scales[2:8] = 0.18
    opacities[2:8] = 0.93
    if sh_degree is None:
        colors = torch.rand(N, 3, generator=g, dtype=dtype)
    else:
        colors = torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.4
    eyes = [(0.0, 0.0, 0.0), (1.6, 0.4, 0.6), (0.2, -0.1, 4.0)]
    targets = [(0.0, 0.0, 3.0), (0.0, 0.0, 3.0), (0.0, 0.0, 0.0)]
    viewmats = torch.stack([look_at(torch.tensor(e), torch.tensor(t)) for e, t in zip(eyes, targets)]).to(dtype)
    Ks = torch.stack([intrinsics(f, W, H) for f in (28.0, 34.0, 22.0)]).to(dtype)
    backgrounds = torch.rand(3, 3, generator=g, dtype=dtype)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=viewmats, Ks=Ks, width=W, height=H, sh_degree=sh_degree, backgrounds=backgrounds)  # fmt: skip


def leafs(scene: dict, keys=("means", "quats", "scales", "opacities", "colors", "backgrounds")) -> dict:
    out = dict(scene)
    for k in keys:
        out[k] = scene[k].clone().requires_grad_(True)
    return out


# ----------------------------------------------------------------------------------------
# Brute-force reference
# ----------------------------------------------------------------------------------------
def reference_composite(means2d, conics, opac, colors, depth, valid, bg, W, H, stats=None):
    """One camera; every pixel against every valid Gaussian, front to back, gsplat rules.

    ``stats["stopped"]`` counts pixels that terminated early (T would drop to <= 1e-4)."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means2d.dtype), torch.arange(W, dtype=means2d.dtype), indexing="ij")
    px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5
    D = colors.shape[-1]
    T = torch.ones(H * W, dtype=means2d.dtype)
    out = torch.zeros(H * W, D, dtype=means2d.dtype)
    done = torch.zeros(H * W, dtype=torch.bool)
    idx = torch.nonzero(valid).flatten()
    order = idx[torch.argsort(depth.detach()[idx], stable=True)]
    for g in order.tolist():
        dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
        a, b, c = conics[g]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opac[g] * torch.exp(-sigma), max=0.999)
        use = ~done & (sigma >= 0) & (alpha >= 1.0 / 255.0)
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done = done | stop
        use = use & ~stop
        w = torch.where(use, alpha * T, torch.zeros_like(T))
        out = out + w[:, None] * colors[g]
        T = torch.where(use, next_T, T)
    if bg is not None:
        out = out + T[:, None] * bg
    if stats is not None:
        stats["stopped"] = stats.get("stopped", 0) + int(done.sum())
    return out.reshape(H, W, D), (1 - T).reshape(H, W, 1)


def reference_render(s: dict, render_mode: str = "RGB+ED", stats: dict | None = None):
    """gsplat's torch projection + SH + the brute-force compositor: (rgb, alpha, depth)."""
    C, W, H = s["viewmats"].shape[0], s["width"], s["height"]
    covars, _ = _quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    _, means2d, depths, conics, _ = _fully_fused_projection(
        s["means"], covars, s["viewmats"], s["Ks"], W, H, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    det_ok = torch.ones_like(depths, dtype=torch.bool)
    valid = (depths >= 0.01) & det_ok
    if s["sh_degree"] is None:
        colors = s["colors"][None].expand(C, -1, -1)
    else:
        campos = torch.linalg.inv(s["viewmats"])[:, :3, 3]
        dirs = s["means"][None] - campos[:, None]
        shs = s["colors"][None].expand(C, -1, -1, -1)
        colors = torch.clamp_min(_spherical_harmonics(s["sh_degree"], dirs, shs) + 0.5, 0.0)
    rgbs, alphas, ds = [], [], []
    for c in range(C):
        col = colors[c]
        bg = s["backgrounds"][c] if s["backgrounds"] is not None else None
        if render_mode != "RGB":
            col = torch.cat([col, depths[c][:, None]], -1)
            bg = None if bg is None else torch.cat([bg, bg.new_zeros(1)])
        img, alpha = reference_composite(
            means2d[c], conics[c], s["opacities"], col, depths[c], valid[c], bg, W, H, stats
        )
        rgbs.append(img[..., :3])
        alphas.append(alpha)
        if render_mode == "RGB+ED":
            ds.append(img[..., 3:] / alpha.clamp(min=1e-10))
        elif render_mode == "RGB+D":
            ds.append(img[..., 3:])
    depth = torch.stack(ds) if ds else None
    return torch.stack(rgbs), torch.stack(alphas), depth


def render(s: dict, impl: str, render_mode: str = "RGB+ED"):
    rgb, alpha, meta = cr.rasterize_cpu(
        s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"],
        s["width"], s["height"], sh_degree=s["sh_degree"], backgrounds=s["backgrounds"],
        render_mode=render_mode, impl=impl,
    )  # fmt: skip
    if render_mode == "RGB":
        return rgb, alpha, None, meta
    return rgb[..., :-1], alpha, rgb[..., -1:], meta


def assert_close(actual, expected, rtol=1e-7, what=""):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale + 1e-12, f"{what}: max abs error {err:.3e} vs scale {scale:.3e}"


# ----------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(200, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(200, 16, 3, generator=g, dtype=torch.float64)
    ours = cr.sh_to_colors(degree, dirs, coeffs)
    ref = torch.clamp_min(_spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)
    assert_close(ours, ref, 1e-12, f"SH degree {degree}")


@pytest.mark.parametrize("impl", IMPLS)
def test_projection_matches_gsplat_torch_and_culls(impl):
    s = leafs(make_scene(3), ("means", "quats", "scales"))
    W, H = s["width"], s["height"]
    proj = cr.project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], W, H, impl=impl)
    ref = leafs(make_scene(3), ("means", "quats", "scales"))
    covars, _ = _quat_scale_to_covar_preci(ref["quats"], ref["scales"], compute_preci=False)
    _, m2, d, con, _ = _fully_fused_projection(ref["means"], covars, ref["viewmats"], ref["Ks"], W, H, eps2d=0.3)
    v = proj.valid
    assert v.any() and (~v).any()
    assert_close(proj.means2d[v], m2[v], 1e-12, "means2d")
    assert_close(proj.depths[v], d[v], 1e-12, "depths")
    assert_close(proj.conics[v], con[v], 1e-9, "conics")
    # gsplat 1.5.3 CUDA radius: ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d diag)).
    with torch.no_grad():
        cov00 = con[..., 2] / (con[..., 0] * con[..., 2] - con[..., 1] ** 2)
        ext = torch.sqrt(2 * torch.log(s["opacities"] * 255).clamp_min(0)).clamp_max(3.33)
        assert torch.equal(proj.radii[..., 0][v], torch.ceil(ext * cov00.sqrt())[v].int())
    assert (proj.radii[~v] == 0).all()
    assert (proj.radii[:, 1] == 0).all(), "opacity < 1/255 must be culled"
    assert not v[d < 0.01].any(), "behind-camera Gaussians must be culled"
    assert (d[2] < 0).sum() > 0, "scene should have Gaussians behind camera 2"
    assert proj.radii.dtype == torch.int32 and proj.radii.shape == (3, 48, 2)
    # Gradients of a random function of the valid outputs.
    g = torch.Generator().manual_seed(9)
    w2, wd, wc = (torch.randn(shape, generator=g, dtype=torch.float64) for shape in ((3, 48, 2), (3, 48), (3, 48, 3)))
    vm = v.double()
    for out, (a, b, c) in ((s, (proj.means2d, proj.depths, proj.conics)), (ref, (m2, d, con))):
        ((a * w2 * vm[..., None]).sum() + (b * wd * vm).sum() + (c * wc * vm[..., None]).sum()).backward()
    for k in ("means", "quats", "scales"):
        assert_close(s[k].grad, ref[k].grad, 1e-9, f"projection grad {k}")


@pytest.mark.parametrize("impl", IMPLS)
def test_binning_covers_every_box(impl):
    """Every tile a Gaussian's box touches lists it, in front-to-back order."""
    s = make_scene(5, N=80, W=70, H=45)
    proj = cr.project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], 70, 45, impl=impl)
    if impl == "cpp":
        offsets, ids = torch.ops.zero1toa_cpu.bin_gaussians(proj.means2d.detach(), proj.radii, proj.depths.detach(), 70, 45, 16)
    else:
        offsets, ids = cr.bin_gaussians_torch(proj.means2d, proj.radii, proj.depths, 70, 45, 16)
    tw, th = 5, 3
    for c in range(3):
        for t in range(tw * th):
            k = c * tw * th + t
            lst = ids[offsets[k] : offsets[k + 1]].long()
            dep = proj.depths[c, lst]
            assert (dep[1:] >= dep[:-1]).all()
            tx, ty = t % tw, t // tw
            m, r = proj.means2d[c], proj.radii[c].double()
            hit = (
                (m[:, 0] + r[:, 0] > tx * 16) & (m[:, 0] - r[:, 0] < (tx + 1) * 16)
                & (m[:, 1] + r[:, 1] > ty * 16) & (m[:, 1] - r[:, 1] < (ty + 1) * 16) & proj.valid[c]
            )  # fmt: skip
            assert set(torch.nonzero(hit).flatten().tolist()) <= set(lst.tolist())


# ----------------------------------------------------------------------------------------
# Forward and backward against the brute-force reference
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed,render_mode", [(0, "RGB+ED"), (1, "RGB+ED"), (2, "RGB+ED"), (1, "RGB+D"), (2, "RGB")])
def test_forward_matches_reference(impl, seed, render_mode):
    s = make_scene(seed)
    rgb, alpha, depth, meta = render(s, impl, render_mode)
    stats: dict = {}
    r_rgb, r_alpha, r_depth = reference_render(s, render_mode, stats)
    assert rgb.shape == (3, 29, 37, 3) and alpha.shape == (3, 29, 37, 1)
    assert (r_alpha > 0.5).float().mean() > 0.05, "scene should have opaque regions"
    assert stats["stopped"] > 0, "scene should make some pixels terminate early"
    assert_close(rgb, r_rgb, 1e-9, "rgb")
    assert_close(alpha, r_alpha, 1e-9, "alpha")
    if render_mode == "RGB":
        assert depth is None
    else:
        assert_close(depth, r_depth, 1e-9, "depth")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed,sh_degree", [(0, None), (1, None), (2, 3), (4, 1)])
def test_gradients_match_reference(impl, seed, sh_degree):
    base = make_scene(seed, sh_degree=sh_degree)
    g = torch.Generator().manual_seed(100 + seed)
    w_rgb = torch.randn(3, 29, 37, 3, generator=g, dtype=torch.float64)
    w_a = torch.randn(3, 29, 37, 1, generator=g, dtype=torch.float64)
    w_d = torch.randn(3, 29, 37, 1, generator=g, dtype=torch.float64) * 0.1

    def loss(rgb, alpha, depth):
        return (rgb * w_rgb).sum() + (alpha * w_a).sum() + (depth * w_d).sum()

    ours = leafs(base)
    loss(*render(ours, impl)[:3]).backward()
    ref = leafs(base)
    loss(*reference_render(ref)).backward()
    for k in ("means", "quats", "scales", "opacities", "colors", "backgrounds"):
        assert ours[k].grad is not None and torch.isfinite(ours[k].grad).all(), k
        assert ours[k].grad.abs().max() > 0, f"{k} got no gradient"
        assert_close(ours[k].grad, ref[k].grad, 1e-6, f"grad {k}")


@pytest.mark.parametrize("impl", IMPLS)
def test_means2d_grad_is_the_real_screen_gradient(impl, monkeypatch):
    """meta['means2d'].grad (as DefaultStrategy reads it) equals d loss / d means2d of the
    reference compositor."""
    monkeypatch.setenv(cr.ENV_IMPL, impl)
    s = make_scene(7)
    out = rasterize(
        s["means"].requires_grad_(True), s["quats"], s["scales"], s["opacities"], s["colors"],
        s["viewmats"], s["Ks"], s["width"], s["height"], backgrounds=s["backgrounds"], backend="cpu",
    )  # fmt: skip
    assert out.meta["backend"] == f"cpu-{impl}"
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out.rgb.shape, generator=g, dtype=torch.float64)
    m2 = out.meta["means2d"]
    m2.retain_grad()
    ((out.rgb * w).sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
    assert m2.grad is not None and m2.grad.shape == (3, 48, 2)
    assert m2.grad[out.meta["radii"][..., 0] > 0].abs().max() > 0
    assert (m2.grad[out.meta["radii"][..., 0] == 0] == 0).all()

    leaf = m2.detach().clone().requires_grad_(True)
    conics, depths, valid = out.meta["conics"].detach(), out.meta["depths"].detach(), out.meta["radii"][..., 0] > 0
    total = 0
    for c in range(3):
        col = torch.cat([s["colors"].detach(), depths[c][:, None]], -1)
        bg = torch.cat([s["backgrounds"][c], torch.zeros(1, dtype=torch.float64)])
        img, alpha = reference_composite(leaf[c], conics[c], s["opacities"], col, depths[c], valid[c], bg, 37, 29)
        total = total + (img[..., :3] * w[c]).sum() + alpha.sum() + 0.1 * (img[..., 3:] / alpha.clamp(min=1e-10)).sum()
    total.backward()
    assert_close(m2.grad, leaf.grad, 1e-6, "means2d grad")


# ----------------------------------------------------------------------------------------
# Implementations agree in float32 on a bigger scene
# ----------------------------------------------------------------------------------------
def test_torch_compositor_is_independent_of_tile_size():
    s = make_scene(5)
    proj = cr.project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], 37, 29, impl="torch")
    base = (proj.means2d.detach(), proj.conics.detach(), s["opacities"][None].expand(3, -1), s["colors"][None].expand(3, -1, -1))
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 29, 37, 3, generator=g, dtype=torch.float64)
    results = []
    for tile in (4, 8, 16):
        leaves = [t.clone().requires_grad_(True) for t in base]
        rgb, alpha = cr.composite(*leaves, proj.radii, proj.depths, 37, 29, s["backgrounds"], impl="torch", tile_size=tile)
        ((rgb * w).sum() + alpha.sum()).backward()
        results.append([rgb.detach(), alpha.detach()] + [t.grad for t in leaves])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_close(a, b, 1e-10, "tile size changed the result")


@pytest.mark.skipif(not HAS_CPP, reason="C++ kernel did not build")
def test_cpp_matches_torch_float32():
    s = make_scene(11, N=400, W=96, H=72, dtype=torch.float32)
    s["Ks"] = s["Ks"] * torch.tensor([96 / 37, 72 / 29, 1.0])[None, :, None]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 72, 96, 3, generator=g)
    results = {}
    # At a fixed thread count: the torch reference's float32 colours move by up to 2.6e-3 on ~1 %
    # of this scene's pixels between 1 and 2 threads (the C++ kernel's do not, see
    # test_cpp_compositor_is_deterministic_across_threads), beyond this test's tolerance.
    old_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for impl in ("cpp", "torch"):
            p = leafs(s)
            rgb, alpha, depth, meta = render(p, impl)
            ((rgb * w).sum() + alpha.sum() + depth.mean()).backward()
            results[impl] = (rgb.detach(), alpha.detach(), depth.detach(), {k: p[k].grad for k in ("means", "quats", "scales", "opacities", "colors", "backgrounds")})
    finally:
        torch.set_num_threads(old_threads)
    a, b = results["cpp"], results["torch"]
    for x, y, name in zip(a[:3], b[:3], ("rgb", "alpha", "depth")):
        assert_close(x, y, 5e-4, name)
    for k in a[3]:
        assert_close(a[3][k], b[3][k], 1e-3, f"grad {k}")


@pytest.mark.skipif(not HAS_CPP, reason="C++ kernel did not build")
def test_cpp_compositor_is_deterministic_across_threads():
    """Per-pair gradients are summed in a fixed order, so thread scheduling cannot change bits."""
    s = make_scene(12, N=300, W=80, H=64, dtype=torch.float32)
    proj = cr.project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], 80, 64)
    inputs = (proj.means2d.detach(), proj.conics.detach(), s["opacities"][None].expand(3, -1), s["colors"][None].expand(3, -1, -1))
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            bg = s["backgrounds"].clone().requires_grad_(True)
            rgb, alpha = cr.composite(*leaves, proj.radii, proj.depths, 80, 64, bg, impl="cpp")
            (rgb.square().sum() + alpha.sum()).backward()
            results.append([rgb.detach(), alpha.detach()] + [t.grad for t in leaves] + [bg.grad])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(results[0], results[1]):
        assert torch.equal(a, b)
    for a, b in zip(results[1], results[2]):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------
# Entry point, dispatch, errors
# ----------------------------------------------------------------------------------------
def test_rasterize_entry_meta_matches_gsplat_keys():
    s = make_scene(0, dtype=torch.float32)
    out = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 37, 29)
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (3, 29, 37, 3) and out.alpha.shape == (3, 29, 37, 1) and out.depth.shape == (3, 29, 37, 1)
    m = out.meta
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids", "depths", "conics", "opacities"):
        assert key in m, key
    assert m["gaussian_ids"] is None and m["n_cameras"] == 3 and (m["width"], m["height"]) == (37, 29)
    assert m["radii"].dtype == torch.int32 and m["radii"].shape == (3, 48, 2)
    assert m["means2d"].shape == (3, 48, 2) and m["conics"].shape == (3, 48, 3)
    assert m["depths"].shape == (3, 48) and m["opacities"].shape == (3, 48)
    assert m["backend"] in ("cpu-cpp", "cpu-torch")
    out_rgb = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 37, 29, render_mode="RGB")
    assert out_rgb.depth is None
    assert torch.allclose(out_rgb.rgb, out.rgb, atol=1e-6)


def test_env_override_selects_torch(monkeypatch):
    monkeypatch.setenv(cr.ENV_IMPL, "torch")
    s = make_scene(0, dtype=torch.float32)
    out = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 37, 29)
    assert out.meta["backend"] == "cpu-torch"
    monkeypatch.setenv(cr.ENV_IMPL, "nonsense")
    with pytest.raises(ValueError, match="ZERO1TOA_CPU_RASTERIZER"):
        rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 37, 29)


def test_rasterize_rejects_bad_input():
    s = make_scene(0, dtype=torch.float32)
    args = [s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 37, 29]
    with pytest.raises(ValueError, match="gsplat"):
        rasterize(*args, backend="gsplat")
    with pytest.raises(ValueError, match="render_mode"):
        rasterize(*args, render_mode="D")
    bad = list(args)
    bad[3] = s["opacities"][:, None]
    with pytest.raises(ValueError, match="opacities"):
        rasterize(*bad)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize(*args, backgrounds=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(*args[:4], torch.zeros(48, 4, 3), *args[5:], sh_degree=2)


def test_empty_and_offscreen_scene_renders_background():
    s = make_scene(0, dtype=torch.float32)
    means = s["means"].clone()
    means[:, 2] = -5.0  # everything behind every camera
    out = rasterize(means, s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"][:1], s["Ks"][:1], 37, 29,
                    backgrounds=torch.tensor([[0.2, 0.4, 0.6]]))  # fmt: skip
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(1, 29, 37, 3))
    assert (out.alpha == 0).all() and (out.meta["radii"] == 0).all()


# ----------------------------------------------------------------------------------------
# gsplat's DefaultStrategy runs on our meta
# ----------------------------------------------------------------------------------------
def test_default_strategy_grows_and_prunes_with_cpu_meta():
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    W = H = 32
    n = 60
    g = torch.Generator().manual_seed(0)
    params = torch.nn.ParameterDict(
        {
            "means": torch.randn(n, 3, generator=g) * 0.25 + torch.tensor([0.0, 0.0, 2.0]),
            "scales": torch.full((n, 3), math.log(0.06)),
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.full((n,), 1.0),
            "colors": torch.rand(n, 3, generator=g),
        }
    )
    with torch.no_grad():
        params["opacities"][:10] = -8.0  # sigmoid < 0.005: must be pruned
        params["scales"][10:20] = math.log(0.002)  # small: duplicated when their gradient is high
    optimizers = {k: torch.optim.Adam([p], lr=1e-2) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=2, refine_every=3, grow_grad2d=1e-5, prune_scale3d=10.0)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats = look_at(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0]))[None]
    Ks = intrinsics(30.0, W, H)[None]
    target = torch.zeros(1, H, W, 3)
    target[:, 8:24, 8:24] = torch.tensor([1.0, 0.2, 0.1])
    counts = []
    for step in range(7):
        out = rasterize(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            params["colors"], viewmats, Ks, W, H, render_mode="RGB",
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, out.meta)
        loss = (out.rgb - target).abs().mean()
        loss.backward()
        assert out.meta["means2d"].grad is not None
        strategy.step_post_backward(params, optimizers, state, step, out.meta)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        counts.append(len(params["means"]))
    assert counts[0] == n and counts[2] == n
    # Step 3 refines: the 10 transparent Gaussians are gone, high-gradient ones were grown.
    assert (torch.sigmoid(params["opacities"]) >= 0.005).all()
    assert state["grad2d"] is not None
    grown = counts[3] - (n - 10)
    assert grown > 0, f"no Gaussian was duplicated/split: counts {counts}"
    assert len(params["means"]) == len(params["colors"]) == len(params["quats"])


# ----------------------------------------------------------------------------------------
# CPU vs gsplat CUDA (only with a GPU)
# ----------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_cpu_matches_gsplat_cuda(sh_degree):
    s = make_scene(21, N=2000, W=160, H=120, sh_degree=sh_degree, dtype=torch.float32)
    s["Ks"] = s["Ks"] * torch.tensor([160 / 37, 120 / 29, 1.0])[None, :, None]
    keys = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
    results = {}
    for device in ("cpu", "cuda"):
        p = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in s.items()}
        p = leafs(p, keys)
        out = rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], p["viewmats"], p["Ks"],
                        160, 120, sh_degree=sh_degree, backgrounds=p["backgrounds"])  # fmt: skip
        out.meta["means2d"].retain_grad()
        w = torch.linspace(-1, 1, out.rgb.numel(), device=device).reshape(out.rgb.shape)
        ((out.rgb * w).sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        results[device] = (out, {k: p[k].grad.cpu() for k in keys})
    cpu, gpu = results["cpu"][0], results["cuda"][0]
    d_rgb = (cpu.rgb - gpu.rgb.cpu()).abs().max().item()
    d_alpha = (cpu.alpha - gpu.alpha.cpu()).abs().max().item()
    d_depth = (cpu.depth - gpu.depth.cpu()).abs().max().item()
    d_radii = (cpu.meta["radii"] - gpu.meta["radii"].cpu()).abs().max().item()
    print(f"\nCPU vs gsplat CUDA max |diff|: rgb {d_rgb:.2e} alpha {d_alpha:.2e} depth {d_depth:.2e} radii {d_radii}")
    for k in keys:
        a, b = results["cpu"][1][k], results["cuda"][1][k]
        print(f"  grad {k}: max |diff| {(a - b).abs().max().item():.2e} (scale {b.abs().max().item():.2e})")
    v = (gpu.meta["radii"].cpu() > 0).all(-1)
    m2_diff = (cpu.meta["means2d"].grad - gpu.meta["means2d"].grad.cpu())[v].abs().max().item()
    print(f"  means2d.grad max |diff| {m2_diff:.2e}")
    # Float32 on both sides (CUDA's __expf, our double-precision projection): allow rare
    # threshold flips (alpha at 1/255, early termination) but no systematic difference.
    err = (cpu.rgb - gpu.rgb.cpu()).abs()
    assert err.mean() < 1e-4, f"mean |rgb diff| {err.mean():.2e}"
    assert (err > 1e-2).float().mean() < 1e-3, "too many pixels differ by more than 1e-2"
    assert (cpu.alpha - gpu.alpha.cpu()).abs().mean() < 1e-4
    assert torch.equal((cpu.meta["radii"] > 0), (gpu.meta["radii"].cpu() > 0)) or d_radii <= 1
