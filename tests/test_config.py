"""Typed config: Hydra composition, validation that names keys, node subtrees, conf/base.yaml in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.config import CONF_DIR, compose
from zero1toa.config import Config, ConfigError, from_dict, node_params, to_dict


def test_base_yaml_mirrors_the_dataclass_defaults():
    base = yaml.safe_load((CONF_DIR / "base.yaml").read_text())
    assert base == yaml.safe_load(yaml.safe_dump(to_dict(Config()))), "conf/base.yaml is stale: run scripts/write_base_conf.py"


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_presets_compose(preset):
    overrides = [f"preset={preset}"]
    if preset == "paper":
        cfg = compose(overrides)  # the paper's generator and loss, whose files the preflight checks
        assert cfg.generator.kind == "animatediff" and cfg.train.loss.lpips_required
        assert cfg.avatar.init.sh_degree == 3 and cfg.generator.resolution == 512
    else:
        cfg = compose(overrides)
        assert cfg.generator.kind == "reprojection"
    if preset == "smoke":
        assert cfg.generator.resolution == 64 and cfg.stages.spatial.rounds == 1


def test_bad_keys_and_values_are_named():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.optim\.mean'.*did you mean 'train\.optim\.means'"):
        from_dict({"train": {"optim": {"mean": 1.0}}})
    with pytest.raises(ConfigError, match=r"train\.optim\.means must be a number"):
        from_dict({"train": {"optim": {"means": "fast"}}})
    with pytest.raises(ConfigError, match=r"generator\.kind"):
        from_dict({"generator": {"kind": "magic"}})
    with pytest.raises(ConfigError, match=r"train\.optim\.lrr"):
        compose(["train.optim.lrr=3"])


def test_each_node_reads_only_its_subtree():
    a = compose(["preset=smoke"])
    b = compose(["preset=smoke", "evaluate.caption=a portrait"])
    assert node_params(a, "evaluate") != node_params(b, "evaluate")
    for node in ("preprocess", "fit_head", "round", "export"):
        assert node_params(a, node) == node_params(b, node)
    c = compose(["preset=smoke", "stages.temporal.magnitude_end=1.5"])
    assert node_params(a, "round") != node_params(c, "round")
    assert node_params(a, "preprocess") == node_params(c, "preprocess")


def test_paper_preset_without_weights_fails_at_once_listing_everything(tmp_path):
    """`zero1toa run sample preset=paper` on a machine without weights: one message, every piece,
    before any node runs."""
    import subprocess
    import sys
    import time

    from zero1toa.preflight import missing_assets

    cfg = compose(["preset=paper"])
    missing = missing_assets(cfg)
    assert any("generator.model_dir is not set" in m for m in missing)
    assert any("train.loss.lpips_weights" in m for m in missing)
    partial = tmp_path / "models"
    (partial / "unet").mkdir(parents=True)
    (partial / "unet" / "config.json").write_text("{}")
    lines = missing_assets(compose(["preset=paper", f"generator.model_dir={partial}"]))
    lacks = [m for m in lines if "lacks" in m]
    assert any("unet/diffusion_pytorch_model" in m for m in lacks) and any("motion_adapter/" in m for m in lacks) and any("scheduler/" in m for m in lacks)

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "sample", "preset=paper", f"run.root={tmp_path / 'runs'}"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr
    assert "generator.model_dir is not set" in proc.stderr and "lpips_weights" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran
    assert seconds < 15  # measured ~4 s, mostly interpreter and Hydra start-up
