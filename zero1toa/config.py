"""One typed configuration for the whole method, validated before any work starts.

Each settings dataclass lives with the code it configures (``generate/config.py``,
``evaluate/config.py``, ``train/trainer.py``, ...); this module only composes them, validates
values across them, and says which subtree each DAG node reads.

Hydra (in ``flows/``) composes ``conf/`` into a plain dict; :func:`from_dict` turns that dict into
:class:`Config` and rejects anything it does not understand with a message that names the key
("unknown key 'train.optim.lrr' (did you mean 'train.optim.means'?)", "train.optim.means must be
a float, got 'fast'"). A notebook can use the dataclasses directly without Hydra.

Each DAG node reads only its own subtree (see :data:`NODE_KEYS`), so changing evaluation
settings never invalidates training caches.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .avatar.gaussians import InitConfig
from .evaluate.config import EvaluateConfig
from .generate.config import GeneratorConfig
from .preprocess.head_fit import HeadFitConfig
from .preprocess.pipeline import PreprocessConfig
from .progressive.schedules import SpatialConfig, TemporalConfig
from .symgen.round import SymGenConfig
from .train.trainer import TrainConfig


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


@dataclass
class AvatarConfig:
    init: InitConfig = field(default_factory=InitConfig)
    colour_from_reference: bool = True  # seed colours from the photo where the reference view sees them, from the completed atlas elsewhere


@dataclass
class StagesConfig:
    """Progressive learning (views first, then expressions) and the per-round iteration budget."""

    progressive: bool = True  # ablation switch: False = all views and expressions in every round
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    spatial_iterations: int = 240  # avatar iterations per spatial round
    temporal_iterations: int = 240  # avatar iterations per temporal round


@dataclass
class ExportConfig:
    expressions: list[str] = field(default_factory=lambda: ["neutral"])  # one .ply per named expression


@dataclass
class RunConfig:
    name: str = "sample"
    root: str = "runs"  # run folders live under this directory
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (training and rendering)
    progress: bool = True


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    head: HeadFitConfig = field(default_factory=HeadFitConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    symgen: SymGenConfig = field(default_factory=SymGenConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


#: The config subtrees each DAG node depends on (its cache key and its DVC ``params``).
NODE_KEYS: dict[str, tuple[str, ...]] = {
    "preprocess": ("preprocess",),
    "fit_head": ("head",),
    "round": ("run.seed", "generator", "avatar", "stages", "symgen", "train"),
    "evaluate": ("evaluate",),
    "export": ("export",),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown key '{full}'{hint}; valid keys here: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from exc
    return obj


def from_dict(data: dict | None) -> Config:
    """Validate a (Hydra-composed) dict into :class:`Config`; missing keys take the defaults."""
    cfg = _build(Config, dict(data or {}))
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def subtree(cfg: Config | dict, dotted: str) -> Any:
    node: Any = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def node_params(cfg: Config, node: str) -> dict:
    """The resolved settings a DAG node reads (its cache key ingredient)."""
    return {k: subtree(cfg, k) for k in NODE_KEYS[node]}


def _level_ok(level: str | float) -> bool:
    from .bench.simulated import level_value

    try:
        level_value(level)
    except ValueError:
        return False
    return True


#: generator.kind values (conf/generator/*.yaml): the embedded one, the diffusers AnimateDiff route and
#: its tiny random test model, the AniPortrait route and its tiny random test model, the benchmark instrument.
GENERATOR_KINDS = ("reprojection", "animatediff", "tiny", "aniportrait", "aniportrait-tiny", "simulated")


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express (each message names its key)."""
    checks = [
        (cfg.preprocess.resolution >= 64, "preprocess.resolution must be at least 64"),
        (cfg.generator.kind in GENERATOR_KINDS, f"generator.kind must be one of {', '.join(GENERATOR_KINDS)}, got {cfg.generator.kind!r}"),
        (cfg.generator.refresh_start in ("sdedit", "ddim_inversion"), f"generator.refresh_start must be sdedit or ddim_inversion, got {cfg.generator.refresh_start!r}"),
        (cfg.generator.kind != "simulated" or bool(cfg.generator.truth_dir), "generator.truth_dir must name a truth subject folder when generator.kind=simulated (python benchmarks/truth.py --build-only --out DIR)"),
        (_level_ok(cfg.generator.inconsistency), f"generator.inconsistency must be 0, low, medium, high or a number >= 0, got {cfg.generator.inconsistency!r}"),
        (cfg.generator.resolution >= 32, "generator.resolution must be at least 32"),
        (0.0 <= cfg.generator.completion_weight <= 1.0, "generator.completion_weight must lie in [0, 1]"),
        (cfg.train.view_px >= 0, "train.view_px must be >= 0 (0 = whole frames at full resolution)"),
        (cfg.head.completion.atlas_height >= 16, "head.completion.atlas_height must be at least 16"),
        (
            not cfg.generator.kind.startswith("aniportrait") or cfg.generator.resolution % 64 == 0,
            f"generator.resolution must be a multiple of 64 for generator={cfg.generator.kind} (VAE x8, then the UNet's x8), got {cfg.generator.resolution}",
        ),
        (cfg.head.kind in ("facemesh", "flame"), f"head.kind must be facemesh or flame, got {cfg.head.kind!r}"),
        (cfg.head.kind != "flame" or bool(cfg.head.flame_model), "head.flame_model must name your FLAME file when head.kind=flame"),
        (cfg.stages.spatial.rounds >= 0 and cfg.stages.temporal.rounds >= 0, "stages.*.rounds must be >= 0"),
        (cfg.stages.spatial.rounds + cfg.stages.temporal.rounds >= 1, "at least one round is needed (stages.spatial.rounds + stages.temporal.rounds)"),
        (cfg.stages.spatial_iterations > 0 and cfg.stages.temporal_iterations > 0, "stages.*_iterations must be positive"),
        (cfg.symgen.refresh_every > 0, "symgen.refresh_every must be positive"),
        (cfg.symgen.refresh_policy in ("stalest", "stage_round_robin"), f"symgen.refresh_policy must be stalest or stage_round_robin, got {cfg.symgen.refresh_policy!r}"),
        (cfg.symgen.clips_per_refresh >= 0, "symgen.clips_per_refresh must be >= 0 (0 = auto: every clip once per round)"),
        (0.0 <= cfg.symgen.reference_weight < 1.0, "symgen.reference_weight must lie in [0, 1)"),
        (cfg.symgen.landmark_failure in ("downweight", "drop"), f"symgen.landmark_failure must be downweight or drop, got {cfg.symgen.landmark_failure!r}"),
        (0.0 <= cfg.symgen.landmark_failure_weight <= 1.0, "symgen.landmark_failure_weight must lie in [0, 1]"),
        (0.0 <= cfg.symgen.strength_last <= 1.0 and 0.0 <= cfg.symgen.strength_first <= 1.0, "symgen.strength_* must lie in [0, 1]"),
        (cfg.avatar.init.num_gaussians > 0, "avatar.init.num_gaussians must be positive"),
        (0 <= cfg.avatar.init.sh_degree <= 3, "avatar.init.sh_degree must be 0..3"),
        (cfg.train.densify.max_gaussians >= cfg.avatar.init.num_gaussians, "train.densify.max_gaussians must be >= avatar.init.num_gaussians"),
        (cfg.run.device in ("auto", "cpu", "cuda"), f"run.device must be auto, cpu or cuda, got {cfg.run.device!r}"),
        (cfg.evaluate.device in ("auto", "cpu", "cuda"), f"evaluate.device must be auto, cpu or cuda, got {cfg.evaluate.device!r}"),
        (cfg.train.mode in ("symgen", "sds"), f"train.mode must be symgen or sds, got {cfg.train.mode!r}"),
        (
            cfg.train.mode != "sds" or cfg.generator.kind in ("animatediff", "tiny", "simulated"),
            "train.mode=sds distils from a diffusion model: use generator=animatediff (or generator=tiny for a test, generator=simulated for the benchmark)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


__all__ = ["Config", "ConfigError", "from_dict", "to_dict", "node_params", "NODE_KEYS", "GeneratorConfig", "EvaluateConfig"]
