"""Compose ``conf/`` with Hydra into the typed, validated :class:`zero1toa.config.Config`.

Hydra's compose API (no ``@hydra.main``: no output folders, no cwd change, no root-logger
takeover). Bad overrides fail here, before any work, with the key named. This is the one place
every command's overrides are composed (run, evaluate, generate, schedule, params, node, batch),
so a misspelled key reads the same everywhere: Hydra's own "Could not override 'train.optim.lrr'
... use +train.optim.lrr" (which invites adding the typo) becomes ``unknown key
'train.optim.lrr' (did you mean 'train.optim.means'?); valid keys of train.optim: ...``, the
wording :func:`zero1toa.config.from_dict` uses for the same mistake in a dict; an unknown option
of a config group lists the group's options.
"""

from __future__ import annotations

import difflib
import re
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
        friendly = _explain_override_error(str(exc), overrides, config_name)
        raise ConfigError(friendly or f"bad configuration override ({' '.join(overrides)}): {exc}") from exc
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def config_groups() -> list[str]:
    """The config groups of ``conf/`` (``generator``, ``head``, ``preset``): keys an override may select."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def unknown_key_message(key: str, base: dict[str, Any], groups: list[str] | None = None) -> str | None:
    """Why dotted ``key`` is not a setting of ``base``, naming the first segment that is not,
    the valid keys beside it and a close match (difflib); None when ``key`` exists."""
    node: Any = base
    prefix: list[str] = []
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict):
            return f"unknown key '{key}': '{'.'.join(prefix)}' is a single setting ({node!r}), not a group of settings"
        if part in node:
            node = node[part]
            prefix.append(part)
            continue
        names = sorted(set(map(str, node)) | set(groups or [] if i == 0 else []))
        full = ".".join(prefix + [part])
        near = difflib.get_close_matches(part, names, n=1)
        hint = f" (did you mean '{'.'.join(prefix + [near[0]])}'?)" if near else ""
        where = f"valid keys of {'.'.join(prefix)}" if prefix else "valid top-level keys"
        return f"unknown key '{full}'{hint}; {where}: {', '.join(names)}"
    return None


def _explain_override_error(text: str, overrides: list[str], config_name: str) -> str | None:
    """Hydra's composition error -> the project's message, or None to keep Hydra's."""
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing:
        key = missing.group(1)
        others = [o for o in overrides if _override_key(o) != key]
        base = None
        for attempt in (others, []):  # the other overrides may select groups whose keys count
            try:
                base = compose_dict(attempt, config_name)
                break
            except ConfigError:
                continue
        if base is None:
            return None
        message = unknown_key_message(key, base, config_groups())
        return message and f"{message} (in the override {next((o for o in overrides if _override_key(o) == key), key)})"
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if option:
        group, name = option.groups()
        folder = CONF_DIR / group
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        near = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return f"unknown {group} '{name}'{hint}; options: {', '.join(options)}"
    return None


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
