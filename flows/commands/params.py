"""zero1toa params [overrides]: compose conf/ into params.yaml, the file dvc.yaml's stages read.

``dvc exp run -S key=value`` composes the same file itself (DVC's Hydra integration, configured
in ``.dvc/config``); this command is for ``dvc repro`` and for checking a configuration. The file
holds the validated configuration plus ``dag``, the round plan ``dvc.yaml`` iterates over, and
``identity``, per node kind the library versions and external-file digests of
:func:`zero1toa.identity.environment_identity` (what DVC cannot see as file deps).
"""

from __future__ import annotations

import argparse
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

PLUGIN = Path(".dvc") / "hydra" / "hydra_plugins" / "zero1toa_dag.py"
DAG_KEY = "dag"
#: Per node kind, the part of its identity DVC cannot see as file deps (library versions,
#: digests of external weights/files): each dvc.yaml stage lists ``identity.<kind>`` as params.
IDENTITY_KEY = "identity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. preset=smoke generator=tiny stages.spatial.rounds=3")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: params.yaml in the project root)")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the composed params instead of writing them")
    p.add_argument("--write-dvc-yaml", action="store_true", help="also regenerate dvc.yaml from the node identities (after changing which modules a node imports)")


@lru_cache(maxsize=1)
def _plugin():
    from zero1toa.env import project_root

    path = project_root() / PLUGIN
    if not path.exists():  # running outside the checkout: the copy shipped beside this package's root
        path = Path(__file__).resolve().parents[2] / PLUGIN
    spec = importlib.util.spec_from_file_location("zero1toa_dag", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def round_plan(cfg) -> dict[str, Any]:
    """The ``dag`` section for a validated Config (the same function DVC's composition calls)."""
    return _plugin().round_plan(cfg.stages.spatial.rounds, cfg.stages.temporal.rounds, cfg.stages.progressive)


def compose_params(overrides: list[str]) -> dict[str, Any]:
    """conf/ + overrides -> validated config dict + ``dag`` (what params.yaml holds)."""
    from flows.config import compose
    from zero1toa.config import to_dict

    from zero1toa.identity import environment_identity

    cfg = compose(overrides)
    data = to_dict(cfg)
    data[DAG_KEY] = round_plan(cfg)
    data[IDENTITY_KEY] = environment_identity(data)
    return _plain(data)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def default_params_path() -> Path:
    """params.yaml of the DVC project we are in (the current folder when it has a dvc.yaml, as in a
    DVC stage), else of the zero1toa project."""
    from zero1toa.env import project_root

    return Path.cwd() / "params.yaml" if (Path.cwd() / "dvc.yaml").exists() else project_root() / "params.yaml"


def load_params_file(path: Path | None = None):
    """params.yaml -> validated Config (the ``dag`` section is DVC's, not the method's)."""
    import yaml

    from zero1toa.config import from_dict

    path = Path(path) if path is not None else default_params_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `zero1toa params [overrides]` (or `dvc exp run -S ...`) to compose it")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    data.pop(DAG_KEY, None)
    data.pop(IDENTITY_KEY, None)
    return from_dict(data)


def run(args: argparse.Namespace) -> int:
    import yaml

    from flows.config import write_params

    data = compose_params(args.overrides)
    if args.print_only:
        print(yaml.safe_dump(data, sort_keys=False, width=120), end="")
        return 0
    path = write_params(data, args.out if args.out is not None else default_params_path())
    if args.write_dvc_yaml:
        from flows.dvc_stages import write_dvc_yaml

        print(f"wrote {write_dvc_yaml(path.parent / 'dvc.yaml')}")
    plan = data[DAG_KEY]
    print(f"wrote {path}: run {data['run']['name']} in {data['run']['root']}, rounds {', '.join(plan['rounds'])}")
    return 0
