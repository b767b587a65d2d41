"""zero1toa node NAME: run one DAG node over params.yaml (what each dvc.yaml stage runs).

Names: ``portrait`` (provide the input image), ``preprocess``, ``fit_head``, a round
(``spatial_1`` or ``round spatial_1``), ``evaluate``, ``export``. The node runs through the same
task code as the Prefect flow (:func:`tasks.execute.run_node`): same artifacts, same manifest,
same MLflow records. Under ``dvc repro`` / ``dvc exp run`` all stages of one invocation share one
MLflow parent run (tagged with the DVC experiment name when there is one).

With Hydra overrides (``zero1toa node spatial_1 preset=smoke run.root=/tmp/r``) the config is
composed from conf/ instead of read from params.yaml.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_PORTRAIT = Path("inputs") / "portrait.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="portrait | preprocess | fit_head | round | spatial_K | temporal_K | evaluate | export")
    p.add_argument("args", nargs="*", help="the round name after `round`; Hydra overrides (key=value) compose the config from conf/ instead of params.yaml")
    p.add_argument("--params", type=Path, default=None, help="params file (default: params.yaml of the DVC project)")
    p.add_argument("--image", type=Path, default=DEFAULT_PORTRAIT, help="input portrait of the preprocess node (default inputs/portrait.png)")
    p.add_argument("--out", type=Path, default=DEFAULT_PORTRAIT, help="portrait: where to put the image")
    p.add_argument("--source", default="sample", help="portrait: image to copy there when it is missing (`sample` = the bundled portrait)")
    p.add_argument("--json", action="store_true", help="print the node's result record as JSON")
    p.add_argument("--metrics-out", type=Path, default=None, help="evaluate: also write its summary.json here (dvc.yaml's git-tracked metrics file)")
    p.add_argument("--wait", action="store_true", help="when another process is running this run folder, wait for it instead of failing at once")


def provide_portrait(out: Path, source: str = "sample") -> Path:
    """Put the input portrait in place unless one is already there (the user's own photo wins).

    The dvc.yaml stage ``portrait`` keeps this file as a persistent output: replacing it with your
    own photo makes ``dvc repro`` re-run everything downstream of it.
    """
    import shutil

    out = Path(out)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if source == "sample":
        from zero1toa.sample import write_sample_portrait

        return write_sample_portrait(out)
    src = Path(source)
    if not src.is_file():
        raise FileNotFoundError(f"portrait not found: {source}")
    from zero1toa.utils.io import atomic_path

    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    return out


def check_params_identity(params_path: Path | None, cfg, kind: str) -> None:
    """params.yaml's ``identity`` section must describe this environment, or DVC's staleness is wrong.

    DVC sees library versions and the contents of external files (weights, LPIPS, FLAME) only
    through that section, written by ``zero1toa params`` (or DVC's own Hydra composition); after
    an upgrade or a changed weights folder it must be composed again.
    """
    import yaml

    from flows.commands.params import IDENTITY_KEY, default_params_path
    from zero1toa.config import ConfigError, to_dict
    from zero1toa.identity import environment_identity

    path = Path(params_path) if params_path is not None else default_params_path()
    with open(path, encoding="utf-8") as f:
        recorded = ((yaml.safe_load(f) or {}).get(IDENTITY_KEY) or {}).get(kind)
    now = environment_identity(to_dict(cfg))[kind]
    if recorded != now:
        changed = sorted(
            f"{part}.{k}" for part in ("libraries", "external") for k in set((recorded or {}).get(part, {})) | set(now[part]) if (recorded or {}).get(part, {}).get(k) != now[part].get(k)
        ) or ["identity section missing"]
        raise ConfigError(
            f"{path} describes another environment for the {kind} node ({', '.join(changed)} changed): "
            "run `zero1toa params [overrides]` again (or `dvc exp run`, which composes it itself), then `dvc repro`"
        )


def copy_summary(summary: Path, dest: Path) -> Path:
    """The evaluation's flat numbers, copied (atomically) to where DVC reads metrics.

    Run folders are git-ignored, and `dvc exp run` commits only git-tracked files into an
    experiment: a metric inside ``runs/`` shows as `!` for every experiment but the workspace.
    """
    from zero1toa.utils.io import write_text_atomic

    if not summary.is_file():
        raise FileNotFoundError(f"--metrics-out: the evaluation wrote no {summary}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, summary.read_text(encoding="utf-8"))
    return dest


def _split(name: str, args: list[str]) -> tuple[str, list[str]]:
    rest = list(args)
    if name == "round":
        if not rest or "=" in rest[0]:
            raise ValueError("`zero1toa node round` needs a round name, e.g. `zero1toa node round spatial_1`")
        name = rest.pop(0)
    bad = [a for a in rest if "=" not in a]
    if bad:
        raise ValueError(f"unexpected arguments {bad}: give Hydra overrides as key=value")
    return name, rest


def run(args: argparse.Namespace) -> int:
    name, overrides = _split(args.name, args.args)
    if name == "portrait":
        path = provide_portrait(args.out, args.source)
        print(f"portrait: {path}")
        return 0

    from flows.commands.params import load_params_file

    if overrides:
        from flows.config import compose

        cfg = compose(overrides)
    else:
        cfg = load_params_file(args.params)

    from flows.tracking import dvc_pipeline_key, end_pipeline, start_pipeline
    from tasks import keys
    from tasks.execute import run_node
    from zero1toa.nodes import run_dir_for

    keys.node_kind(cfg, name)  # unknown node names fail before any work
    if args.metrics_out is not None and keys.node_kind(cfg, name) != "evaluate":
        raise ValueError(f"--metrics-out is an option of `zero1toa node evaluate`, not of {name}")
    from zero1toa.preflight import check_assets

    check_assets(cfg)  # and so does a missing weight folder or file
    run_dir = run_dir_for(cfg).resolve()
    upstream = keys.upstream_from_disk(cfg, run_dir, name)
    image = None
    if keys.node_kind(cfg, name) == "preprocess":
        image = args.image.resolve()
        if not image.is_file():
            raise FileNotFoundError(f"portrait not found: {args.image} (run `zero1toa node portrait` or pass --image)")
    if not overrides:
        check_params_identity(args.params, cfg, keys.node_kind(cfg, name))
    from flows.runconfig import save_run_config
    from zero1toa.runlock import run_lock

    pipeline_key = dvc_pipeline_key()
    launcher = "dvc" if pipeline_key else "cli"
    with run_lock(run_dir, wait=args.wait):
        save_run_config(run_dir, cfg, overrides if overrides else None)
        ctx = start_pipeline(cfg, run_dir, launcher, pipeline_key=pipeline_key, reuse=pipeline_key is not None)
        try:
            result = run_node(name, run_dir, cfg, upstream, image=image, tracking=ctx, launcher=launcher)
        except BaseException as exc:
            end_pipeline(ctx, "FAILED", {"partial": True, "nodes": {}, "error": f"{type(exc).__name__}: {exc}"})
            raise
    if args.metrics_out is not None:
        copy_summary(run_dir / result["folder"] / "summary.json", args.metrics_out)
    end_pipeline(ctx, "FINISHED", {"partial": True, "nodes": {name: {"node": name, "kind": result["kind"], "state": "Completed", "metrics": result["metrics"]}}})
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        extra = f", resumed from iteration {result['metrics']['resumed_from_iteration']}" if result["metrics"].get("resumed_from_iteration") else ""
        print(f"{name}: done in {result['seconds']:.1f} s -> {run_dir / result['folder']} (outputs {result['output_digest'][:12]}{extra})")
    return 0
