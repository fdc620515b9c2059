"""Starting a worker: settings, the topics it needs, the workspaces it follows, then its loop."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, topic_partitions
from inflow.kafka.view import CompactedView
from inflow.observability import worker_metrics as wm
from inflow.observability.logs import configure_logging
from inflow.processors import fair_usage
from inflow.processors.backfill import BACKFILL
from inflow.processors.outputs import AUDIT, EVENTS, OUTCOMES, PROFILES, REJECTED
from inflow.processors.settings import WorkerSettings
from inflow.processors.worker import INGEST_TOPICS, LAYOUT_TOPIC, ProcessorsWorker
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import TOPIC as WORKSPACES_TOPIC

NEEDED_TOPICS = (
    *INGEST_TOPICS,
    PROFILES,
    EVENTS,
    REJECTED,
    OUTCOMES,
    AUDIT,
    WORKSPACES_TOPIC,
    LAYOUT_TOPIC,
    BACKFILL,
)
WORKSPACES_READY_S = 60.0
WORKSPACE_RECORD = "WorkspaceCredential"
log = logging.getLogger(__name__)


def run_worker(
    name: str | None = None,
    data_dir: Any = None,
    log_level: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Blocks until SIGTERM / SIGINT; the worker flushes, commits and returns (exit code 0). ``/metrics``
    and ``/health`` are served on ``metrics_port`` (default INFLOW_WORKER_METRICS_PORT, 9102)."""
    # A stop asked for while the worker still starts (topics, views) ends it at once with code 0: nothing
    # was applied yet. The worker's loop installs its own handlers (flush and commit) when it runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_while_starting)
    rt = Runtime()
    overrides: dict[str, object] = {"name": name, "data_dir": data_dir, "log_level": log_level}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v})  # type: ignore[arg-type]
    _configure_logging(settings.log_level)
    folder = settings.data_dir or rt.paths.home / "processors" / settings.name
    folder.mkdir(parents=True, exist_ok=True)
    specs = {spec.short_name: spec for spec in load_catalogue(rt.kafka.topic_prefix)}
    serde = AvroSerde(rt.kafka.schema_registry_url)
    # Workspace settings (identifiers) as the gateway and `inflow workspaces` keep them, followed live.
    workspaces = CompactedView(
        rt.kafka,
        rt.kafka.topic(WORKSPACES_TOPIC),
        decode=lambda value: serde.decode(value, expected=WORKSPACE_RECORD)[1],
        name="workspaces",
    )

    def identifiers_of(workspace_id: str) -> tuple[str, ...] | None:
        record = workspaces.get(workspace_id)
        return None if record is None else tuple(record["identifiers"])

    def disabled(workspace_id: str) -> bool:
        record = workspaces.get(workspace_id)
        return record is not None and bool(record["disabled"])

    directory = IdentityRulesDirectory(rt.config.workspaces, identifiers_of)
    admin = new_admin(rt.kafka)
    # Replication and min.insync.replicas from the settings (KAFKA_REPLICATION_FACTOR /
    # KAFKA_MIN_INSYNC_REPLICAS) for the changelogs too: 1 on the local broker, 3 / 2 in production.
    create_topics(
        admin,
        [specs[name] for name in NEEDED_TOPICS],
        rt.kafka.replication_factor,
        min_insync_replicas=rt.kafka.min_insync_replicas,
    )
    ingest = rt.kafka.topic(INGEST_TOPICS[0])
    # The growth layout of ingest.records (written by `inflow topics grow`), followed live.
    layouts = CompactedView(rt.kafka, rt.kafka.topic(LAYOUT_TOPIC), decode=json.loads, name="layout")
    worker = ProcessorsWorker(
        rt.kafka,
        settings,
        directory,
        specs,
        folder,
        disabled,
        layout=lambda: layouts.get(ingest),
        partitions=len(topic_partitions(admin, ingest)),
        # Workspaces of control.workspaces and of the file: a newly switched-on identifier is backfilled.
        workspace_ids=lambda: {*tuple(workspaces.data), *(ws.id for ws in rt.config.workspaces)},
        fair_usage=fair_usage.policies(rt.config.workspaces),
    )
    create_topics(
        admin,
        worker.changelog_specs,
        rt.kafka.replication_factor,
        min_insync_replicas=rt.kafka.min_insync_replicas,
    )
    # Opened here with a real timeout (the view's own thread gives a cold client 0.1 s per metadata try,
    # which a loaded host can miss again and again), then followed on the view's thread.
    workspaces.open(WORKSPACES_READY_S).start()
    layouts.open(WORKSPACES_READY_S).start()
    observed = wm.serve_worker(rt.kafka, port=metrics_port)
    worker.lane.heartbeat = observed.heartbeat.beat
    try:
        if not workspaces.wait_ready(WORKSPACES_READY_S):
            log.warning("control.workspaces not read in %ss: file settings until then", WORKSPACES_READY_S)
        asyncio.run(worker.run())
    finally:
        observed.stop()
        workspaces.close()
        layouts.close()


def _exit_while_starting(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _configure_logging(level: str) -> None:
    """Kafka clients and libraries at ``level``; this package at INFO so lane ownership changes are logged."""
    configure_logging("worker", level)
    logging.getLogger("inflow.processors").setLevel(logging.INFO)
