"""Every command the README shows exists as written: each `pe-dr` and `labsim` command of a shell
block or of the prose answers its `--help`, each `make` target is in the Makefile."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("pe-dr", "labsim", "make")


def shell_commands(text: str) -> list[list[str]]:
    """The command words of our tools in the README's sh blocks: `.venv/bin/pe-dr drill --yes`
    gives ["pe-dr", "drill"] (the words before the first option, placeholder or comment)."""
    found, block = [], None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            block = line.strip()[3:] if block is None else None
            continue
        if block not in ("sh", "bash"):
            continue
        line = re.sub(r'^eval "\$\(', "", line.strip()).split("#")[0]
        try:
            words = shlex.split(line.replace(')"', ""))
        except ValueError:
            continue
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]  # VAR=value before the command
        if not words or Path(words[0]).name not in OURS:
            continue
        command = [Path(words[0]).name]
        for word in words[1:]:
            if not re.match(r"^[a-z][a-z-]*$", word):
                break
            command.append(word)
        found.append(command)
    return found


def inline_commands(text: str) -> list[list[str]]:
    """`pe-dr retry 1234` in the prose gives ["pe-dr", "retry"]."""
    found = []
    for span in re.findall(r"`((?:pe-dr|labsim) [^`]*)`", text):
        words = span.split()
        command = words[:1]
        for word in words[1:]:
            if not re.match(r"^[a-z][a-z-]*$", word):
                break
            command.append(word)
        if command not in found:
            found.append(command)
    return found


README = (REPO / "README.md").read_text()
COMMANDS = shell_commands(README) + [
    c for c in inline_commands(README) if c not in shell_commands(README)
]


def test_the_readme_shows_commands_of_each_tool() -> None:
    tools = {c[0] for c in COMMANDS}
    assert tools == set(OURS), tools
    assert ["pe-dr", "drill"] in COMMANDS and ["labsim", "drill"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_each_readme_command_exists(command: list[str]) -> None:
    tool, *words = command
    if tool == "make":
        targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.M)
        assert set(words) <= set(targets), (words, targets)
        return
    if tool == "pe-dr":
        from pe_dr_cli.main import main
    else:
        from labsim.cli import main  # type: ignore[assignment]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code: object = main([*words, "--help"])
        except SystemExit as exc:  # argparse's --help
            code = exc.code
    assert code in (0, None), out.getvalue()
    assert "usage:" in out.getvalue()
    if words:  # the help of that command, not a parent's complaint about an unknown word
        assert words[-1] in out.getvalue().splitlines()[0]


MODULES = sorted(
    set(re.findall(r"-m ([a-z_]+(?:\.[a-z_]+)+)", README + (REPO / "prefect.yaml").read_text()))
)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_the_readme_or_prefect_yaml_runs_exists(module: str) -> None:
    import importlib.util

    assert importlib.util.find_spec(module) is not None, module
