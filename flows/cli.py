"""``zero1toa``: every command of the project is a subcommand of this one entry point.

Each subcommand lives in its own module under ``flows/commands/`` (``add_arguments(parser)`` and
``run(args) -> int``) and is imported only when used, so ``zero1toa --help`` is instant and a
command pays only for the libraries it needs.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

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
    "export": ("export", "export an avatar: standard 3DGS .ply (a frame or a sequence) or the animated package (.glb)"),
    "view": ("view", "write a self-contained HTML page that animates the avatar in the browser (WebGL2)"),
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
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks in the terminal (otherwise in .logs/last_error.log)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


#: Where the traceback of the last failed command goes (the terminal gets one clear line).
ERROR_LOG = Path(".logs") / "last_error.log"


def _user_errors() -> tuple[type, ...]:
    """Errors a user can act on from the message alone (bad input, missing files, a busy folder)."""
    from zero1toa.avatar.checkpoint import CheckpointError
    from zero1toa.config import ConfigError
    from zero1toa.nodes import CorruptArtifactError
    from zero1toa.preflight import MissingAssetsError
    from zero1toa.preprocess.errors import PreprocessError
    from zero1toa.runlock import RunFolderBusy

    return (ConfigError, PreprocessError, MissingAssetsError, RunFolderBusy, CorruptArtifactError, CheckpointError, FileNotFoundError, KeyError, ValueError)


def _disk_full(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def write_error_log(name: str, argv: list[str], exc: BaseException) -> Path | None:
    """The full traceback, for the user who wants it (and for a bug report)."""
    from zero1toa.env import project_root

    path = project_root() / ERROR_LOG
    text = f"zero1toa {' '.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n" + "".join(traceback.format_exception(exc))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:  # a full disk may refuse the log too: the message still reaches the terminal
        return None
    return path


def report_error(name: str, argv: list[str], exc: BaseException) -> int:
    """One clear message for the terminal; the traceback goes to :data:`ERROR_LOG`."""
    log_path = write_error_log(name, argv, exc)
    where = f" (traceback: {log_path}; or re-run with --debug)" if log_path else ""
    if _disk_full(exc):
        print(
            f"zero1toa {name}: error: the disk is full ({exc}). Every finished node, dataset version and "
            f"checkpoint is intact: free some space and run the same command again; it resumes.{where}",
            file=sys.stderr,
        )
    elif isinstance(exc, _user_errors()):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"zero1toa {name}: error: {msg}{where}", file=sys.stderr)
    else:
        print(f"zero1toa {name}: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    from zero1toa.env import apply_defaults

    apply_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    verbose = debug = False
    while argv and argv[0] in ("-v", "--verbose", "--debug"):
        verbose = True
        debug = debug or argv[0] == "--debug"
        argv.pop(0)
    if "--debug" in argv:  # also accepted after the command
        argv.remove("--debug")
        verbose = debug = True
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"zero1toa: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "prefect", "alembic", "numexpr", "PIL", "matplotlib", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not debug:  # a failed task is reported once, by us, not again with Prefect's traceback
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    module = importlib.import_module(f"flows.commands.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"zero1toa {name}", description=COMMANDS[name][1], epilog="--debug (before or after the command): show tracebacks in the terminal")
    module.add_arguments(sub)
    args = sub.parse_intermixed_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept and a re-run resumes", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        return report_error(name, argv, exc)


if __name__ == "__main__":
    sys.exit(main())
