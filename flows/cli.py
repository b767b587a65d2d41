"""``zero1toa``: every command of the project is a subcommand of this one entry point.

Each subcommand lives in its own module under ``flows/commands/`` (``add_arguments(parser)`` and
``run(args) -> int``) and is imported only when used, so ``zero1toa --help`` is instant and a
command pays only for the libraries it needs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: name -> (module under flows.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "build an avatar from one portrait: the whole DAG as a Prefect flow (cached, resumable)"),
    "batch": ("batch", "run the DAG for every portrait in a folder, spread over a Dask cluster"),
    "node": ("node", "run one DAG node over params.yaml (what dvc.yaml's stages call)"),
    "params": ("params", "compose conf/ with Hydra overrides into params.yaml (for dvc repro)"),
    "preprocess": ("preprocess", "portrait -> aligned reference, mask, landmarks, fitted head, preview"),
    "generate": ("generate", "generate a pseudo ground-truth video from the portrait with a chosen generator"),
    "schedule": ("schedule", "print the progressive learning schedule (views, then expressions) of a config"),
    "animate": ("animate", "drive an avatar with a preset, an expression file or a video -> MP4/GIF"),
    "export": ("export", "export an avatar as standard 3DGS .ply (neutral, an expression, or a sequence)"),
    "evaluate": ("evaluate", "compute a run's metrics (CLIP score, FPS, fidelity, expression accuracy, stability)"),
    "report": ("report", "write a self-contained HTML page comparing runs"),
    "lineage": ("lineage", "print a run's lineage: nodes, digests, params, metrics, which data trained what"),
    "compare": ("compare", "show what differs between two runs (params, metrics, lineage)"),
    "dashboard": ("dashboard", "start (or stop) the local Prefect dashboard and MLflow UI on 127.0.0.1"),
    "assets": ("assets", "fetch optional Apache-2.0 model files from the package registry (selfie segmentation)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zero1toa",
        description="Zero-1-to-A: one portrait photo -> an animatable 3D Gaussian head avatar (SymGEN + progressive learning).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `zero1toa COMMAND --help` for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zero1toa.env import apply_defaults

    apply_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv.pop(0)
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"zero1toa: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "prefect", "alembic", "numexpr", "PIL", "matplotlib", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    module = importlib.import_module(f"flows.commands.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"zero1toa {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_intermixed_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept and a re-run resumes", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors: one clear line, not a traceback
        from zero1toa.config import ConfigError
        from zero1toa.preprocess.errors import PreprocessError

        if isinstance(exc, (ConfigError, PreprocessError, FileNotFoundError, KeyError, ValueError)) and not verbose:
            print(f"zero1toa {name}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
