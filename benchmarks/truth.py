"""The ground-truth benchmark: the method on views and expressions the photo never showed.

    .venv/bin/python benchmarks/truth.py --quick --json out.json      # reduced grid, < 15 min on 2 cores
    .venv/bin/python benchmarks/truth.py --json out.json              # the full grid
    .venv/bin/python benchmarks/truth.py --build-only --out DIR       # just the truth subject
    .venv/bin/python benchmarks/truth.py --rows full@medium static@medium [overrides...]

A truth subject (zero1toa/bench/truth.py: the built-in rig fitted to the bundled portrait, the
photo where the photo saw it, a seeded procedural texture elsewhere) renders the photo the
pipeline is given; ``generator=simulated`` (zero1toa/bench/simulated.py, a test instrument)
corrupts the truth the way portrait video diffusion fails, at inconsistency 0 / low / medium /
high. Each row runs the whole DAG on that photo and evaluates the avatar against the truth on
held-out views (yaw -180..180 x elevation -20/0/+20), unseen pixels, held-out expressions,
sharpness, identity (dlib) and dataset consistency.

Variants: ``full`` (the method), ``static`` (``symgen.update_dataset=false``: every clip generated
once at full strength, never refreshed), ``no_progressive`` (``stages.progressive=false``), ``sds``
(``train.mode=sds``: a fresh target from the current render at a random strength every step,
used once), and ``reprojection`` (the embedded generator instead of the simulated one).

Writes (``--results``, default benchmarks/results/): ``truth_<grid>.json`` (also ``--json PATH``),
``truth_<grid>.md`` (the table), ``truth_<grid>_curves.png/.csv`` (per round: held-out PSNR on a
reduced view set and dataset consistency), ``truth_<grid>_sheet.png`` (truth vs each row at yaw
0/60/120/180) and ``simulator_levels.png`` (one requested frame at each level, three calls each).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

#: The benchmark's own scale: every row runs the whole DAG at these settings (5 rounds of 150
#: iterations at 128 px, SymGEN's paper cadence of a refresh every 30 iterations).
BENCH_OVERRIDES = [
    "preset=default",
    "generator.resolution=128",
    "avatar.init.num_gaussians=10000",
    "train.densify.max_gaussians=30000",
    "stages.spatial_iterations=150",
    "stages.temporal_iterations=150",
    "evaluate.resolution=128",
    "evaluate.identity_size=384",
    "evaluate.video_frames=12",
    "evaluate.fps_repeats=2",
    "evaluate.fps_warmup=1",
    "evaluate.fps_resolution=256",
    "evaluate.expression_frames=8",
    "evaluate.stability_frames=8",
]
#: ``--smoke``: CI-sized wiring check of the whole benchmark (numbers meaningless).
SMOKE_OVERRIDES = [
    "preset=smoke",
    "evaluate.identity_size=128",
    "evaluate.video_frames=4",
    "evaluate.expression_frames=4",
    "evaluate.stability_frames=4",
    "evaluate.heldout_yaw_step_deg=90",
    "evaluate.heldout_elevations_deg=[0.0]",
]
VARIANTS = {
    "full": [],
    "static": ["symgen.update_dataset=false"],
    "no_progressive": ["stages.progressive=false"],
    "sds": ["train.mode=sds"],
    "reprojection": ["generator=reprojection"],
}
LEVELS = ("0", "low", "medium", "high")
QUICK_ROWS = ["full@0", "static@0", "sds@0", "full@medium", "static@medium", "no_progressive@medium", "sds@medium", "reprojection@none"]
FULL_ROWS = [f"{v}@{lv}" for lv in LEVELS for v in ("full", "static", "no_progressive", "sds")] + ["reprojection@none"]
KEYS = [
    "psnr_heldout_views",
    "psnr_heldout_front",
    "psnr_heldout_seen",
    "psnr_heldout_unseen",
    "psnr_heldout_expressions",
    "ssim_heldout_views",
    "sharpness_ratio",
    "identity_distance_60",
    "dataset_consistency_final",
    "psnr_reference",
]
SHORT = {"no_progressive": "no_prog", "reprojection": "reproj", "medium": "med", "none": "-"}  # sheet row labels
CURVE_YAWS = [-135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0, 180.0]
SHEET_YAWS = [0.0, 60.0, 120.0, 180.0]


def build_subject(out: Path, seed: int, resolution: int = 512) -> Path:
    from zero1toa.bench.truth import TRUTH_VERSION, build_truth_subject
    from zero1toa.utils.io import read_json

    meta = out / "subject.json"
    if meta.exists():
        m = read_json(meta)
        if m.get("seed") == seed and m.get("version") == TRUTH_VERSION and m.get("resolution") == resolution:
            return out
    t0 = time.perf_counter()
    build_truth_subject(out, seed=seed, resolution=resolution)
    print(f"[truth] built the truth subject in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out


SCALE = {"bench": BENCH_OVERRIDES}


def row_overrides(row: str, subject: Path, root: Path, extra: list[str]) -> tuple[str, str, list[str]]:
    variant, _, level = row.partition("@")
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r} in row {row!r}; variants: {', '.join(VARIANTS)}")
    ov = SCALE["bench"] + list(VARIANTS[variant]) + [f"evaluate.truth_dir={subject}", f"run.root={root}", f"run.name={variant}__{level}", "run.progress=false"]
    if variant != "reprojection":
        if level not in LEVELS:
            raise SystemExit(f"unknown inconsistency {level!r} in row {row!r}; levels: {', '.join(LEVELS)}")
        ov += ["generator=simulated", f"generator.truth_dir={subject}", f"generator.inconsistency={level}"]
    else:
        level = "none"
    return variant, level, ov + list(extra)


def shared_fit(subject: Path, root: Path, extra: list[str]) -> Path:
    """Preprocess + fit the truth photo once; every row starts from a copy (identical inputs)."""
    from flows.config import compose
    from zero1toa.nodes import node_fit_head, node_preprocess
    from zero1toa.utils.manifest import read_manifest

    shared = root / "_fit"
    cfg = compose(SCALE["bench"] + list(extra) + [f"run.root={root}", "run.name=_fit", "run.progress=false"])
    if not (read_manifest(shared / "preprocess") and read_manifest(shared / "head")):
        node_preprocess(subject / "reference.png", shared, cfg)
        node_fit_head(shared, cfg)
    return shared


def run_row(row: str, subject: Path, root: Path, shared: Path, extra: list[str], reevaluate: bool = False) -> dict:
    from flows.config import compose
    from zero1toa.nodes import node_evaluate, run_all

    variant, level, ov = row_overrides(row, subject, root, extra)
    cfg = compose(ov)
    run = root / f"{variant}__{level}"
    if reevaluate:  # the finished run's avatar, measured again with the current metrics
        if not (run / "evaluate" / "manifest.json").exists():
            raise SystemExit(f"--reevaluate: {run} holds no finished run")
        seconds = json.loads((run / "evaluate" / "row.json").read_text())["seconds"] if (run / "evaluate" / "row.json").exists() else None
        node_evaluate(run, cfg)
        (run / "evaluate" / "row.json").write_text(json.dumps({"seconds": seconds}))
        return _row_result(run, subject, variant, level, seconds)
    if run.exists():
        shutil.rmtree(run)
    for part in ("preprocess", "head"):
        shutil.copytree(shared / part, run / part)
    t0 = time.perf_counter()
    run_all(subject / "reference.png", cfg)
    seconds = round(time.perf_counter() - t0, 1)
    (run / "evaluate" / "row.json").write_text(json.dumps({"seconds": seconds}))
    return _row_result(run, subject, variant, level, seconds)


def _row_result(run: Path, subject: Path, variant: str, level: str, seconds: float | None) -> dict:
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    out = {"variant": variant, "inconsistency": level, **{k: metrics.get(k) for k in KEYS}, "seconds": seconds}
    out["identity_found_fraction"] = metrics.get("identity_found_fraction")
    out["reasons"] = {k: metrics["reasons"][k] for k in KEYS if metrics.get(k) is None and k in metrics.get("reasons", {})}
    out["curves"] = round_curves(run, subject, metrics)
    out["run"] = str(run)
    return out


def _worker_init(threads: int, scale: list[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    SCALE["bench"] = scale


def run_rows(rows: list[str], subject: Path, root: Path, shared: Path, extra: list[str], jobs: int, reevaluate: bool = False) -> list[dict]:
    """Every row, ``jobs`` at a time (separate processes, the cores shared between them)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp
    import os

    t0 = time.perf_counter()
    results: dict[str, dict] = {}

    def report(r: str, res: dict) -> None:
        results[r] = res
        print(f"[truth] {len(results)}/{len(rows)} {r}: held-out views {_fmt(res['psnr_heldout_views'], '{:.2f}')} dB, unseen {_fmt(res['psnr_heldout_unseen'], '{:.2f}')} dB, sharpness {_fmt(res['sharpness_ratio'])} ({_fmt(res['seconds'], '{:.0f}')} s; {time.perf_counter() - t0:.0f} s so far)", flush=True)

    if jobs <= 1:
        for r in rows:
            report(r, run_row(r, subject, root, shared, extra, reevaluate))
    else:
        threads = max(1, (os.cpu_count() or 2) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(threads, SCALE["bench"])) as pool:
            futures = {pool.submit(run_row, r, subject, root, shared, extra, reevaluate): r for r in rows}
            for fut in as_completed(futures):
                report(futures[fut], fut.result())
    return [results[r] for r in rows]


def round_curves(run: Path, subject: Path, metrics: dict) -> list[dict]:
    """Per round: held-out PSNR (views at CURVE_YAWS, elevation 0) and dataset consistency."""
    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.bench.heldout import AvatarVsTruth, HeldoutSpec, pooled_psnr, silhouette_union
    from zero1toa.bench.truth import TruthSubject
    from zero1toa.evaluate.run import round_manifests
    from zero1toa.runfolder import load_reference

    import numpy as np
    import torch

    truth = TruthSubject.load(subject)
    _, ref = load_reference(run)
    consistency = {r["round"]: r for r in metrics["details"].get("dataset_consistency", {}).get("per_round", [])}
    rows = []
    spec = HeldoutSpec(resolution=96)
    for man in round_manifests(run):
        g, head, _ = load_avatar(run / man["folder"] / "avatar")
        vs = AvatarVsTruth(g, head, ref.expression, ref.jaw, truth)
        r = vs.render(np.asarray(CURVE_YAWS), np.zeros(len(CURVE_YAWS)), spec.resolution, torch.zeros(head.expression_dim), torch.zeros(3))
        c = consistency.get(man["folder"], {})
        rows.append({"round": man["node"], "psnr_heldout_curve": pooled_psnr(r["avatar"], r["truth"], silhouette_union(r)), "dataset_consistency": c.get("views"), "refresh_change": c.get("refresh")})
    return rows


def _fmt(v, spec: str = "{:.3f}") -> str:
    if v is None:
        return "null"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return spec.format(v) if isinstance(v, (int, float)) else str(v)


def table(rows: list[dict]) -> str:
    cols = ["variant", "inconsistency"] + KEYS + ["seconds"]
    short = {
        "psnr_heldout_views": "PSNR views",
        "psnr_heldout_front": "PSNR |yaw|<=90",
        "psnr_heldout_seen": "PSNR seen",
        "psnr_heldout_unseen": "PSNR unseen",
        "psnr_heldout_expressions": "PSNR expr.",
        "ssim_heldout_views": "SSIM views",
        "sharpness_ratio": "sharpness",
        "identity_distance_60": "id. dist. 60",
        "dataset_consistency_final": "dataset disagr.",
        "psnr_reference": "PSNR ref.",
    }
    head = "| " + " | ".join(short.get(c, c) for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [r["variant"], r["inconsistency"]] + [_fmt(r[k], "{:.2f}" if k.startswith("psnr") else "{:.3f}") for k in KEYS] + [_fmt(r["seconds"], "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps(rows: list[dict]) -> list[str]:
    """The comparisons the paper predicts, as measured."""
    by = {(r["variant"], r["inconsistency"]): r for r in rows}
    out = []
    for level in LEVELS:
        f = by.get(("full", level))
        if not f:
            continue
        for other in ("static", "sds", "no_progressive"):
            o = by.get((other, level))
            if o and f["psnr_heldout_views"] is not None and o["psnr_heldout_views"] is not None:
                out.append(f"inconsistency {level}: full - {other} = {f['psnr_heldout_views'] - o['psnr_heldout_views']:+.2f} dB held-out views, {_diff(f, o, 'psnr_heldout_front')} dB at |yaw| <= 90, {_diff(f, o, 'psnr_heldout_unseen')} dB unseen, sharpness {_fmt(f['sharpness_ratio'])} vs {_fmt(o['sharpness_ratio'])}")
    oracle = by.get(("full", "0"))
    med = by.get(("full", "medium"))
    if oracle and med:
        out.append(f"full at medium vs full at 0 (the oracle): {med['psnr_heldout_views'] - oracle['psnr_heldout_views']:+.2f} dB held-out views")
    return out


def _diff(a: dict, b: dict, key: str) -> str:
    return "null" if a.get(key) is None or b.get(key) is None else f"{a[key] - b[key]:+.2f}"


def write_curves(rows: list[dict], png: Path, csv_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "inconsistency", "round", "psnr_heldout_curve", "dataset_consistency", "refresh_change"])
        for r in rows:
            for c in r["curves"]:
                w.writerow([r["variant"], r["inconsistency"], c["round"], c["psnr_heldout_curve"], c["dataset_consistency"], c["refresh_change"]])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, r in enumerate(rows):
        label, colour = f"{r['variant']}@{r['inconsistency']}", f"C{i % 10}"  # one colour per row in both panels
        style = "--" if r["inconsistency"] in ("0", "none") else "-"
        xs = [c["round"] for c in r["curves"]]
        axes[0].plot(xs, [c["psnr_heldout_curve"] for c in r["curves"]], style, marker="o", color=colour, label=label)
        ys = [c["dataset_consistency"] for c in r["curves"]]
        if any(y is not None for y in ys):
            axes[1].plot(xs, [math.nan if y is None else y for y in ys], style, marker="o", color=colour, label=label)
    axes[0].set_title("held-out PSNR per round (8 yaws, 96 px)")
    axes[0].set_ylabel("dB")
    axes[1].set_title("dataset disagreement across clips (lower = consistent)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_sheet(rows: list[dict], subject: Path, png: Path, resolution: int = 160) -> None:
    import numpy as np
    import torch

    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.bench.heldout import AvatarVsTruth
    from zero1toa.bench.truth import TruthSubject
    from zero1toa.evaluate.run import latest_round_folder
    from zero1toa.runfolder import load_reference
    from zero1toa.render.video import contact_sheet, to_uint8_frames, write_png

    truth = TruthSubject.load(subject)
    yaws = np.asarray(SHEET_YAWS)
    grid, labels = [], []
    for r in rows:
        run = Path(r["run"])
        g, head, _ = load_avatar(run / latest_round_folder(run) / "avatar")
        _, ref = load_reference(run)
        vs = AvatarVsTruth(g, head, ref.expression, ref.jaw, truth)
        out = vs.render(yaws, np.zeros(len(yaws)), resolution, torch.zeros(head.expression_dim), torch.zeros(3))
        if not grid:
            grid.append(list(to_uint8_frames(out["truth"])))
            labels.append("truth")
        grid.append(list(to_uint8_frames(out["avatar"])))
        labels.append(f"{SHORT.get(r['variant'], r['variant'])}@{SHORT.get(r['inconsistency'], r['inconsistency'])}")
    write_png(png, contact_sheet(grid, labels, [f"yaw {y:+.0f}" for y in SHEET_YAWS]))


def write_levels(subject: Path, shared: Path, png: Path, resolution: int = 160) -> None:
    """One requested frame (yaw 60, smile) at each inconsistency level, three calls each."""
    import numpy as np
    import torch

    from zero1toa.bench.simulated import LEVELS as LV
    from zero1toa.bench.simulated import SimulatedGenerator
    from zero1toa.bench.truth import TruthSubject
    from zero1toa.generate.base import GenerationRequest
    from zero1toa.head.base import HeadPose
    from zero1toa.runfolder import load_reference
    from zero1toa.progressive.schedules import orbit_from_reference
    from zero1toa.render.video import contact_sheet, to_uint8_frames, write_png

    truth = TruthSubject.load(subject)
    head, ref = load_reference(shared)
    cams = orbit_from_reference(ref.camera, np.array([60.0]), np.array([5.0]), ref.target, resolution)
    e, j = head.expression_preset("smile", 0.8)
    pose = HeadPose.neutral(1)
    pose.jaw = (ref.jaw + j)[None]
    grid, labels = [], []
    for level in ("0", "low", "medium", "high"):
        gen = SimulatedGenerator(truth, head, ref.expression, ref.jaw, level, resolution=resolution)
        frames = []
        for seed in (1, 2, 3):
            req = GenerationRequest(ref.image, torch.zeros(1, 3, resolution, resolution), seed=seed, cameras=cams, expressions=(ref.expression + e)[None], poses=pose)
            frames.append(to_uint8_frames(gen.generate(req).frames)[0])
        grid.append(frames)
        labels.append(f"{level} (x{LV[level]:g})")
    write_png(png, contact_sheet(grid, labels, ["call 1", "call 2", "call 3"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"the reduced grid ({', '.join(QUICK_ROWS)})")
    p.add_argument("--rows", nargs="+", default=None, help="explicit rows variant@level (variants: %s; levels: %s)" % (", ".join(VARIANTS), ", ".join(LEVELS)))
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "truth_bench", help="benchmark folder: the truth subject and one run folder per row")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where the table, curves and pictures go")
    p.add_argument("--seed", type=int, default=0, help="truth subject seed")
    p.add_argument("--jobs", type=int, default=2, help="rows run at the same time, each in its own process (default 2: one per core)")
    p.add_argument("--build-only", action="store_true", help="build the truth subject (into --out) and stop")
    p.add_argument("--redraw", action="store_true", help="redraw the curves and the sheet from the grid's results JSON and run folders (no runs)")
    p.add_argument("--reevaluate", action="store_true", help="measure the finished runs in --out again with the current metrics (no training)")
    p.add_argument("--smoke", action="store_true", help="CI-sized wiring check: smoke preset, truth at 256 px (the numbers mean nothing)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row (e.g. symgen.clips_per_refresh=2)")
    args = p.parse_args(argv)

    resolution = 256 if args.smoke else 512
    if args.smoke:
        SCALE["bench"] = SMOKE_OVERRIDES
    if args.build_only:
        build_subject(args.out, args.seed, resolution)
        print(f"[truth] subject: {args.out} (reference photo {args.out / 'reference.png'})")
        return 0
    subject = build_subject(args.out / "subject", args.seed, resolution)
    rows_wanted = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    grid = "smoke" if args.smoke else ("custom" if args.rows else ("quick" if args.quick else "full"))
    for r in rows_wanted:
        row_overrides(r, subject, args.out, [])  # fail before any work on a bad row
    stem = f"truth_{grid}"
    if args.redraw:
        doc = json.loads((args.results / f"{stem}.json").read_text())
        rows = [{**r, "run": str(args.out / f"{r['variant']}__{r['inconsistency']}")} for r in doc["rows"]]
        write_curves(rows, args.results / f"{stem}_curves.png", args.results / f"{stem}_curves.csv")
        write_sheet(rows, subject, args.results / f"{stem}_sheet.png")
        print(f"[truth] redrew {stem}_curves.png and {stem}_sheet.png in {args.results}")
        return 0
    t_all = time.perf_counter()
    shared = shared_fit(subject, args.out, args.overrides)
    results = run_rows(rows_wanted, subject, args.out, shared, args.overrides, args.jobs, args.reevaluate)
    args.results.mkdir(parents=True, exist_ok=True)
    doc = {
        "grid": grid,
        "rows": [{k: v for k, v in r.items() if k not in ("run",)} for r in results],
        "settings": {"bench_overrides": SCALE["bench"], "extra_overrides": args.overrides, "truth_seed": args.seed},
        "seconds_total": round(time.perf_counter() - t_all, 1),
        "reevaluated": args.reevaluate,
        "comparisons": gaps(results),
    }
    text = json.dumps(doc, indent=2)
    (args.results / f"{stem}.json").write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    write_curves(results, args.results / f"{stem}_curves.png", args.results / f"{stem}_curves.csv")
    write_sheet(results, subject, args.results / f"{stem}_sheet.png")
    write_levels(subject, shared, args.results / "simulator_levels.png")
    md = [f"# Ground-truth benchmark ({grid} grid)", "", table(results), "", *[f"- {g}" for g in doc["comparisons"]], "", f"Total {doc['seconds_total']:.0f} s."]
    (args.results / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
