"""The browser viewer against the project's renderer, on a real run: PSNR per shot and the page's FPS.

Builds ``zero1toa view``'s page for a finished run, opens it in headless Chromium (SwiftShader:
WebGL2 on the CPU, no GPU), takes screenshots at three cameras x two expressions, renders the
same settings with ``render_avatar`` (same camera intrinsics, white background), and prints the
PSNR of each pair. The frame rate is the page's own ``benchmark()``: pose + project + sort +
splat of the ``talk`` drive, synchronised with the GPU every frame (``readPixels``), for the
run's avatar and for a 20k-Gaussian avatar on the same head (the default preset's initial size).

    .venv/bin/python benchmarks/viewer.py                       # runs/sample (zero1toa run sample preset=smoke)
    .venv/bin/python benchmarks/viewer.py --run runs/other --size 256

Writes benchmarks/results/viewer.json, viewer.md and viewer_sheet.png (rows: shots; columns:
browser, Python, |difference| x 10).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402

CAMERAS = ((0.0, 0.0), (35.0, 10.0), (-60.0, -5.0))  # (yaw, elevation) degrees about the head's centre line
EXPRESSIONS = ("neutral", "smile")


def _fps(page, frames: int) -> dict:
    page.evaluate("window.zero1toaViewer.benchmark(2) && 1")  # warm-up (shader compile, buffers)
    return page.evaluate(f"window.zero1toaViewer.benchmark({frames})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "sample")
    ap.add_argument("--size", type=int, default=512, help="screenshot / render size in pixels (square)")
    ap.add_argument("--frames", type=int, default=20, help="frames timed by the page's benchmark()")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from PIL import Image

    from zero1toa.animate.animate import reference_view, resolve_checkpoint
    from zero1toa.animate.package import build_package
    from zero1toa.avatar.checkpoint import load_avatar
    from zero1toa.avatar.gaussians import InitConfig, init_on_mesh
    from zero1toa.avatar.render import render_avatar
    from zero1toa.head.base import HeadPose
    from zero1toa.progressive.schedules import orbit_target
    from zero1toa.render.camera import orbit_from_reference
    from zero1toa.viewer.browser import find_chromium, open_viewer, psnr
    from zero1toa.viewer.page import build_page, write_view

    if find_chromium() is None:
        print("no Chromium found (Debian package `chromium`, or set ZERO1TOA_CHROMIUM)", file=sys.stderr)
        return 1
    S = args.size
    resolved = resolve_checkpoint(args.run)
    gaussians, head, info = load_avatar(resolved.avatar_dir)
    camera, _ = reference_view(resolved, head, info)
    t0 = time.perf_counter()
    view = write_view(args.run)
    view["build_seconds"] = round(time.perf_counter() - t0, 3)
    html = Path(view["html"])

    shots, rows = [], []
    t0 = time.perf_counter()
    with open_viewer(html, S, S) as page:
        open_s = time.perf_counter() - t0
        target = page.evaluate("window.zero1toaViewer.targetFormat")
        for yaw, elev in CAMERAS:
            for name in EXPRESSIONS:
                e, jaw = head.expression_preset(name, 1.0)
                pose = HeadPose.neutral(1)
                pose.jaw = jaw[None]
                cam = orbit_from_reference(camera, [yaw], [elev], orbit_target(head), S)
                with torch.no_grad():
                    ref = render_avatar(gaussians, head, cam, e[None], pose, background=1.0).rgb[0].permute(1, 2, 0).numpy()
                state = json.dumps({"yaw": yaw, "elev": elev, "expression": e.tolist(), "pose": pose.as_vector()[0].tolist()})
                stats = page.evaluate(f"window.zero1toaViewer.setState({state})")
                shot = page.screenshot(S, S)
                ref8 = (ref.clip(0, 1) * 255).round().astype(np.uint8)
                score = psnr(shot, ref)
                diff = np.abs(shot.astype(np.int16) - ref8.astype(np.int16))
                rows.append({"yaw": yaw, "elevation": elev, "expression": name, "psnr_db": round(score, 2),
                             "max_abs_diff_8bit": int(diff.max()), "pixels_differing": int((diff.max(-1) > 0).sum()),
                             "visible_gaussians": stats["visible"], "screenshot_std": round(float(shot.std()), 1)})  # fmt: skip
                shots.append(np.concatenate([shot, ref8, np.minimum(diff * 10, 255).astype(np.uint8)], 1))
                print(f"yaw {yaw:+5.0f} elev {elev:+4.0f} {name:8s}  PSNR {score:6.2f} dB  max |diff| {diff.max()} / 255")
        fps_run = _fps(page, args.frames)
    print(f"page FPS ({gaussians.num_gaussians} Gaussians, {S} px, SwiftShader CPU WebGL2): {fps_run['fps']:.2f} "
          f"({fps_run['ms_per_frame']:.1f} ms/frame; JS pose {fps_run['pose_ms']:.1f}, project {fps_run['project_ms']:.1f}, sort {fps_run['sort_ms']:.1f} ms)")

    # the default preset's initial avatar size on the same head (untrained colours: speed only)
    big = init_on_mesh(head, InitConfig(num_gaussians=20000), seed=0, face_labels=getattr(head, "face_labels", None), part_names=None)
    with tempfile.TemporaryDirectory() as tmp:
        big_html = Path(tmp) / "big.html"
        big_html.write_text(build_page(build_package(big, head, camera), "20k"), encoding="utf-8")
        with open_viewer(big_html, S, S) as page:
            fps_big = _fps(page, args.frames)
    print(f"page FPS ({big.num_gaussians} Gaussians, {S} px): {fps_big['fps']:.2f} ({fps_big['ms_per_frame']:.1f} ms/frame)")

    args.out.mkdir(parents=True, exist_ok=True)
    sheet = np.concatenate(shots, 0)
    Image.fromarray(sheet).save(args.out / "viewer_sheet.png")
    result = {
        "run": str(args.run), "avatar": str(resolved.avatar_dir), "size_px": S, "gaussians": gaussians.num_gaussians,
        "html_bytes": view["bytes"], "package_bytes": view["package_bytes"], "page_build_seconds": view["build_seconds"],
        "browser_open_seconds": round(open_s, 2), "render_target": target, "shots": rows,
        "psnr_min_db": min(r["psnr_db"] for r in rows), "psnr_mean_db": round(float(np.mean([r["psnr_db"] for r in rows])), 2),
        "fps": {"run_avatar": fps_run, "gaussians_20k": fps_big},
        "machine": {"cpu": platform.processor() or platform.machine(), "note": "headless Chromium, SwiftShader (WebGL2 on the CPU), 2 shared cores; no GPU"},
    }  # fmt: skip
    (args.out / "viewer.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Browser viewer vs the Python renderer", "",
        f"Run `{args.run.name}` ({gaussians.num_gaussians} Gaussians), {S} x {S} px, white background; page "
        f"{view['bytes'] / 1e6:.2f} MB (package {view['package_bytes'] / 1e6:.2f} MB), render target {target}. "
        "Headless Chromium with SwiftShader (WebGL2 on the CPU, 2 shared cores, no GPU).", "",
        "| yaw | elevation | expression | PSNR (dB) | max abs diff (of 255) | pixels differing |", "|---|---|---|---|---|---|",
        *[f"| {r['yaw']:+.0f} | {r['elevation']:+.0f} | {r['expression']} | {r['psnr_db']:.2f} | {r['max_abs_diff_8bit']} | {r['pixels_differing']} |" for r in rows],
        "", "| avatar | Gaussians | FPS | ms / frame | JS pose | JS project | JS sort |", "|---|---|---|---|---|---|---|",
        *[f"| {k} | {v['gaussians']} | {v['fps']:.2f} | {v['ms_per_frame']:.1f} | {v['pose_ms']:.1f} | {v['project_ms']:.1f} | {v['sort_ms']:.1f} |"
          for k, v in (("run", fps_run), ("20k (init size)", fps_big))],
        "", "Contact sheet: `viewer_sheet.png` (rows: the shots above in order; columns: browser, Python, |difference| x 10).", "",
    ]  # fmt: skip
    (args.out / "viewer.md").write_text("\n".join(md))
    print(f"wrote {args.out / 'viewer.json'}, viewer.md, viewer_sheet.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
