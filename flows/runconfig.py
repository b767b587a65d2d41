"""The settings a run folder was made with, so later commands on it keep them.

``zero1toa run`` and ``zero1toa node`` record the Hydra overrides and the resolved configuration
in ``<run>/run_config.json``. ``zero1toa evaluate RUN`` (and other commands that take a run
folder) start from those settings, with the user's new overrides on top: evaluating a smoke run
without repeating ``preset=smoke`` evaluates it with the smoke settings, not the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zero1toa.config import Config, ConfigError, from_dict, to_dict

RUN_CONFIG = "run_config.json"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(saved: list[str], new: list[str]) -> list[str]:
    """``saved`` with every override whose key ``new`` sets again replaced (new ones last)."""
    keys = {_key(o) for o in new}
    return [o for o in saved if _key(o) not in keys] + list(new)


def save_run_config(run_dir: Path, cfg: Config, overrides: list[str] | None) -> Path:
    """Record how the run was configured (``overrides`` None: composed elsewhere, e.g. params.yaml)."""
    from zero1toa.utils.io import write_json_atomic

    path = Path(run_dir) / RUN_CONFIG
    write_json_atomic(path, {"overrides": list(overrides) if overrides is not None else None, "config": to_dict(cfg)})
    return path


def config_for_run(run_dir: Path, overrides: list[str]) -> tuple[Config, str]:
    """The run's own configuration with ``overrides`` on top, and a line saying where it came from."""
    from flows.config import compose
    from zero1toa.utils.io import read_json

    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        return compose(overrides), "conf/ defaults (the run folder records no settings)"
    saved: dict[str, Any] = read_json(path)
    if saved.get("overrides") is not None:
        merged = merge_overrides(saved["overrides"], overrides)
        return compose(merged), f"the run's settings ({' '.join(saved['overrides']) or 'defaults'})" + (f" + {' '.join(overrides)}" if overrides else "")
    # composed from params.yaml (DVC): apply key=value overrides to the saved resolved config
    from omegaconf import OmegaConf

    bad = [o for o in overrides if "=" not in o or "." not in _key(o)]
    if bad:
        raise ConfigError(f"this run was configured by params.yaml; give dotted key=value overrides, not {' '.join(bad)}")
    merged_cfg = OmegaConf.merge(OmegaConf.create(saved["config"]), OmegaConf.from_dotlist(list(overrides)))
    return from_dict(OmegaConf.to_container(merged_cfg, resolve=True)), "the run's settings (params.yaml)"


__all__ = ["RUN_CONFIG", "save_run_config", "config_for_run", "merge_overrides"]
