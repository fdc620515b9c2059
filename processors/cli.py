"""``inflow worker``: the identity-resolution processors; ``inflow up`` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

UP_PROCESSES: list[tuple[str, list[str]]] = [("worker", ["worker"])]


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command to the ``inflow`` CLI."""

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
