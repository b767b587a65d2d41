"""benchmarks/truth.py end to end at CI size: the rows, their keys, the pictures, and evaluate's
held-out, identity and consistency metrics on a run whose photo came from the truth subject."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ROW_KEYS = {
    "variant",
    "inconsistency",
    "psnr_heldout_views",
    "psnr_heldout_unseen",
    "psnr_heldout_expressions",
    "ssim_heldout_views",
    "sharpness_ratio",
    "identity_distance_60",
    "dataset_consistency_final",
    "seconds",
}


def test_truth_benchmark_writes_rows_curves_and_sheets(tmp_path):
    out_json = tmp_path / "out.json"
    res = tmp_path / "results"
    cmd = [
        sys.executable, str(PROJECT / "benchmarks" / "truth.py"), "--smoke", "--jobs", "1",
        "--rows", "full@medium", "static@medium", "sds@0", "reprojection@none",
        "--out", str(tmp_path / "bench"), "--results", str(res), "--json", str(out_json),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out_json.read_text())
    rows = doc["rows"]
    assert [(r["variant"], r["inconsistency"]) for r in rows] == [("full", "medium"), ("static", "medium"), ("sds", "0"), ("reprojection", "none")]
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        for key in ("psnr_heldout_views", "psnr_heldout_unseen", "ssim_heldout_views", "sharpness_ratio"):
            assert isinstance(r[key], float) and 0 < r[key] < 100, (r["variant"], key, r[key])
        assert r["curves"] and all(c["psnr_heldout_curve"] > 0 for c in r["curves"])
    by = {r["variant"]: r for r in rows}
    # SDS keeps no dataset: its consistency is null, with the reason
    assert by["sds"]["dataset_consistency_final"] is None and "dataset" in by["sds"]["reasons"]["dataset_consistency_final"]
    assert by["full"]["dataset_consistency_final"] is not None
    # the static dataset never refreshes a clip: nothing regenerated between versions
    assert all(c["refresh_change"] is None for c in by["static"]["curves"])
    for name in ("truth_smoke.json", "truth_smoke.md", "truth_smoke_curves.png", "truth_smoke_curves.csv", "truth_smoke_sheet.png", "simulator_levels.png"):
        assert (res / name).stat().st_size > 0, name
    assert "| full | medium |" in (res / "truth_smoke.md").read_text()

    # evaluate of one of those runs: held-out and identity details, and the comparison sheet
    run = tmp_path / "bench" / "full__medium"
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    per_view = metrics["details"]["heldout"]["views"]["per_view"]
    assert {v["yaw"] for v in per_view} == {-180.0, -90.0, 0.0, 90.0, 180.0}
    assert set(metrics["details"]["identity"]["per_yaw"]) == {"-90", "-60", "-30", "+0", "+30", "+60", "+90"}
    assert (run / "evaluate" / "heldout.png").exists()
    man = json.loads((run / "evaluate" / "manifest.json").read_text())
    assert "truth_subject" in man["inputs"]
