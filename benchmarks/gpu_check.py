"""Everything in this project that needs CUDA, measured in one run: the GPU figures of the README.

Run through ``benchmarks/gpu_check.sh`` (it picks the venv's python). On one GPU it takes a few
minutes (budget: 8) and writes ``benchmarks/results/gpu_check-<date>.json``. Steps:

1. **raster**: gsplat (CUDA) vs the project's CPU compositor on the same head-like scenes (RGB and
   SH degree 3): image, alpha and gradient differences, asserted within the stated tolerances;
2. **fps**: animate + render (and render only) frames per second at 512 and 1024 px for 20k and
   100k Gaussians (goal: >= 1000 FPS at 512 px with 20k on an H100-class GPU; LAM reports 563 on
   an A100);
3. **train**: training iterations per second of the paper preset's avatar (SH 3, 512 px, its
   initial and maximum Gaussian counts; LPIPS off: no weights here, so its cost is not included);
4. **generate**: one 16-frame 512 px generation (25 steps, float16) with the AnimateDiff+ControlNet
   route and with the AniPortrait route at full size with random weights: seconds, peak memory;
5. **projection**: from these, the hours one avatar takes at ``preset=paper`` (goal <= 1 h; the
   paper's secondary sources say ~5 h on an A6000).

``--dry-run`` runs every step at toy size on the CPU, skipping what needs CUDA with a message, so
the wiring is checked on a machine without a GPU; it writes to ``--out`` (default: a temporary
folder), never to benchmarks/results. Nothing here fakes a figure: a step that cannot run says
``skipped`` with the reason, one that fails says ``failed`` with the error, and the exit status is
1 when any step failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

# Tolerances of the gsplat-vs-CPU comparison (float32 both sides; CUDA's __expf and our
# double-precision projection allow rare alpha-threshold flips, no systematic difference).
RASTER_TOL = {"rgb_mean": 1e-4, "rgb_frac_over_1e-2": 1e-3, "alpha_mean": 1e-4, "grad_rel_l2": 2e-2}
FPS_GOAL = 1000.0  # animate + render, 512 px, 20k Gaussians, H100-class GPU
HOURS_GOAL = 1.0  # one avatar at preset=paper


class Skip(Exception):
    """A step (or part) that cannot run here; the message says why."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- 1. raster
def _render_with_grads(scene: dict, size: int, sh_degree: int | None, device: str) -> tuple:
    from zero1toa.render.rasterize import rasterize

    keys = ("means", "quats", "scales", "opacities", "colors")
    p = {k: (v.detach().to(device).requires_grad_(k in keys)) for k, v in scene.items()}
    out = rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], p["viewmats"], p["Ks"], size, size,
                    sh_degree=sh_degree, backgrounds=p["backgrounds"], render_mode="RGB")  # fmt: skip
    w = torch.linspace(-1, 1, out.rgb.numel(), device=device).reshape(out.rgb.shape)
    ((out.rgb * w).sum() + out.alpha.sum()).backward()
    return out.rgb.detach().cpu(), out.alpha.detach().cpu(), {k: p[k].grad.detach().cpu() for k in keys}, out.meta.get("backend")


def step_raster(toy: bool, cuda: bool) -> dict:
    from render import head_scene

    n, size = (2000, 64) if toy else (20000, 512)
    results = {}
    for label, sh in (("rgb", None), ("sh3", 3)):
        scene = head_scene(n, size, "cpu", seed=1)
        if sh is not None:  # SH coefficients [N, 16, 3] with a dominant DC term
            g = torch.Generator().manual_seed(2)
            scene["colors"] = torch.cat([torch.rand(n, 1, 3, generator=g) * 2, 0.2 * torch.randn(n, 15, 3, generator=g)], 1)
        t0 = time.perf_counter()
        cpu = _render_with_grads(scene, size, sh, "cpu")
        row = {"gaussians": n, "size": size, "cpu_backend": cpu[3], "cpu_forward_backward_s": round(time.perf_counter() - t0, 4)}
        assert torch.isfinite(cpu[0]).all() and all(torch.isfinite(v).all() for v in cpu[2].values())
        if not cuda:
            row["gsplat"] = "skipped: CUDA is not available (the CPU compositor ran; nothing to compare it with)"
            results[label] = row
            continue
        gpu = _render_with_grads(scene, size, sh, "cuda")
        err = (cpu[0] - gpu[0]).abs()
        row.update(
            rgb_max=err.max().item(),
            rgb_mean=err.mean().item(),
            rgb_frac_over_1e_2=(err > 1e-2).float().mean().item(),
            alpha_mean=(cpu[1] - gpu[1]).abs().mean().item(),
            grad_rel_l2={k: ((cpu[2][k] - gpu[2][k]).norm() / gpu[2][k].norm().clamp_min(1e-12)).item() for k in cpu[2]},
        )
        bad = [f"rgb mean {row['rgb_mean']:.2e}"] if row["rgb_mean"] >= RASTER_TOL["rgb_mean"] else []
        bad += [f"rgb >1e-2 on {row['rgb_frac_over_1e_2']:.2e} of pixels"] if row["rgb_frac_over_1e_2"] >= RASTER_TOL["rgb_frac_over_1e-2"] else []
        bad += [f"alpha mean {row['alpha_mean']:.2e}"] if row["alpha_mean"] >= RASTER_TOL["alpha_mean"] else []
        bad += [f"grad {k} rel {v:.2e}" for k, v in row["grad_rel_l2"].items() if v >= RASTER_TOL["grad_rel_l2"]]
        row["within_tolerance"] = not bad
        results[label] = row
        if bad:
            raise AssertionError(f"gsplat vs CPU ({label}) outside tolerance {RASTER_TOL}: {'; '.join(bad)}")
    return {"tolerances": RASTER_TOL, "scenes": results}


# ----------------------------------------------------------------------------- 2. fps
def _fitted(work: Path):
    from render_fps import fitted_sample

    return fitted_sample(work)


def _avatar(head, n: int, sh_degree: int):
    from zero1toa.avatar.gaussians import InitConfig, init_on_mesh
    from zero1toa.head.facemesh_rig import PART_NAMES

    return init_on_mesh(head, InitConfig(num_gaussians=n, sh_degree=sh_degree), seed=0, face_labels=getattr(head, "face_labels", None), part_names=PART_NAMES)


def step_fps(toy: bool, device: torch.device, fitted) -> dict:
    from zero1toa.evaluate.fps import measure_fps
    from zero1toa.head.base import HeadPose

    head, camera, expr, jaw = fitted
    pose = HeadPose.neutral(1)
    pose.jaw = jaw.reshape(1, 3).float()
    counts, sizes = ((2000,), (64, 128)) if toy else ((20000, 100000), (512, 1024))
    warmup, repeats = (1, 3) if toy else (20, 200)
    rows = []
    for n in counts:
        g = _avatar(head, n, sh_degree=3)
        for size in sizes:
            r = measure_fps(g, head, camera.resized(size, size), expr, pose, warmup=warmup, repeats=repeats, device=device)
            rows.append({k: r[k] for k in ("num_gaussians", "width", "fps_animate_render", "fps_render", "seconds_animate", "backend", "device")})
    goal = next((r for r in rows if r["num_gaussians"] == 20000 and r["width"] == 512), None)
    out = {"rows": rows, "statistic": f"median of {repeats} frames after {warmup} warm-up", "goal_fps_animate_render_512_20k": FPS_GOAL}
    out["meets_goal"] = None if goal is None or device.type != "cuda" else goal["fps_animate_render"] >= FPS_GOAL
    return out


# ----------------------------------------------------------------------------- 3. train
class _ClipSource:
    """A fixed 16-frame clip of random smooth targets at the training resolution (the loop's cost
    does not depend on what the frames show)."""

    def __init__(self, camera, expr, jaw, size: int, device: torch.device, frames: int = 16):
        from zero1toa.train.samples import SampleTensors

        g = torch.Generator().manual_seed(0)
        imgs = torch.nn.functional.interpolate(torch.rand(frames, 3, 16, 16, generator=g), size=(size, size), mode="bilinear")
        cam = camera.resized(size, size)
        self.t = SampleTensors(
            frames=imgs.to(device), masks=torch.ones(frames, 1, size, size, device=device),
            viewmats=cam.viewmats.expand(frames, 4, 4).clone(), Ks=cam.Ks.expand(frames, 3, 3).clone(),
            expressions=expr.reshape(1, -1).float().expand(frames, -1).clone(), jaws=jaw.reshape(1, 3).float().expand(frames, 3).clone(),
            resolution=size,
        )  # fmt: skip

    def batch(self, step, gaussians):
        return self.t

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def _paper_cfg():
    from flows.config import compose

    return compose(["preset=paper"])


def step_train(toy: bool, device: torch.device, fitted) -> dict:
    from dataclasses import replace

    from zero1toa.train.trainer import Trainer

    head, camera, expr, jaw = fitted
    cfg = _paper_cfg()
    train_cfg = replace(cfg.train, densify=replace(cfg.train.densify, enabled=False), checkpoint_every=0)
    size = 64 if toy else cfg.generator.resolution
    counts = (1000,) if toy else (cfg.avatar.init.num_gaussians, cfg.train.densify.max_gaussians)
    warm, timed = (1, 3) if toy else (20, 100)
    rows = []
    for n in counts:
        g = _avatar(head, n, cfg.avatar.init.sh_degree).to(device)
        source = _ClipSource(camera, expr, jaw, size, device)
        trainer = Trainer(g, head, warm + timed, train_cfg, seed=0, progress=False)
        trainer.run(source, warm)
        _sync(device)
        t0 = time.perf_counter()
        trainer.run(source, warm + timed)
        _sync(device)
        dt_ = time.perf_counter() - t0
        rows.append({"gaussians": n, "resolution": size, "sh_degree": cfg.avatar.init.sh_degree, "iterations_per_s": timed / dt_, "timed_iterations": timed})
        inactive = trainer.loss_fn.inactive_terms
        del trainer, g
    return {"rows": rows, "device": str(device), "densification": "off while timing (fixed counts)", "inactive_loss_terms": inactive}


# ----------------------------------------------------------------------------- 4. generate
def _maps(frames: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    maps = torch.zeros(frames, 3, size, size)
    idx = torch.randint(0, size, (frames, 400, 2), generator=g)
    for f in range(frames):
        maps[f, :, idx[f, :, 0], idx[f, :, 1]] = 1.0
    return maps


def step_generate(route: str, toy: bool, device: torch.device, steps: int) -> dict:
    import gpu_check_models as M

    from zero1toa.generate.base import GenerationRequest

    frames, size = (2, 64) if toy else (16, 512)
    steps = 2 if toy else steps
    t0 = time.perf_counter()
    if toy:
        gen = M.aniportrait_toy(steps) if route == "aniportrait" else M.animatediff_toy(steps)
        dtype = "float32"
    else:
        guidance = 3.5 if route == "aniportrait" else 7.5
        gen = (M.aniportrait_full if route == "aniportrait" else M.animatediff_full)(str(device), torch.float16, steps, guidance)
        dtype = "float16"
    build_s = time.perf_counter() - t0
    ref = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(size, size), mode="bilinear")[0]
    req = GenerationRequest(reference=ref, landmark_maps=_maps(frames, size), seed=0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    out = gen.generate(req)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {
        "route": route, "frames": frames, "resolution": size, "steps": steps, "guidance_scale": gen.settings.guidance_scale,
        "dtype": dtype, "parameters": M.parameter_count(gen), "build_s": round(build_s, 2), "seconds": round(seconds, 3),
        "seconds_per_frame": round(seconds / frames, 4), "frames_finite": bool(torch.isfinite(out.frames).all()),
        "weights": gen.info.weights,
    }  # fmt: skip
    row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    del gen, out
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- 5. projection
def step_projection(results: dict, toy: bool) -> dict:
    """Hours for one avatar at preset=paper from the measured rates (what is left out is listed)."""
    from zero1toa.nodes import _round_strength, plan_rounds, refresh_schedule, round_clip_ids

    cfg = _paper_cfg()
    train = results.get("train", {}).get("result")
    if not train:
        raise Skip("no training rate was measured")
    rates = [r["iterations_per_s"] for r in train["rows"]]
    its = sum(rates) / len(rates)  # the count grows from the initial to the maximum: their mean
    plans = plan_rounds(cfg)
    sched = refresh_schedule(cfg)
    iterations = sum(cfg.stages.spatial_iterations if p.stage == "spatial" else cfg.stages.temporal_iterations for p in plans)
    steps = cfg.generator.num_inference_steps
    denoise_steps = 0  # over every generation of the run: new clips at full strength, refreshes at the round's
    new_clips = refreshes = 0
    for plan in plans:
        fresh = len(round_clip_ids(cfg, plan))
        n_ref = int(sched.loc[sched["round"] == plan.name, "refreshes"].sum())
        new_clips += fresh
        refreshes += n_ref
        denoise_steps += fresh * steps + n_ref * min(steps, int(steps * _round_strength(cfg, plan)))
    out = {"iterations": iterations, "train_iterations_per_s": its, "new_clips": new_clips, "refreshes": refreshes,
           "frames_per_clip": cfg.stages.spatial.frames_per_clip, "denoise_steps_total": denoise_steps,
           "left_out": ["LPIPS (no weights here)", "landmark checks and their regenerations", "person masks", "evaluation and export", "model loading"],
           "toy": toy, "goal_hours": HOURS_GOAL}  # fmt: skip
    train_h = iterations / its / 3600
    for route in ("aniportrait", "animatediff"):
        gen = results.get(f"generate_{route}", {}).get("result")
        if not gen:
            continue
        per_step = gen["seconds"] / gen["steps"]  # a 16-frame clip per step, overhead included
        gen_h = denoise_steps * per_step / 3600
        out[route] = {"train_hours": round(train_h, 3), "generation_hours": round(gen_h, 3), "total_hours": round(train_h + gen_h, 3)}
        out[route]["meets_goal"] = None if toy else (train_h + gen_h) <= HOURS_GOAL
    if toy:
        out["note"] = "toy sizes on the CPU: these hours describe nothing; the wiring is what ran"
    return out


# ----------------------------------------------------------------------------- driver
def _machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "platform": platform.platform()}
    try:
        import diffusers
        import gsplat

        info.update(diffusers=diffusers.__version__, gsplat=getattr(gsplat, "__version__", "?"))
    except Exception as e:  # recorded, not fatal
        info["import_error"] = repr(e)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU (CUDA parts skipped with a message)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results; --dry-run: a temporary folder)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these steps: raster fps train generate projection")
    ap.add_argument("--steps", type=int, default=25, help="denoising steps of the generation step (default: 25, both routes' default)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.dry_run
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; run with --dry-run to check the wiring on this machine", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    toy = args.dry_run
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_")) if toy else ROOT / "benchmarks" / "results")
    wanted = set(args.only or ["raster", "fps", "train", "generate", "projection"])
    t_start = time.perf_counter()
    report = {"date": dt.date.today().isoformat(), "dry_run": toy, "machine": _machine(device), "steps": {}}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_work_"))
    fitted = None

    def run(name: str, fn) -> None:
        t0 = time.perf_counter()
        entry: dict = {}
        try:
            entry["result"] = fn()
            entry["status"] = "ok"
        except Skip as e:
            entry.update(status="skipped", message=str(e))
        except Exception as e:  # recorded with its traceback; the other steps still run
            entry.update(status="failed", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        report["steps"][name] = entry
        extra = f": {entry.get('message')}" if entry["status"] != "ok" else ""
        print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']} s{extra}", flush=True)

    if "raster" in wanted:
        run("raster", lambda: step_raster(toy, cuda))
    if wanted & {"fps", "train"}:
        fitted = _fitted(work)
    if "fps" in wanted:
        run("fps", lambda: step_fps(toy, device, fitted))
    if "train" in wanted:
        run("train", lambda: step_train(toy, device, fitted))
    if "generate" in wanted:
        for route in ("animatediff", "aniportrait"):
            run(f"generate_{route}", lambda route=route: step_generate(route, toy, device, args.steps))
    if "projection" in wanted:
        run("projection", lambda: step_projection(report["steps"], toy))
    if not cuda:
        report["cuda_parts"] = "skipped: no CUDA (--dry-run or no GPU); gsplat, GPU FPS, GPU training and float16 full-size generation did not run"
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    report["within_8_minutes"] = report["wall_seconds"] <= 480

    from zero1toa.utils.io import write_json_atomic

    name = f"gpu_check-{report['date']}{'-dry-run' if toy else ''}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / name, json.loads(json.dumps(report, default=str)))
    _summary(report)
    print(f"[gpu_check] wrote {out_dir / name} ({report['wall_seconds']} s)")
    return 1 if any(s["status"] == "failed" for s in report["steps"].values()) else 0


def _summary(report: dict) -> None:
    s = report["steps"]
    if s.get("fps", {}).get("result"):
        for r in s["fps"]["result"]["rows"]:
            print(f"  fps {r['num_gaussians']:>7} @ {r['width']:>4}px: animate+render {r['fps_animate_render']:8.1f}  render {r['fps_render']:8.1f}  ({r['backend']})")
    if s.get("train", {}).get("result"):
        for r in s["train"]["result"]["rows"]:
            print(f"  train {r['gaussians']:>7} Gaussians @ {r['resolution']}px: {r['iterations_per_s']:.2f} it/s")
    for route in ("animatediff", "aniportrait"):
        r = s.get(f"generate_{route}", {}).get("result")
        if r:
            mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']} GiB"
            print(f"  generate {route}: {r['frames']} frames @ {r['resolution']}px, {r['steps']} steps: {r['seconds']} s, peak {mem}, {r['parameters'] / 1e9:.2f} B params")
    p = s.get("projection", {}).get("result")
    if p:
        toy = " [toy sizes on the CPU: not a projection]" if p.get("toy") else ""
        for route in ("aniportrait", "animatediff"):
            if route in p:
                print(f"  one avatar at preset=paper with {route}: {p[route]['total_hours']} h (train {p[route]['train_hours']} h + generation {p[route]['generation_hours']} h){toy}")
    if math.isfinite(report.get("wall_seconds", 0)):
        print(f"  wall time {report['wall_seconds']} s (budget 480 s)")


if __name__ == "__main__":
    sys.exit(main())
