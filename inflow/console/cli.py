"""``inflow console`` (run the web console and admin API) and ``inflow console token create|list|revoke``."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from inflow.console.audit import AuditLog
from inflow.console.settings import ConsoleSettings
from inflow.console.tokens import TokenStore
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde

UP_PROCESSES: list[tuple[str, list[str]]] = [("console", ["console"])]

console_app = typer.Typer(
    help="The web console and admin API (default http://127.0.0.1:8090).", invoke_without_command=True
)
token_app = typer.Typer(
    help="Admin tokens of the console and admin API (stored hashed).", no_args_is_help=True
)
console_app.add_typer(token_app, name="token")
CLI_ACTOR = "cli"  # who a token command run on the host is, in the audit log


def up_announcements() -> list[str]:
    """What ``inflow up`` prints about the console at start."""
    s = ConsoleSettings()
    return [f"web console and admin API on http://{s.host}:{s.port} (log in with an admin token)"]


@console_app.callback()
def console(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="address to bind (default INFLOW_CONSOLE_HOST or 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default INFLOW_CONSOLE_PORT or 8090)")] = None,
) -> None:
    """Run the web console and admin API until SIGTERM; without an admin token, one is created and printed."""
    if ctx.invoked_subcommand is not None:
        return
    from inflow.console.server import run_console

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = ConsoleSettings(**overrides)  # type: ignore[arg-type]
    raise typer.Exit(run_console(Runtime(), settings))


def _stores() -> tuple[TokenStore, AuditLog]:
    rt = Runtime()
    serde = AvroSerde(rt.kafka.schema_registry_url)
    return TokenStore(rt.kafka, serde).load(), AuditLog(rt.kafka, serde)


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="token name, shown in the audit log as who made a change")],
    role: Annotated[str, typer.Option(help="admin (every operation) or read (read-only)")] = "read",
) -> None:
    """Create an admin token and print it once (only its SHA-256 digest is stored)."""
    tokens, audit = _stores()
    try:
        text, token = tokens.create(name, role, CLI_ACTOR)
        audit.record(actor=CLI_ACTOR, role="admin", action="token.create", target=name, detail={"role": role})
    finally:
        tokens.stop()
        audit.close()
    typer.echo(json.dumps({"name": token.name, "role": token.role, "token": text}))


@token_app.command("list")
def list_tokens() -> None:
    """List admin tokens: name, role, created, revoked (never the tokens)."""
    tokens, audit = _stores()
    tokens.stop()
    audit.close()
    for token in tokens.all():
        typer.echo(json.dumps(token.public()))


@token_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="token name")]) -> None:
    """Revoke an admin token: it stops working on the console at once."""
    tokens, audit = _stores()
    try:
        tokens.revoke(name)
        audit.record(actor=CLI_ACTOR, role="admin", action="token.revoke", target=name)
    finally:
        tokens.stop()
        audit.close()
    typer.echo(f"admin token {name} revoked")


def register(app: typer.Typer) -> None:
    """Add ``inflow console ...`` to the ``inflow`` CLI."""
    app.add_typer(console_app, name="console")
