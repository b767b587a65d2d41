"""Typed config: Hydra composition, validation that names keys, node subtrees, conf/base.yaml in sync."""

from __future__ import annotations

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
        with pytest.raises(ConfigError, match="generator.model_dir"):
            compose(overrides + ["generator=animatediff"])
        cfg = compose(overrides + ["generator=animatediff", "generator.model_dir=/models/animatediff"])
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
