"""Rendering benchmark: forward FPS, forward+backward it/s and peak memory per backend.

Scenes are head-like: Gaussians on a thin ellipsoidal shell (0.15 x 0.20 x 0.18 m), flattened
like surface splats, seen from 0.6 m by a camera whose frame the head fills about half of,
so the pixel coverage and depth complexity resemble what avatar training renders.

    .venv/bin/python benchmarks/render.py --quick            # 10k Gaussians at 256 px
    .venv/bin/python benchmarks/render.py --device cpu --impl torch
    .venv/bin/python benchmarks/render.py --device cuda      # gsplat (needs a GPU)

Each setting runs in a fresh subprocess, so memory left by one setting does not hide the
next one's. CPU peak memory is the largest resident-set growth over the baseline taken after
the scene is built, sampled every millisecond from /proc (tracemalloc cannot see torch's
allocations); CUDA peak memory is torch.cuda.max_memory_allocated(). Times are the best and
the median of the timed repeats (on a shared machine the best is the more stable number).

On a machine whose cores are busy with other processes, OpenMP's default spin-waiting makes
multi-threaded CPU runs collapse (measured 10x slower with 2 threads on 2 busy cores);
``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported) avoids that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from zero1toa.render.camera import intrinsics, look_at  # noqa: E402
from zero1toa.render.rasterize import rasterize  # noqa: E402

HEAD_AXES = (0.075, 0.10, 0.09)  # semi-axes in metres
CAMERA_DISTANCE = 0.6


def head_scene(n: int, size: int, device: str, seed: int = 0) -> dict:
    """Surface-like Gaussians on a head-sized ellipsoid; spacing shrinks as n grows."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.tensor(HEAD_AXES)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    means = d * axes * (1 + 0.03 * torch.randn(n, 1, generator=g))
    area = 4 * math.pi * float(axes.prod()) ** (2 / 3)
    spacing = math.sqrt(area / n)
    scales = spacing * 0.6 * torch.exp(0.3 * torch.randn(n, 3, generator=g))
    scales[:, 2] *= 0.2  # flat splats
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    focal = 2.4 * size  # head height ~0.8 of the frame, area ~half of it
    viewmats = look_at(torch.tensor([0.0, 0.0, CAMERA_DISTANCE]), torch.zeros(3))[None]
    Ks = intrinsics(focal, size, size)[None]
    backgrounds = torch.ones(1, 3)
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                   viewmats=viewmats, Ks=Ks, backgrounds=backgrounds)  # fmt: skip
    return {k: v.to(device) for k, v in tensors.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples RSS in a thread; ``peak`` is the largest growth over the baseline, in bytes."""

    def __enter__(self) -> "PeakRSS":
        self.base = _rss_bytes()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes() - self.base)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_one(n: int, size: int, device: str, repeats: int) -> dict:
    s = head_scene(n, size, device)
    leaves = {k: s[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}

    def run(p: dict):
        return rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], s["viewmats"], s["Ks"],
                         size, size, backgrounds=s["backgrounds"], render_mode="RGB+ED")  # fmt: skip

    def fwd() -> None:
        with torch.no_grad():
            run(s)

    def fwd_bwd() -> None:
        out = run(leaves)
        out.meta["means2d"].retain_grad()
        loss = (out.rgb - 0.5).square().mean() + 0.1 * out.alpha.mean() + 0.01 * out.depth.mean()
        loss.backward()
        for v in leaves.values():
            v.grad = None

    from zero1toa.render import cpu_rasterizer

    if device == "cpu":
        cpu_rasterizer.resolve_impl()  # build/load the C++ kernel before measuring memory
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times_f, times_fb = [], []
    with PeakRSS() as mem:
        with torch.no_grad():
            probe = run(s)
        coverage = float((probe.alpha > 0.5).float().mean())
        backend = probe.meta["backend"]
        del probe
        fwd()  # warm-up
        fwd_bwd()
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            fwd()
            _sync(device)
            times_f.append(time.perf_counter() - t0)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            fwd_bwd()
            _sync(device)
            times_fb.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else mem.peak
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return dict(backend=backend, device=device, n=n, size=size, coverage=coverage,
                fwd_best_s=min(times_f), fwd_median_s=med(times_f),
                fwd_bwd_best_s=min(times_fb), fwd_bwd_median_s=med(times_fb), peak_mib=peak / 2**20)  # fmt: skip


def _run_isolated(n: int, size: int, device: str, repeats: int, threads: int) -> dict:
    """One setting in a fresh interpreter (clean memory baseline); returns its result dict."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(n), str(size),
           "--device", device, "--repeats", str(repeats), "--threads", str(threads)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark setting N={n} size={size} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 10k Gaussians at 256 px")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available, else cpu")
    ap.add_argument("--impl", default=None, choices=["auto", "cpp", "torch"], help="CPU compositor (sets $ZERO1TOA_CPU_RASTERIZER)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per setting (default: 5 on CPU, 20 on CUDA)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the project's machines have 2 cores)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="override resolutions")
    ap.add_argument("--counts", type=int, nargs="*", default=None, help="override Gaussian counts")
    ap.add_argument("--one", type=int, nargs=2, metavar=("N", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if args.impl:
        os.environ["ZERO1TOA_CPU_RASTERIZER"] = args.impl
    repeats = args.repeats or (5 if device == "cpu" else 20)
    if args.one:
        torch.set_num_threads(args.threads)
        print(json.dumps(bench_one(args.one[0], args.one[1], device, repeats)))
        return 0

    counts = args.counts or ([10_000] if args.quick else [10_000, 50_000, 100_000])
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    header = (f"{'backend':<10} {'device':<6} {'N':>7} {'res':>5} {'cover':>6} {'fwd FPS':>8} {'fwd ms':>14} "
              f"{'f+b it/s':>9} {'f+b ms':>14} {'peak MiB':>9}")  # fmt: skip
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"threads={args.threads}, repeats={repeats}, OMP_WAIT_POLICY={wait}; ms columns: best / median")
    print(header)
    print("-" * len(header))
    for n in counts:
        for size in sizes:
            r = _run_isolated(n, size, device, repeats, args.threads)
            fwd = f"{1e3 * r['fwd_best_s']:.1f} / {1e3 * r['fwd_median_s']:.1f}"
            fb = f"{1e3 * r['fwd_bwd_best_s']:.1f} / {1e3 * r['fwd_bwd_median_s']:.1f}"
            print(f"{r['backend']:<10} {r['device']:<6} {r['n']:>7} {r['size']:>5} {r['coverage']:>6.2f} "
                  f"{1 / r['fwd_best_s']:>8.1f} {fwd:>14} {1 / r['fwd_bwd_best_s']:>9.1f} {fb:>14} "
                  f"{r['peak_mib']:>9.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
