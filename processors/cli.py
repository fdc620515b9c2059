"""``inflow worker``: the identity-resolution processors; ``inflow up`` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

UP_PROCESSES: list[tuple[str, list[str]]] = [("worker", ["worker"])]


identity_app = typer.Typer(help="Identity resolution: identifier backfills.", no_args_is_help=True)
backfill_app = typer.Typer(help="Backfills of newly switched-on identifiers.", no_args_is_help=True)
identity_app.add_typer(backfill_app, name="backfill")


@backfill_app.command("status")
def backfill_status(
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Per workspace and identifier switched on: partitions done, profiles scanned and claimed (exit 1
    while one is still running)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from inflow.processors.backfill_status import read_status
    from inflow.runtime import Runtime

    statuses = read_status(Runtime().kafka)
    if as_json:
        print(json.dumps([s.as_json() for s in statuses]))
    else:
        table = Table("workspace", "identifier", "state", "partitions done", "scanned", "claimed")
        for s in statuses:
            table.add_row(
                s.workspace_id,
                s.identifier,
                s.state,
                f"{s.done}/{s.partitions}",
                str(s.scanned),
                str(s.claimed),
            )
        Console().print(table if statuses else "no identifier backfill reported")
    raise typer.Exit(0 if all(s.state == "done" for s in statuses) else 1)


def register(app: typer.Typer) -> None:
    """Add the ``worker`` and ``identity`` commands to the ``inflow`` CLI."""
    app.add_typer(identity_app, name="identity")

    @app.command("worker")
    def worker(
        name: Annotated[str | None, typer.Option(help="worker name; names its RocksDB folder")] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="RocksDB folder (default <INFLOW_HOME>/processors/<name>)")
        ] = None,
        log_level: Annotated[
            str | None, typer.Option(help="log level of the libraries: debug, info, warn, error")
        ] = None,
        metrics_port: Annotated[
            int | None, typer.Option(help="port of /metrics and /health (default 9102; 0: any free port)")
        ] = None,
    ) -> None:
        """Run the processors: resolve identities, keep profiles and devices, publish profiles and events.

        Start several with the same KAFKA_TOPIC_PREFIX (and different --name) to share the lanes; SIGTERM
        stops gracefully (flush, commit, exit 0).
        """
        from inflow.processors.run import run_worker

        run_worker(name=name, data_dir=data_dir, log_level=log_level, metrics_port=metrics_port)
