"""Speed and memory of the diffusers backend on the tiny random model.

What it measures is the pipeline's overhead and scaling (frames, resolution, device), not the
cost of real SD-1.5 weights. ``bench_tiny`` is called by ``benchmarks/generate.py``; run this
file directly for a quick table:

    .venv/bin/python benchmarks/generate_diffusion.py [--device cpu] [--frames 8 16] [--resolution 64 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import torch


class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms, psutil)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def bench_tiny(
    resolution: int = 64,
    frames: int = 8,
    device: str = "cpu",
    steps: int = 2,
    guidance_scale: float = 1.0,
    refresh: bool = False,
    repeats: int = 3,
) -> dict:
    """Time the tiny model generating ``frames`` frames at ``resolution``; return measured numbers.

    Builds the tiny model in a temporary folder, loads it through ``from_folder`` (as real
    weights are), runs one warm-up call, then ``repeats`` timed calls (median reported).
    ``refresh`` times the video-to-video path (init frames at strength 0.5) instead of
    generation from noise. Peak memory: CUDA's max allocated on GPU, else the process's peak
    RSS during the timed calls (and its increase over the RSS before them).
    """
    from zero1toa.env import apply_defaults

    apply_defaults()
    from zero1toa.generate.base import GenerationRequest
    from zero1toa.generate.diffusion import AnimateDiffControlNetGenerator, DiffusionSettings
    from zero1toa.generate.tiny import build_tiny_animatediff

    dev = torch.device(device)
    settings = DiffusionSettings(num_inference_steps=steps, guidance_scale=guidance_scale)
    g = torch.Generator().manual_seed(0)
    request = GenerationRequest(
        reference=torch.rand(3, resolution, resolution, generator=g),
        landmark_maps=(torch.rand(frames, 3, resolution, resolution, generator=g) > 0.98).float(),
        init_frames=torch.rand(frames, 3, resolution, resolution, generator=g) if refresh else None,
        strength=0.5 if refresh else 1.0,
        seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = build_tiny_animatediff(Path(tmp) / "tiny", seed=0, resolution=resolution)
        build_s = time.perf_counter() - t0
        folder_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        t0 = time.perf_counter()
        gen = AnimateDiffControlNetGenerator.from_folder(folder, device=dev, settings=settings)
        load_s = time.perf_counter() - t0

    def run():
        gen.generate(request)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    run()  # warm-up (allocator, kernels)
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with _PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    seconds = sorted(times)[len(times) // 2]
    out = {
        "backend": "animatediff-controlnet (tiny random)",
        "device": str(dev),
        "resolution": resolution,
        "frames": frames,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "mode": "refresh@0.5" if refresh else "noise",
        "seconds_per_call": round(seconds, 4),
        "seconds_per_frame": round(seconds / frames, 5),
        "build_s": round(build_s, 3),
        "load_s": round(load_s, 3),
        "folder_mb": round(folder_mb, 2),
        "torch_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        out["peak_memory_kind"] = "cuda max_memory_allocated"
    else:
        out["peak_memory_mb"] = round(mem.peak / 2**20, 1)
        out["peak_memory_kind"] = "process peak RSS during timed calls"
        out["peak_increase_mb"] = round((mem.peak - mem.start) / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--resolution", type=int, nargs="+", default=[64])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for res in args.resolution:
        for frames in args.frames:
            for refresh in (False, True):
                print(json.dumps(bench_tiny(res, frames, args.device, args.steps, args.guidance_scale, refresh)))


if __name__ == "__main__":
    main()
