"""The command line: --help on every command, docker-compose services that map onto real commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
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


def test_docker_compose_services_run_existing_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["minio"]["image"].startswith("minio/")
    root = get_command(_full_app())
    commands = [s["command"] for s in services.values() if s.get("command") and s["command"][0] == "inflow"]
    assert {c[1] for c in commands} >= {"topics", "gateway", "poller", "worker", "sink"}
    for argv in commands:
        group: Any = root
        for word in argv[1:]:
            if word.startswith("-"):
                break
            assert word in getattr(group, "commands", {}), f"compose runs a missing command: {argv}"
            group = group.commands[word]
