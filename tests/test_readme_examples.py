"""Every command example the README (and each command's --help) shows must still parse and compose.

A drifted example (a renamed flag, a now-required option, a misspelled setting) fails here, not in
a user's terminal. Each ``zero1toa ...`` example is parsed by the command's own argparse parser and
its Hydra overrides (and ``dvc exp run -S`` settings) are composed into a validated config; running
every example for real would take hours, so the examples that run the DAG are checked this far and
the cheap ones (``--help``, ``schedule``) run for real in the other tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from flows.cli import COMMANDS, main

README = Path(__file__).resolve().parents[1] / "README.md"

#: Placeholders the README writes in upper case, and a concrete value that parses like them.
PLACEHOLDERS = {
    "IMAGE": "sample",
    "[IMAGE]": "sample",
    "RUN": "runs/sample",
    "RUN...": "runs/sample",
    "RUN_DIR": "runs/sample",
    "AVATAR": "runs/sample",
    "CHECKPOINT": "runs/sample",
    "FOLDER": "portraits",
    "DIR": "/tmp/out",
    "NAME": "preprocess",
    "A": "runs/a",
    "B": "runs/b",
    "PATH": "out.ply",
    "WHEEL": "mediapipe.whl",
}
CONFIG_GROUPS = ("preset", "generator", "head")


def _join_continuations(text: str) -> list[str]:
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def _strip_comment(line: str) -> str:
    """A shell line without its trailing comment (``  # ...`` or an aligned ``   (note)``)."""
    return re.split(r"\s{2,}(?:#|\()", line)[0].strip()


def _readme_commands() -> tuple[list[str], list[str]]:
    """(examples, fragments): ``zero1toa ...`` lines of the README's code blocks and command table
    (whole commands, parsed as given), and inline code in its prose (often a fragment of a
    command, e.g. ```zero1toa animate --drive capture.csv```: its command and flags must exist)."""
    text = README.read_text(encoding="utf-8")
    examples: list[str] = []
    fragments: list[str] = []
    fences = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    for block in fences:
        for line in _join_continuations(block):
            line = _strip_comment(line)
            if line.startswith(("zero1toa ", ".venv/bin/zero1toa ")):
                examples.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for line in prose.splitlines():
        spans = [sp.replace("\\|", "|").strip() for sp in re.findall(r"`([^`\n]+)`", line)]
        spans = [sp for sp in spans if sp.startswith(("zero1toa ", ".venv/bin/zero1toa "))]
        if line.startswith("| `zero1toa"):  # the command table: the first cell's commands are whole
            cell = line.split("|")[1]
            whole = [sp.replace("\\|", "|").strip() for sp in re.findall(r"`([^`\n]+)`", cell)]
            examples += whole
            spans = [sp for sp in spans if sp not in whole]
        fragments += spans
    return examples, fragments


def _help_examples() -> list[str]:
    """The ``examples:`` lines of every command's --help."""
    found = []
    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(f"flows.commands.{module_name}")
        parser = argparse.ArgumentParser(prog=f"zero1toa {name}")
        module.add_arguments(parser)
        for line in _join_continuations(parser.epilog or ""):
            line = _strip_comment(line)
            if line.startswith("zero1toa "):
                found.append(line)
    return found


def _concrete(example: str) -> list[list[str]]:
    """The argv (after ``zero1toa``) of one example; alternatives (``start|stop``) each give one."""
    example = example.removeprefix(".venv/bin/")
    for placeholder in ("[overrides...]", "[overrides]"):
        example = example.replace(placeholder, "")
    example = re.sub(r"\[(--[^\]]+)\]", r"\1", example)  # an optional flag group, given: [--out PATH]
    tokens = shlex.split(example)[1:]
    variants: list[list[str]] = [[]]
    for tok in tokens:
        if tok in PLACEHOLDERS:
            value = PLACEHOLDERS[tok]
            if value is not None:
                variants = [v + [value] for v in variants]
            continue
        if "=" in tok and tok.endswith("=..."):
            key = tok.split("=")[0]
            if key in CONFIG_GROUPS:  # "generator=..." stands for any of the group's options
                continue
            tok = f"{key}=/models/placeholder"
        if "|" in tok and not tok.startswith("-"):
            variants = [v + [alt] for v in variants for alt in tok.split("|")]
            continue
        variants = [v + [tok] for v in variants]
    return variants


def _check(argv: list[str]) -> None:
    from flows.config import compose

    while argv and argv[0] in ("-v", "--verbose", "--debug"):  # global options before the command
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help") or argv[0] == "COMMAND":  # `zero1toa --help`, `zero1toa --debug COMMAND ...`
        return
    name = argv[0]
    assert name in COMMANDS, f"unknown command {name!r}"
    if len(argv) == 1:  # prose naming the command (`zero1toa run`), not an example of its arguments
        return
    module = importlib.import_module(f"flows.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"zero1toa {name}", exit_on_error=False)
    module.add_arguments(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_intermixed_args(argv[1:])
    except SystemExit as exc:  # argparse reports some errors by exiting even with exit_on_error=False
        raise AssertionError(f"`zero1toa {' '.join(argv)}` does not parse: {err.getvalue().strip()}") from exc
    except argparse.ArgumentError as exc:
        raise AssertionError(f"`zero1toa {' '.join(argv)}` does not parse: {exc}") from exc
    overrides = [a for a in (getattr(args, "overrides", None) or getattr(args, "args", None) or []) if "=" in a]
    if overrides:
        compose(overrides)


def _check_fragment(argv: list[str]) -> None:
    """A command named in prose: it exists, and every ``--flag`` it shows is one of its options."""
    while argv and argv[0] in ("-v", "--verbose", "--debug"):
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "COMMAND"):
        return
    assert argv[0] in COMMANDS, f"unknown command {argv[0]!r}"
    module = importlib.import_module(f"flows.commands.{COMMANDS[argv[0]][0]}")
    parser = argparse.ArgumentParser(prog=f"zero1toa {argv[0]}")
    module.add_arguments(parser)
    flags = [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
    unknown = [f for f in flags if f not in parser._option_string_actions]
    assert not unknown, f"`zero1toa {' '.join(argv)}`: no option {unknown} (options: {sorted(parser._option_string_actions)})"


README_EXAMPLES, README_FRAGMENTS = _readme_commands()
HELP_EXAMPLES = _help_examples()


def test_examples_are_found():
    # the collector itself must see the README's command table and its code blocks
    assert len(README_EXAMPLES) >= 20 and len(README_FRAGMENTS) >= 10, (README_EXAMPLES, README_FRAGMENTS)
    commands = {ex.removeprefix(".venv/bin/").split()[1] for ex in README_EXAMPLES}
    assert {"run", "animate", "export", "evaluate", "dashboard", "params"} <= commands
    assert len(HELP_EXAMPLES) >= 8


@pytest.mark.parametrize("example", README_EXAMPLES)
def test_readme_example_parses(example):
    for argv in _concrete(example):
        _check(argv)


@pytest.mark.parametrize("fragment", README_FRAGMENTS)
def test_readme_fragment_names_real_options(fragment):
    for argv in _concrete(fragment):
        _check_fragment(argv)


@pytest.mark.parametrize("example", HELP_EXAMPLES)
def test_help_example_parses(example):
    for argv in _concrete(example):
        _check(argv)


def test_dvc_exp_settings_compose():
    from flows.config import compose

    text = README.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if "dvc exp run" in ln and "-S" in ln]
    assert lines, "the README shows no `dvc exp run -S` example"
    for line in lines:
        settings = re.findall(r"-S\s+(\S+)", line.split("#")[0])
        compose([s.strip("`") for s in settings])


def test_checker_bites():
    # a missing required option and a misspelled setting both fail the check
    with pytest.raises(AssertionError, match="does not parse"):
        _check(["animate", "runs/sample", "--out", "a.mp4"])
    with pytest.raises(AssertionError, match="no option"):
        _check_fragment(["animate", "--drive", "x.csv", "--arkit-angle", "radians"])
    assert _concrete("zero1toa export AVATAR --format ply [--out PATH]") == [["export", "runs/sample", "--format", "ply", "--out", "out.ply"]]
    from zero1toa.config import ConfigError

    with pytest.raises(ConfigError):
        _check(["run", "sample", "train.optim.lrr=1"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_runs(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"zero1toa {name}" in capsys.readouterr().out


def test_readme_table_lists_every_command():
    table = [ex.removeprefix(".venv/bin/").split()[1] for ex in README_EXAMPLES + README_FRAGMENTS if len(ex.split()) > 1]
    missing = sorted(set(COMMANDS) - set(table))
    assert not missing, f"commands the README never shows: {missing}"
