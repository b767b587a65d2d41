"""Avatar render speed as the paper reports it: FPS at 512 and 1024 px for realistic avatar sizes.

The paper shows FPS overlays at 1024 x 1024 (HeadStudio reports >= 40 FPS there on a GPU). This
prints, side by side, for each Gaussian count and resolution: "render only" FPS (rasterize
already-posed Gaussians, what a .ply viewer pays) and "animate + render" FPS (head animation,
binding, rasterize: what live driving pays). Warm-up runs are excluded; the median of the
repeats is reported (and the fastest frame, a hint of the uncontended speed on a shared machine),
with device and rasterizer backend.

Avatar sizes come from the presets: the default preset starts at ``avatar.init.num_gaussians``
and may grow to ``train.densify.max_gaussians``; the paper preset likewise (conf/preset/paper.yaml).
Avatars are synthetic (Gaussians bound to the built-in rig fitted to the sample portrait),
or a finished run's avatar when ``--avatar`` is given.

    .venv/bin/python benchmarks/render_fps.py --quick                 # 20k at 512 (CPU: seconds)
    .venv/bin/python benchmarks/render_fps.py                         # all sizes x 512, 1024
    .venv/bin/python benchmarks/render_fps.py --avatar runs/sample    # a finished run's avatar
    .venv/bin/python benchmarks/render_fps.py --device cuda           # gsplat on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402


def preset_sizes() -> dict[str, tuple[int, int]]:
    """(initial, maximum) Gaussian counts of the default and paper presets."""
    import yaml

    from zero1toa.config import Config

    cfg = Config()
    sizes = {"default": (cfg.avatar.init.num_gaussians, cfg.train.densify.max_gaussians)}
    paper = yaml.safe_load((ROOT / "conf" / "preset" / "paper.yaml").read_text()) or {}
    init = paper.get("avatar", {}).get("init", {}).get("num_gaussians", cfg.avatar.init.num_gaussians)
    top = paper.get("train", {}).get("densify", {}).get("max_gaussians", cfg.train.densify.max_gaussians)
    sizes["paper"] = (int(init), int(top))
    return sizes


def fitted_sample(folder: Path):
    """Preprocess + fit the sample portrait once -> (head, reference camera, expression, jaw)."""
    from zero1toa.preprocess.head_fit import HeadFitConfig, fit_head, load_fitted_head
    from zero1toa.preprocess.pipeline import PreprocessConfig, preprocess_image
    from zero1toa.sample import write_sample_portrait

    image = write_sample_portrait(folder / "portrait.png")
    preprocess_image(image, folder / "preprocess", PreprocessConfig(resolution=512))
    fit_head(folder / "preprocess", folder / "head", HeadFitConfig())
    fitted = load_fitted_head(folder / "head")
    return fitted.head, fitted.camera, fitted.expression, fitted.jaw


def synthetic_avatar(head, n: int, seed: int = 0):
    from zero1toa.avatar.gaussians import InitConfig, init_on_mesh

    labels = getattr(head, "face_labels", None)
    parts = None
    if labels is not None:
        from zero1toa.head.facemesh_rig import PART_NAMES

        parts = PART_NAMES
    return init_on_mesh(head, InitConfig(num_gaussians=n), seed=seed, face_labels=labels, part_names=parts)


def run_avatar(path: Path):
    """An avatar folder, a round folder or a run folder (its last finished round)."""
    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.evaluate.run import find_avatar_dir, latest_round_folder
    from zero1toa.runfolder import load_reference

    path = Path(path).resolve()
    if (path / "avatar.json").is_file():  # <run>/<stage>/round_k/avatar
        avatar_dir, run_dir = path, path.parents[2]
    elif (path / "avatar" / "avatar.json").is_file():  # <run>/<stage>/round_k
        avatar_dir, run_dir = path / "avatar", path.parents[1]
    else:  # <run>
        avatar_dir, run_dir = find_avatar_dir(path, latest_round_folder(path)), path
    gaussians, head, _ = load_avatar(avatar_dir)
    _, ref = load_reference(run_dir)
    return gaussians, head, ref.camera, ref.expression, ref.jaw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avatar", type=Path, default=None, help="a finished run (or its avatar folder) instead of synthetic avatars")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="Gaussian counts (default: the presets' initial and maximum counts)")
    ap.add_argument("--resolutions", type=int, nargs="*", default=[512, 1024])
    ap.add_argument("--repeats", type=int, default=5, help="timed frames per configuration and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved passes over all configurations")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the project's CI machines have 2 cores)")
    ap.add_argument("--quick", action="store_true", help="only the default preset's initial size at 512 px")
    args = ap.parse_args()

    import pandas as pd

    from zero1toa.evaluate.fps import measure_fps, resolve_device
    from zero1toa.head.base import HeadPose

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    presets = preset_sizes()
    t0 = time.perf_counter()
    avatars = []
    if args.avatar is not None:
        g, head, camera, expr, jaw = run_avatar(args.avatar)
        avatars.append((f"run:{args.avatar.name}", g))
    else:
        sizes = args.sizes or sorted({n for pair in presets.values() for n in pair})
        if args.quick:
            sizes, args.resolutions = [presets["default"][0]], [512]
        tmp = Path(tempfile.mkdtemp(prefix="zero1toa_fps_"))
        head, camera, expr, jaw = fitted_sample(tmp)
        for n in sizes:
            label = next((f"{name} {'init' if n == pair[0] else 'max'}" for name, pair in presets.items() if n in pair), "custom")
            avatars.append((label, synthetic_avatar(head, n)))
    print(f"# setup {time.perf_counter() - t0:.1f} s; device {device}; torch threads {torch.get_num_threads()}; presets {presets}", flush=True)

    pose = HeadPose.neutral(1)
    pose.jaw = jaw.reshape(1, 3).float()
    # Rounds interleave the configurations, so a burst of load from other processes on a shared
    # machine spreads over all of them instead of spoiling one row; samples of all rounds pool.
    samples: dict[tuple[str, int], dict] = {}
    for rnd in range(args.rounds):
        for label, g in avatars:
            for res in args.resolutions:
                r = measure_fps(g, head, camera.resized(res, res), expr, pose, warmup=args.warmup, repeats=args.repeats, device=device)
                s = samples.setdefault((label, res), {"render": [], "full": [], "info": r})
                s["render"] += r["render_times"]
                s["full"] += r["animate_render_times"]
        print(f"# round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for (label, res), s in samples.items():
        render, full = statistics.median(s["render"]), statistics.median(s["full"])
        rows.append(
            {
                "avatar": label,
                "gaussians": s["info"]["num_gaussians"],
                "resolution": f"{res}x{res}",
                "render FPS": round(1.0 / render, 1),
                "animate+render FPS": round(1.0 / full, 1),
                "render ms": round(1000 * render, 1),
                "animate+render ms": round(1000 * full, 1),
                # fastest frame: close to the uncontended speed when other work shares the machine
                "best render FPS": round(1.0 / min(s["render"]), 1),
                "best animate+render FPS": round(1.0 / min(s["full"]), 1),
                "backend": s["info"]["backend"],
            }
        )
    n = args.rounds * args.repeats
    print(f"\ndevice: {s['info']['device']}; median of {n} timed frames per row ({args.rounds} interleaved rounds x {args.repeats}, {args.warmup} warm-up each)")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
