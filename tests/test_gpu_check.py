"""benchmarks/gpu_check.py: the projection's arithmetic, and (slow) the whole --dry-run on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_projection_adds_training_and_every_generation_of_the_paper_schedule():
    import gpu_check

    steps = {
        "train": {"result": {"rows": [{"iterations_per_s": 8.0}, {"iterations_per_s": 12.0}]}},  # mean 10 it/s
        "generate_aniportrait": {"result": {"seconds": 100.0, "steps": 25}},  # 4 s per step of a 16-frame clip
    }
    p = gpu_check.step_projection(steps, toy=False)
    assert p["iterations"] == 9000 and p["new_clips"] == 40  # preset=paper: 9 rounds x 1000, 5 x 4 + 4 x 5 clips
    assert p["denoise_steps_total"] > 40 * 25  # new clips at full strength plus every refresh at its round's
    train_h, gen_h = 9000 / 10 / 3600, p["denoise_steps_total"] * 4 / 3600
    assert p["aniportrait"] == {"train_hours": round(train_h, 3), "generation_hours": round(gen_h, 3), "total_hours": round(train_h + gen_h, 3), "meets_goal": train_h + gen_h <= 1.0}
    assert "animatediff" not in p  # not measured: not projected
    with pytest.raises(gpu_check.Skip):
        gpu_check.step_projection({}, toy=False)


@pytest.mark.slow  # ~30 s on 2 cores (preprocessing, fitting, toy training and both toy generators)
def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (result,) = tmp_path.glob("gpu_check-*-dry-run.json")
    report = json.loads(result.read_text())
    assert report["dry_run"] and set(report["steps"]) == {"raster", "fps", "train", "generate_animatediff", "generate_aniportrait", "projection"}
    assert all(s["status"] == "ok" for s in report["steps"].values())
    assert "skipped: CUDA" in report["steps"]["raster"]["result"]["scenes"]["rgb"]["gsplat"]
    assert report["cuda_parts"].startswith("skipped")
    assert not list((ROOT / "benchmarks" / "results").glob("gpu_check-*-dry-run.json"))
