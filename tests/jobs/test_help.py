"""Every command's ``--help`` reads as text: no reStructuredText markup from a docstring."""

from __future__ import annotations

from typing import Any

from typer.main import get_command
from typer.testing import CliRunner

from fleetmine import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in getattr(group, "commands", {}).items():
        out += _commands(cmd, (*path, name))
    return out


def test_every_help_is_plain_text() -> None:
    root = get_command(app)
    paths = _commands(root)
    assert len(paths) > 25, paths  # the walk found the commands
    runner = CliRunner()
    wrong = {}
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=120)
        if result.exit_code != 0 or "``" in result.output:
            wrong[" ".join(path) or "fleetmine"] = result.output[-400:]
    assert not wrong, wrong
