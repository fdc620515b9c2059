"""What deployment files may refer to: the real ``inflow`` commands and the real settings' environment names.

Shared by the Helm chart and docker-compose tests, so a renamed command or setting breaks them.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
from pathlib import Path
from typing import Any

import typer
from pydantic_settings import BaseSettings

import inflow
from inflow import cli

ROOT = Path(__file__).resolve().parent.parent
HELM_VERSION = "v3.21.4"

# Names that other work of the same issue (the console and the metrics on every component) adds; accepted
# here while that work is not merged. Once it is, they are checked like every other name, since a name
# found in a settings class or the CLI is always checked and these are only tolerated when absent.
PENDING_COMMANDS: set[tuple[str, ...]] = set()
PENDING_SETTINGS: set[str] = set()
# Environment variables read by programs other than Inflow's settings classes.
OTHER_ENV = {"HOME", "PYTHONUNBUFFERED"}


def helm_binary() -> str:
    """``helm`` from INFLOW_HELM, PATH, or where .ci/run installs it; fails (never skips) when missing."""
    cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
    for candidate in (os.environ.get("INFLOW_HELM"), shutil.which("helm"), str(cache / "bin" / "helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError(
        "helm is not installed: .ci/run installs it (`GOBIN=~/.cache/inflow/bin go install "
        f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}`); run that, or set INFLOW_HELM to a helm binary"
    )


def cli_root() -> Any:
    """The full ``inflow`` command tree, with every component's commands, as ``main()`` builds it."""
    root = typer.Typer()
    root.registered_commands = list(cli.app.registered_commands)
    root.registered_groups = list(cli.app.registered_groups)
    for module in cli.component_modules():
        register = getattr(module, "register", None)
        if register is not None:
            register(root)
    group = typer.main.get_command(root)
    assert hasattr(group, "commands")  # a group (typer ships its own click)
    return group


def command_exists(argv: list[str]) -> bool:
    """Whether ``inflow argv...`` names a command: ``["topics", "create"]``; options after it are ignored."""
    if argv and argv[0] == "inflow":
        argv = argv[1:]
    node = cli_root()
    path: list[str] = []
    for word in argv:
        if word.startswith("-") or not hasattr(node, "commands"):
            break
        found = node.commands.get(word)
        if found is None:
            return tuple([*path, word]) in PENDING_COMMANDS
        node = found
        path.append(word)
    # a leaf command, or a group that runs by itself (`inflow console` serves; subcommands manage tokens)
    return bool(path) and (
        not hasattr(node, "commands") or bool(getattr(node, "invoke_without_command", False))
    )


def settings_env_names() -> set[str]:
    """The environment name of every field of every settings class in the ``inflow`` package."""
    for info in pkgutil.walk_packages(inflow.__path__, "inflow."):
        if ".tests" in info.name:
            continue
        importlib.import_module(info.name)
    names: set[str] = set()
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith("inflow."):
            continue
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            names.add(f"{prefix}{field.alias or name}".upper())
    return names


def unknown_env(names: set[str]) -> set[str]:
    """Names in ``names`` that no settings class reads (pending names of unmerged work are tolerated)."""
    known = settings_env_names()
    return {n for n in names if n not in known and n not in OTHER_ENV and n not in PENDING_SETTINGS}
