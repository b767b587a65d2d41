"""Does the avatar look like the person away from the photo's view? Identity per yaw on three portraits.

Runs the main job (default preset, or the overrides given) on each test portrait, then reads the
evaluation's face-identity sweep (dlib's face-recognition ResNet: distance to the photo, same
person usually below 0.6; a yaw without a detected face is null) and renders a contact sheet of
yaw -180..180 x {neutral, jaw_open, smile, blink} from the final avatar.

Portraits, all public domain, from packages with a clear licence:
- ``sample``: the bundled portrait (scikit-image's ``astronaut``, NASA);
- ``hopper``: Grace Hopper (US Navy photo), from matplotlib's ``sample_data``;
- ``obama``: Barack Obama's official portrait (White House photo), from the ``face_recognition``
  sdist's test images (MIT package), fetched with ``pip download`` into ``.cache/portraits``.

    .venv/bin/python benchmarks/whole_head.py --label after --root runs/whole_head
    .venv/bin/python benchmarks/whole_head.py --label before --root /tmp/before_runs --no-run   # collect only

Results: ``--out`` (default benchmarks/results/whole_head.json, merged by label so a before and
an after run sit side by side) and a Markdown table beside it; contact sheets as PNGs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHEET_YAWS = [-180.0, -135.0, -90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0, 135.0]
SHEET_EXPRESSIONS = ["neutral", "jaw_open", "smile", "blink"]
IDENTITY_YAWS = (0, 30, 60, 90)


def portrait_path(name: str, cache: Path) -> Path:
    """A local file of the named test portrait (see the module docstring)."""
    if name == "sample":
        from zero1toa.sample import write_sample_portrait

        path = cache / "sample.png"
        return path if path.exists() else write_sample_portrait(path)
    if name == "hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if not path.exists():
            raise SystemExit(f"{path} is missing: matplotlib's sample data holds Grace Hopper's portrait")
        return path
    if name == "obama":
        path = cache / "obama.jpg"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "face_recognition==1.3.0", "-d", str(cache), "-q"],
                check=True,
            )
            with tarfile.open(cache / "face_recognition-1.3.0.tar.gz") as tar:
                member = tar.getmember("face_recognition-1.3.0/tests/test_images/obama.jpg")
                data = tar.extractfile(member).read()
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return path
    raise SystemExit(f"unknown portrait {name!r}: sample, hopper or obama")


def run_main_job(image: Path, name: str, root: Path, overrides: list[str]) -> float | None:
    """Seconds of ``zero1toa run`` (None when the run folder was already evaluated)."""
    cli = ROOT / ".venv" / "bin" / "zero1toa"
    cmd = [str(cli) if cli.exists() else "zero1toa", "run", str(image), f"run.name={name}", f"run.root={root}", "run.progress=false", *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def contact_sheet(run_dir: Path, out: Path) -> str | None:
    """Render the sheet from the run's final avatar; None with a note when it cannot be loaded."""
    import numpy as np

    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.evaluate.run import find_avatar_dir, latest_round_folder
    from zero1toa.evaluate.visuals import EvalScene, grid_renders, grid_sheet, save_png
    from zero1toa.runfolder import load_reference

    try:
        avatar_dir = find_avatar_dir(run_dir, latest_round_folder(run_dir))
        gaussians, head, _ = load_avatar(avatar_dir)
        _, ref = load_reference(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        return f"not rendered: {exc}"
    scene = EvalScene(gaussians, head, ref.camera, ref.expression.float(), ref.jaw.float(), ref.target, 256)
    renders = grid_renders(scene, SHEET_YAWS, SHEET_EXPRESSIONS)
    save_png(out, np.asarray(grid_sheet(renders, SHEET_YAWS, SHEET_EXPRESSIONS)))
    return None


def collect(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    per_yaw = metrics.get("details", {}).get("identity", {}).get("per_yaw", {})
    row = {f"identity_distance_{a}": metrics.get(f"identity_distance_{a}") for a in IDENTITY_YAWS}
    row["face_found_at_90"] = all(per_yaw.get(k, {}).get("face_found", False) for k in ("-90", "+90")) if per_yaw else None
    d30, d60 = row["identity_distance_30"], row["identity_distance_60"]
    row["goal_60_within_0.1_of_30"] = (d60 - d30 <= 0.1) if d30 is not None and d60 is not None else None
    for key in ("psnr_reference", "ssim_reference", "resolution", "num_gaussians", "fps_render"):
        row[key] = metrics.get(key)
    row["per_yaw"] = per_yaw
    return row


def markdown(results: dict) -> str:
    labels = sorted(results)
    portraits = sorted({p for lab in labels for p in results[lab]["portraits"]})
    keys = [f"identity_distance_{a}" for a in IDENTITY_YAWS] + ["face_found_at_90", "goal_60_within_0.1_of_30", "psnr_reference", "resolution", "seconds"]
    lines = ["# Identity away from the photo's view (dlib face-recognition distance to the photo; lower is better, < 0.6 usually the same person)", ""]
    for lab in labels:
        meta = results[lab]
        lines.append(f"- **{lab}**: {meta.get('date')}, commit {meta.get('commit')}, overrides {meta.get('overrides') or 'none'}")
    lines += ["", "| portrait | label | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for p in portraits:
        for lab in labels:
            row = results[lab]["portraits"].get(p)
            if row is None:
                continue
            cells = []
            for k in keys:
                v = row.get(k)
                cells.append("null" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
            lines.append(f"| {p} | {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="name of this measurement (e.g. before, after)")
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "whole_head", help="run folders live here (one per portrait)")
    parser.add_argument("--portraits", default="sample,obama,hopper", help="comma-separated: sample, obama, hopper")
    parser.add_argument("--no-run", action="store_true", help="only collect from run folders that already exist")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "whole_head.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the main job")
    args = parser.parse_args(argv)
    cache = ROOT / ".cache" / "portraits"
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # A label measured in several invocations (one portrait at a time) keeps its other portraits.
    earlier = results.get(args.label, {}).get("portraits", {})
    entry = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "overrides": args.overrides, "portraits": dict(earlier)}
    for name in [p.strip() for p in args.portraits.split(",") if p.strip()]:
        run_dir = args.root / name
        seconds = None
        if not args.no_run:
            seconds = run_main_job(portrait_path(name, cache), name, args.root, args.overrides)
        if not (run_dir / "evaluate" / "metrics.json").exists():
            print(f"{name}: no evaluation in {run_dir}", file=sys.stderr)
            continue
        row = collect(run_dir)
        row["seconds"] = round(seconds, 1) if seconds is not None else None
        sheet = args.out.parent / f"whole_head_{args.label}_{name}.png"
        row["contact_sheet"] = contact_sheet(run_dir, sheet) or sheet.name
        entry["portraits"][name] = row
        print(name, {k: row[k] for k in row if k.startswith("identity") or k in ("face_found_at_90", "seconds")}, flush=True)
    results[args.label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(args.out)
    md = args.out.with_suffix(".md")
    md.write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
