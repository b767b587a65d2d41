"""Render speed as the paper reports it: frames per second at a stated resolution.

The paper compares FPS overlays at 1024 x 1024 (HeadStudio reports >= 40 FPS there). A number
without its conditions is meaningless, so every measurement carries the device, resolution,
Gaussian count and rasterizer backend. Two timings:

- **render only**: rasterize Gaussians already placed in the world (what a viewer of an
  exported .ply pays per frame);
- **animate + render**: head model animation (expression, pose -> vertices), triangle frames,
  placing the bound Gaussians, then rasterize: what driving the avatar live costs per frame.

Warm-up iterations are excluded (first calls build kernels and allocate); the reported time is
the median of the repeats (robust to a stray slow frame on a shared machine).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..avatar.gaussians import BoundGaussians, WorldGaussians, triangle_frames
from ..head.base import HeadModel, HeadPose
from ..render.camera import Cameras
from ..render.rasterize import rasterize


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(max(0, warmup)):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _render(world: WorldGaussians, camera: Cameras, background: torch.Tensor):
    return rasterize(
        world.means, world.quats, world.scales, world.opacities, world.colors,
        camera.viewmats, camera.Ks, camera.width, camera.height,
        sh_degree=world.sh_degree, backgrounds=background, render_mode="RGB",
    )  # fmt: skip


@torch.no_grad()
def measure_fps(
    gaussians: BoundGaussians,
    head: HeadModel,
    camera: Cameras,  # 1 camera at the measured resolution
    expression: torch.Tensor,  # [E]
    pose: HeadPose,  # 1 frame
    warmup: int = 2,
    repeats: int = 5,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Render-only and animate+render FPS (median of ``repeats`` after ``warmup``)."""
    dev = resolve_device(device) if isinstance(device, str) else device
    g = gaussians.to(dev)
    cam = camera.to(dev)
    faces = head.faces.to(dev)
    bg = torch.ones(1, 3, device=dev)
    expr = expression.reshape(1, -1).float()

    def animate() -> WorldGaussians:
        verts = head.animate(expr, pose).to(dev)  # head models run on CPU tensors
        return g.to_world(triangle_frames(verts, faces), 0)

    world = animate()
    backend = _render(world, cam, bg).meta.get("backend", "unknown")
    render_times = time_call(lambda: _render(world, cam, bg), dev, warmup, repeats)
    full_times = time_call(lambda: _render(animate(), cam, bg), dev, warmup, repeats)
    anim_times = time_call(animate, dev, warmup, repeats)
    r, f, a = statistics.median(render_times), statistics.median(full_times), statistics.median(anim_times)
    return {
        "fps_render": 1.0 / r if r > 0 else None,
        "fps_animate_render": 1.0 / f if f > 0 else None,
        "seconds_render": r,
        "seconds_animate_render": f,
        "seconds_animate": a,
        "render_times": [round(t, 6) for t in render_times],
        "animate_render_times": [round(t, 6) for t in full_times],
        "width": cam.width,
        "height": cam.height,
        "num_gaussians": g.num_gaussians,
        "sh_degree": g.sh_degree,
        "device": device_description(dev),
        "backend": backend,
        "warmup": int(warmup),
        "repeats": int(repeats),
        "statistic": "median",
    }


__all__ = ["measure_fps", "time_call", "resolve_device", "device_description"]
