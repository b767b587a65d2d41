"""Seconds per frame of each pseudo ground-truth generator (side by side, one run).

    .venv/bin/python benchmarks/generate.py [--frames 16] [--skip-tiny]

Rows: the embedded reprojection generator at 64, 256 and 512 px (CPU) and the tiny random
AnimateDiff+ControlNet at 64 px (CPU; and 512 px / 16 frames on CUDA when a GPU is present).
The target for the embedded generator is <= 0.2 s per 256x256 frame on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402


def _reference(tmp: Path, crop: int):
    from zero1toa.runfolder import load_reference
    from zero1toa.preprocess.head_fit import HeadFitConfig, fit_head
    from zero1toa.preprocess.pipeline import PreprocessConfig, preprocess_image
    from zero1toa.sample import write_sample_portrait

    run = tmp / f"run{crop}"
    img = write_sample_portrait(tmp / "sample.png")
    preprocess_image(img, run / "preprocess", PreprocessConfig(resolution=crop))
    fit_head(run / "preprocess", run / "head", HeadFitConfig())
    return load_reference(run)


def _time_reprojection(head, ref, res: int, frames: int, repeats: int = 3) -> float:
    from zero1toa.demo import demo_clip
    from zero1toa.generate.base import GenerationRequest
    from zero1toa.generate.reprojection import ReprojectionConfig, ReprojectionGenerator
    from zero1toa.progressive.schedules import clip_cameras

    gen = ReprojectionGenerator(head, ref.image, ref.camera, ref.mask, face_labels=head.face_labels, config=ReprojectionConfig(resolution=res))
    clip = demo_clip(head, ref, frames)
    cams = clip_cameras(clip, ref.camera, ref.target, res)
    req = GenerationRequest(ref.image, torch.zeros(frames, 3, res, res), cameras=cams, expressions=torch.from_numpy(clip.expressions), poses=clip.poses())
    gen.generate(req)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen.generate(req)
        times.append((time.perf_counter() - t0) / frames)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--skip-tiny", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        head, ref = _reference(tmp, 512)
        for res in (64, 256, 512):
            rows.append(("reprojection (embedded)", "cpu", res, args.frames, _time_reprojection(head, ref, res, args.frames), None))
    if not args.skip_tiny:
        from benchmarks.generate_diffusion import bench_tiny

        r = bench_tiny(resolution=64, frames=8, device="cpu")
        rows.append(("tiny animatediff+controlnet", "cpu", 64, 8, r["seconds_per_frame"], r.get("peak_memory_mb")))
        if torch.cuda.is_available():
            r = bench_tiny(resolution=512, frames=16, device="cuda")
            rows.append(("tiny animatediff+controlnet", "cuda", 512, 16, r["seconds_per_frame"], r.get("peak_memory_mb")))
    print(f"{'generator':30s} {'device':6s} {'res':>5s} {'frames':>6s} {'s/frame':>9s} {'peak MB':>8s}")
    for name, dev, res, fr, spf, mem in rows:
        print(f"{name:30s} {dev:6s} {res:5d} {fr:6d} {spf:9.4f} {('' if mem is None else f'{mem:.0f}'):>8s}")
    spf256 = next(r[4] for r in rows if r[0].startswith("reprojection") and r[2] == 256)
    print(f"\nembedded generator at 256 px: {spf256:.3f} s/frame (target <= 0.2 s): {'OK' if spf256 <= 0.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
