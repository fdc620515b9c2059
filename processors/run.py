"""Starting a worker: settings, the catalogue topics it needs, then the Faust worker loop."""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka.admin import AdminClient
from faust.worker import Worker

from inflow.config.topics import create_topics, load_catalogue
from inflow.processors.app import INGEST_TOPICS, LANES, build_app
from inflow.processors.outputs import EVENTS, PROFILES, REJECTED
from inflow.processors.settings import WorkerSettings
from inflow.processors.workspaces import WorkspaceDirectory
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import TOPIC as WORKSPACES_TOPIC
from inflow.workspaces.registry import WorkspaceRegistry as WorkspaceCredentials

NEEDED_TOPICS = (*INGEST_TOPICS, LANES, PROFILES, EVENTS, REJECTED, WORKSPACES_TOPIC)
WORKSPACES_READY_S = 60.0
log = logging.getLogger(__name__)


def run_worker(name: str | None = None, data_dir: Path | None = None, log_level: str | None = None) -> None:
    """Blocks until SIGTERM / SIGINT; the Faust worker flushes, commits and exits 0."""
    rt = Runtime()
    overrides: dict[str, object] = {"name": name, "data_dir": data_dir, "log_level": log_level}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v})  # type: ignore[arg-type]
    folder = settings.data_dir or rt.paths.home / "processors" / settings.name
    folder.mkdir(parents=True, exist_ok=True)
    specs = {spec.short_name: spec for spec in load_catalogue(rt.kafka.topic_prefix)}
    admin = AdminClient(rt.kafka.client_config())
    create_topics(admin, [specs[name] for name in NEEDED_TOPICS])
    # Workspace settings (identifiers) as the gateway and `inflow workspaces` keep them, followed live.
    credentials = WorkspaceCredentials(rt.kafka, AvroSerde(rt.kafka.schema_registry_url)).start()
    if credentials.follower is None or not credentials.follower.wait_ready(WORKSPACES_READY_S):
        log.warning("control.workspaces not read in %ss: file settings until then", WORKSPACES_READY_S)

    def identifiers_of(workspace_id: str) -> tuple[str, ...] | None:
        workspace = credentials.get(workspace_id)
        return None if workspace is None else workspace.identifiers

    directory = WorkspaceDirectory(rt.config.workspaces, identifiers_of)
    app = build_app(rt.kafka, settings, directory, specs, str(folder))
    try:
        Worker(
            app,
            loglevel="info",
            logging_config=_logging_config(settings.log_level),
            quiet=True,
            redirect_stdouts=False,
        ).execute_from_commandline()
    finally:
        credentials.stop()


def _logging_config(level: str) -> dict[str, object]:
    """Faust and Kafka clients at ``level``; this package at INFO so lane ownership changes are logged."""
    level = level.upper().replace("WARN", "WARNING").replace("WARNINGING", "WARNING")
    return {
        "merge": True,
        "disable_existing_loggers": False,
        "root": {"level": level},
        "loggers": {"processors": {"level": "INFO"}},
    }
