"""``inflow gateway`` and ``inflow workspaces ...``: run the Data API and manage workspace credentials."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.workspaces.keys import generate_key
from inflow.workspaces.portfolio import Project
from inflow.workspaces.registry import WorkspaceRegistry, new_workspace

UP_PROCESSES: list[tuple[str, list[str]]] = [("gateway", ["gateway"])]

workspaces_app = typer.Typer(
    help="Workspaces and their data API keys (stored hashed in Kafka).", no_args_is_help=True
)


def _directory() -> WorkspaceRegistry:
    from inflow.runtime import Runtime
    from inflow.schemas.serde import AvroSerde

    rt = Runtime()
    return WorkspaceRegistry(rt.kafka, AvroSerde(rt.kafka.schema_registry_url)).load()


def gateway(
    port: Annotated[
        int | None, typer.Option(help="port to listen on (default INFLOW_GATEWAY_PORT or 8080)")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="address to bind (default INFLOW_GATEWAY_HOST or 127.0.0.1)")
    ] = None,
) -> None:
    """Run the MoEngage-compatible Data API gateway (Bulk Import, Track User/Event/Device, Get User)."""
    from inflow.observability.logs import configure_logging
    from inflow.producers.bulk_api.server import run_gateway
    from inflow.runtime import Runtime

    configure_logging("gateway")
    rt = Runtime()
    overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    raise typer.Exit(run_gateway(rt.kafka, settings, rt.config.workspaces))


@workspaces_app.command("create")
def create(
    workspace_id: Annotated[str, typer.Argument(help="workspace (app) id, the Basic Auth user name")],
    key: Annotated[str | None, typer.Option(help="use this data API key instead of generating one")] = None,
    identifiers: Annotated[str, typer.Option(help="comma-separated identity-resolution identifiers")] = "",
    users_per_minute: Annotated[int, typer.Option(min=1)] = 10_000,
    events_per_minute: Annotated[int, typer.Option(min=1)] = 30_000,
) -> None:
    """Create a workspace and print its data API key (shown once; only its hash is stored)."""
    new_key = key or generate_key()
    ws = new_workspace(workspace_id, new_key, identifiers.split(","), users_per_minute, events_per_minute)
    _directory().create(ws)
    typer.echo(json.dumps({"workspace_id": workspace_id, "data_api_key": new_key}))


@workspaces_app.command("rotate-key")
def rotate_key(
    workspace_id: Annotated[str, typer.Argument(help="workspace id")],
    key: Annotated[str | None, typer.Option(help="use this new key instead of generating one")] = None,
) -> None:
    """Replace a workspace's data API key; the old key stops working on every gateway within seconds."""
    new_key = key or generate_key()
    ws = _directory().rotate_key(workspace_id, new_key)
    typer.echo(
        json.dumps({"workspace_id": workspace_id, "data_api_key": new_key, "key_version": ws.key_version})
    )


@workspaces_app.command("list")
def list_workspaces() -> None:
    """List workspaces with key version, limits and state (never the key or its hash)."""
    for ws in _directory().all():
        typer.echo(json.dumps(ws.public()))


@workspaces_app.command("limits")
def limits(
    workspace_id: Annotated[str, typer.Argument(help="workspace id")],
    users_per_minute: Annotated[int, typer.Option(min=1)],
    events_per_minute: Annotated[int, typer.Option(min=1)],
) -> None:
    """Change a workspace's rate limits (users and events per minute, summed over every gateway)."""
    ws = _directory().set_limits(workspace_id, users_per_minute, events_per_minute)
    typer.echo(json.dumps(ws.public()))


@workspaces_app.command("disable")
def disable(workspace_id: Annotated[str, typer.Argument(help="workspace id")]) -> None:
    """Suspend a workspace: its calls are answered 403 Account Suspended."""
    _directory().set_disabled(workspace_id, True)
    typer.echo(f"workspace {workspace_id} disabled")


@workspaces_app.command("enable")
def enable(workspace_id: Annotated[str, typer.Argument(help="workspace id")]) -> None:
    """Lift a suspension set by ``disable``."""
    _directory().set_disabled(workspace_id, False)
    typer.echo(f"workspace {workspace_id} enabled")


projects_app = typer.Typer(
    help="Projects of a portfolio workspace: project_code (Data API) and moe_project_name (imports) "
    "route data to each project's own workspace.",
    no_args_is_help=True,
)


def _print_projects(portfolio_id: str, projects: tuple[Project, ...]) -> None:
    typer.echo(json.dumps({"workspace_id": portfolio_id, "projects": [p.to_record() for p in projects]}))


@projects_app.command("add")
def add_project(
    portfolio_id: Annotated[str, typer.Argument(help="the portfolio workspace (its credentials are used)")],
    code: Annotated[str, typer.Argument(help="project code, passed as ?project_code= (case-sensitive)")],
    workspace: Annotated[str, typer.Option(help="the existing workspace that stores the project's data")],
    name: Annotated[
        str | None, typer.Option(help="project name an import's moe_project_name may hold")
    ] = None,
) -> None:
    """Add a project to a portfolio; the portfolio's Data API calls then need ``project_code``."""
    ws = _directory().add_project(portfolio_id, Project(code=code, workspace_id=workspace, name=name))
    _print_projects(ws.id, ws.projects)


@projects_app.command("remove")
def remove_project(
    portfolio_id: Annotated[str, typer.Argument(help="the portfolio workspace")],
    code: Annotated[str, typer.Argument(help="project code")],
) -> None:
    """Remove a project from a portfolio (its workspace and data stay); with none left it is an ordinary
    workspace again."""
    ws = _directory().remove_project(portfolio_id, code)
    _print_projects(ws.id, ws.projects)


@projects_app.command("list")
def list_projects(portfolio_id: Annotated[str, typer.Argument(help="the portfolio workspace")]) -> None:
    """The projects of a portfolio, as JSON."""
    directory = _directory()
    ws = directory.get(portfolio_id)
    if ws is None:
        typer.echo(f"workspace {portfolio_id} does not exist", err=True)
        raise typer.Exit(2)
    _print_projects(ws.id, ws.projects)


def register(app: typer.Typer) -> None:
    """Add the gateway commands to the ``inflow`` CLI."""
    app.command("gateway")(gateway)
    workspaces_app.add_typer(projects_app, name="projects")
    app.add_typer(workspaces_app, name="workspaces")
