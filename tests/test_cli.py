"""The command line: --help on every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.main import get_command
from typer.testing import CliRunner

from inflow import cli

ROOT = Path(__file__).resolve().parent.parent


def _full_app() -> typer.Typer:
    app = typer.Typer()
    app.registered_commands = list(cli.app.registered_commands)
    app.registered_groups = list(cli.app.registered_groups)
    for module in cli.component_modules():
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    return app


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found.extend(_walk(sub, (*path, name)))
    return found


def test_every_command_has_help():
    root = _full_app()
    runner = CliRunner()
    paths = _walk(get_command(root))
    assert ("kafka", "start") in paths and ("topics", "create") in paths and ("up",) in paths
    for path in paths:
        result = runner.invoke(root, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


# docker-compose.yml's services and their commands are checked in tests/test_compose.py.
