"""The worker's (``processors/``) metrics and its ``/metrics`` + ``/health`` server, defined here so the
worker only has to count and call :func:`serve_worker`.

What the worker calls::

    from inflow.observability import worker_metrics as wm

    obs = wm.serve_worker(kafka, port=metrics_port)   # at start; obs.stop() at the end
    wm.RECORDS_IN.labels(workspace, topic).inc(n)       # ingest records read
    wm.RECORDS_APPLIED.labels(workspace, "user").inc(n) # applied: user | device | event
    wm.RECORDS_OUT.labels(workspace, topic).inc(n)      # profiles / events published
    wm.MERGES.labels(workspace).inc()
    wm.REJECTIONS.labels(workspace, wm.reason_class(reason)).inc()
    wm.FAIR_USAGE_BLOCKS.labels(workspace).inc(n)       # users blocked by the Fair Usage Policy
    with wm.BATCH_APPLY.time(): ...                     # or .observe(seconds), per consumed batch
    obs.heartbeat.beat()                                # every loop turn; /health fails after 60 s without
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from inflow.config.settings import KafkaSettings, ObservabilitySettings
from inflow.observability.component import Observability, serve_component
from inflow.observability.health import Check, Heartbeat

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RECORDS_IN = Counter("inflow_worker_records_in", "Ingest records read", ["workspace", "topic"])
RECORDS_APPLIED = Counter(
    "inflow_worker_records_applied",
    "Records applied to identities, profiles and devices, by record type (user, device, event)",
    ["workspace", "type"],
)
RECORDS_OUT = Counter(
    "inflow_worker_records_out", "Profiles and enriched events published", ["workspace", "topic"]
)
MERGES = Counter("inflow_worker_merges", "Users merged into a retained user", ["workspace"])
REJECTIONS = Counter(
    "inflow_worker_rejections",
    "Records written to processors.rejected, by class of reason",
    ["workspace", "reason"],
)
FAIR_USAGE_BLOCKS = Counter(
    "inflow_worker_fair_usage_blocks",
    "Users blocked by the Fair Usage Policy (a block imposed; its records count under rejections)",
    ["workspace"],
)
BATCH_APPLY = Histogram(
    "inflow_worker_batch_apply_seconds",
    "Time to apply one consumed batch, outputs flushed and state written",
    buckets=LATENCY_BUCKETS,
)
BACKFILL_RUNNING = Gauge(
    "inflow_worker_backfill_partitions",
    "Partitions of this worker still backfilling a newly switched-on identifier (0 or absent: done)",
    ["workspace", "identifier"],
)
BACKFILL_SCANNED = Counter(
    "inflow_worker_backfill_profiles_scanned",
    "Stored profiles scanned by identifier backfills",
    ["workspace", "identifier"],
)
RESTORING = Gauge("inflow_worker_restoring_partitions", "Partitions paused while their state is restored")

# Reasons are free text; a label takes one of these classes so the number of series stays bounded.
_REASON_CLASSES = (
    ("fair_usage", ("fair usage policy",)),
    ("too_large", ("too large", "over the", "size limit")),
    ("unreadable", ("unreadable", "cannot decode", "not decodable", "schema")),
    ("blocked_identifier", ("blocked", "exception list", "identifier")),
    ("invalid", ("invalid", "missing", "required", "must", "not a")),
)


def reason_class(reason: str) -> str:
    """``fair_usage``, ``too_large``, ``unreadable``, ``blocked_identifier``, ``invalid`` or ``other`` for a
    reason text."""
    text = reason.lower()
    for name, words in _REASON_CLASSES:
        if any(word in text for word in words):
            return name
    return "other"


@dataclass
class WorkerObservability(Observability):
    """What :func:`serve_worker` returns: ``heartbeat.beat()`` on every loop turn, ``stop()`` at the end."""

    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(60.0))


def worker_groups(kafka: KafkaSettings) -> tuple[str, ...]:
    """The worker's consumer group ``<prefix>.processors`` (and any group named under it)."""
    return (f"{kafka.topic_prefix}.processors",)


def serve_worker(
    kafka: KafkaSettings,
    *,
    port: int | None = None,
    checks: Mapping[str, Check] | None = None,
    heartbeat_s: float = 60.0,
    settings: ObservabilitySettings | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> WorkerObservability:
    """Serve the worker's metrics and health on ``port`` (default ``INFLOW_WORKER_METRICS_PORT``, 9102),
    with the lag of its two groups per partition; ``/health`` is failing while ``heartbeat`` has not beaten
    for ``heartbeat_s`` or a check in ``checks`` fails."""
    heartbeat = Heartbeat(heartbeat_s)
    served = serve_component(
        "worker",
        kafka,
        port=port,
        group_prefixes=worker_groups(kafka),
        checks={"loop": heartbeat, **(checks or {})},
        settings=settings,
        registry=registry,
    )
    return WorkerObservability(served.health, served.server, served.lag, heartbeat)
