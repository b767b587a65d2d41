"""What SymGEN's dataset updates and the progressive order do here: the default run four ways.

    .venv/bin/python benchmarks/ablation.py [--preset default] [--root runs/ablation] [overrides...]

Variants (same portrait, preprocessing, seeds and iteration budget):
  full            SymGEN refreshes every 30 iterations + progressive order (the method)
  no-updates      symgen.update_dataset=false: each clip generated once, never refreshed
  no-progressive  stages.progressive=false: every round draws all views and expressions
  neither         both switches off
Prints the evaluation metrics side by side (reference fidelity, face detection over the view
sweep incl. +-45 deg, mouth opening, expression landmark error, temporal jitter) and timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

VARIANTS = {
    "full": [],
    "no-updates": ["symgen.update_dataset=false"],
    "no-progressive": ["stages.progressive=false"],
    "neither": ["symgen.update_dataset=false", "stages.progressive=false"],
}
ROWS = [
    ("psnr_reference", "ref. PSNR in mask (dB)", "{:.2f}"),
    ("ssim_reference", "ref. SSIM in mask", "{:.3f}"),
    ("face_detection_rate", "face found over yaw sweep", "{:.2f}"),
    ("face_at_45", "face found at +-45 deg", "{}"),
    ("mouth_gain", "jaw_open lip-gap gain", "{:.3f}"),
    ("landmark_error", "expr. landmark error (IOD)", "{:.4f}"),
    ("temporal_jitter_expression", "jitter, expression ramp", "{:.3f}"),
    ("final_l1", "final training L1", "{:.4f}"),
    ("seconds", "wall time (s)", "{:.0f}"),
]


def run_variant(name: str, overrides: list[str], root: Path, shared: Path | None) -> dict:
    import torch

    from flows.config import compose
    from zero1toa.nodes import node_evaluate, node_fit_head, node_preprocess, node_round, plan_rounds
    from zero1toa.sample import write_sample_portrait

    cfg = compose(overrides + [f"run.root={root}", f"run.name={name}", "run.progress=false"])
    run = root / name
    if run.exists():
        shutil.rmtree(run)
    t0 = time.perf_counter()
    if shared is None:
        img = write_sample_portrait(root / "sample.png")
        node_preprocess(img, run, cfg)
        node_fit_head(run, cfg)
    else:  # identical inputs for every variant
        for part in ("preprocess", "head"):
            shutil.copytree(shared / part, run / part)
    last = {}
    for plan in plan_rounds(cfg):
        torch.manual_seed(cfg.run.seed)
        last = node_round(run, cfg, plan.name)
    node_evaluate(run, cfg)
    seconds = time.perf_counter() - t0
    m = json.loads((run / "evaluate" / "metrics.json").read_text())
    det = m["details"]["face_detection"]
    gap_r = m["details"]["mouth_opening"]["render_lip_gap"]
    return {
        **{k: m.get(k) for k, _, _ in ROWS if k in m},
        "face_at_45": f"{det.get('-45')}/{det.get('+45')}",
        "mouth_gain": gap_r["jaw_open"] - gap_r["neutral"],
        "final_l1": last["metrics"]["final_l1"],
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--root", type=Path, default=Path("runs/ablation"))
    p.add_argument("--only", nargs="*", choices=list(VARIANTS))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    results, shared = {}, None
    for name, extra in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        print(f"[ablation] running {name} ({' '.join(extra) or 'the method'})", flush=True)
        results[name] = run_variant(name, [f"preset={args.preset}", *args.overrides, *extra], args.root.resolve(), shared)
        shared = shared or (args.root.resolve() / name)
    names = list(results)
    print(f"\n{'metric':30s}" + "".join(f"{n:>16s}" for n in names))
    for key, label, fmt in ROWS:
        vals = []
        for n in names:
            v = results[n].get(key)
            vals.append("n/a" if v is None else fmt.format(v))
        print(f"{label:30s}" + "".join(f"{v:>16s}" for v in vals))
    (args.root / "ablation.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
