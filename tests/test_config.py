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
    assert seconds < 60  # before any node (a node alone takes minutes at this preset); ~4 s unloaded, interpreter and Hydra start-up


def test_misspelled_override_names_the_key_its_neighbours_and_a_close_match():
    """Hydra's "Could not override ... use +key" becomes the project's unknown-key message."""
    with pytest.raises(ConfigError) as info:
        compose(["train.optim.lrr=1"])
    msg = str(info.value)
    assert "unknown key 'train.optim.lrr'" in msg and "Could not override" not in msg
    assert "valid keys of train.optim: means, means_final, opacities, quats, scales, sh0, shN_factor" in msg
    with pytest.raises(ConfigError, match=r"unknown key 'train\.optim\.mean' \(did you mean 'train\.optim\.means'\?\)"):
        compose(["preset=smoke", "train.optim.mean=1e-3"])
    # the first segment that does not exist is the one named, with the top-level keys and groups
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\); valid top-level keys: .*generator"):
        compose(["trian.optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'generatr' \(did you mean 'generator'\?\)"):
        compose(["generatr=tiny"])
    with pytest.raises(ConfigError, match=r"'train\.optim\.means' is a single setting"):
        compose(["train.optim.means.x=1"])
    with pytest.raises(ConfigError, match=r"unknown generator 'tinny' \(did you mean 'tiny'\?\); options: .*reprojection"):
        compose(["generator=tinny"])


@pytest.mark.parametrize("command", ["run sample", "schedule", "params", "evaluate runs/none", "generate sample --out /tmp/x"])
def test_every_command_prints_the_unknown_key_message(command, capsys, tmp_path, monkeypatch):
    """The CLI's one-line user error, for each command that takes overrides (no traceback, exit 1)."""
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    argv = command.split() + ["train.optim.lrr=1"]
    if command.startswith("evaluate"):
        (tmp_path / "runs" / "none").mkdir(parents=True)
        argv = ["evaluate", str(tmp_path / "runs" / "none"), "train.optim.lrr=1"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "unknown key 'train.optim.lrr'" in err and "valid keys of train.optim" in err, err
    assert "Could not override" not in err and "Traceback" not in err
