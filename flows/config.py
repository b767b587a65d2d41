"""Compose ``conf/`` with Hydra into the typed, validated :class:`zero1toa.config.Config`.

Hydra's compose API (no ``@hydra.main``: no output folders, no cwd change, no root-logger
takeover). Bad overrides fail here, before any work, with the key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zero1toa.config import Config, ConfigError, from_dict
from zero1toa.env import project_root

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_dict(overrides: list[str] | None = None, config_name: str = "config") -> dict[str, Any]:
    """Hydra-compose ``conf/<config_name>.yaml`` with ``overrides`` into a plain dict."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad configuration override ({' '.join(overrides)}): {exc}") from exc
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def compose(overrides: list[str] | None = None) -> Config:
    """Overrides like ``preset=smoke generator=tiny train.optim.means=1e-3`` -> validated Config."""
    return from_dict(compose_dict(overrides))


def load_params(path: Path | None = None) -> Config:
    """Read DVC's ``params.yaml`` (already composed) into a validated Config."""
    import yaml

    path = Path(path) if path is not None else project_root() / "params.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `zero1toa params` (or `dvc exp run`) to compose it")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    data.pop("dag", None)  # the round plan `zero1toa params` adds for dvc.yaml's foreach, not a setting
    data.pop("identity", None)  # the environment part of the node identities, for DVC
    return from_dict(data)


def write_params(cfg_dict: dict, path: Path | None = None) -> Path:
    import yaml

    from zero1toa.utils.io import write_text_atomic

    path = Path(path) if path is not None else project_root() / "params.yaml"
    write_text_atomic(path, yaml.safe_dump(cfg_dict, sort_keys=False, width=120))
    return path
