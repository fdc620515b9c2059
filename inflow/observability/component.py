"""Start what a component needs to be watched: its ``/metrics`` + ``/health`` server and lag collector.

A component calls :func:`serve_component` once at start and :meth:`Observability.stop` at the end. When
the configured port is taken (another process of the same component on this machine), the server takes a
free port instead and logs which, so a second poller or sink never fails to start over its metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry

from inflow.config.settings import KafkaSettings, ObservabilitySettings
from inflow.observability.health import Check, Health
from inflow.observability.lag import LagCollector
from inflow.observability.server import ObservabilityServer

log = logging.getLogger(__name__)


@dataclass
class Observability:
    """A running component's health checks, server and (when it consumes) lag collector."""

    health: Health
    server: ObservabilityServer
    lag: LagCollector | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        if self.lag is not None:
            self.lag.stop()


def serve_component(
    component: str,
    kafka: KafkaSettings | None = None,
    *,
    port: int | None = None,
    group_prefixes: Sequence[str] = (),
    checks: Mapping[str, Check] | None = None,
    settings: ObservabilitySettings | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> Observability:
    """Serve ``registry`` and the health of ``checks`` (plus the lag collector's, when ``group_prefixes``
    names consumer groups to watch) on ``port``, else the component's configured port (0: any free)."""
    chosen = settings or ObservabilitySettings()
    wanted = chosen.metrics_port(component) if port is None else port
    health = Health(component)
    for name, check in (checks or {}).items():
        health.add(name, check)
    lag = None
    if group_prefixes and kafka is not None:
        lag = LagCollector(kafka, group_prefixes, interval_s=chosen.lag_interval_s, registry=registry)
        health.add("consumer_lag", lag.check)
    try:
        server = ObservabilityServer(health, wanted, chosen.metrics_host, registry)
    except OSError as exc:
        if wanted == 0:
            raise
        server = ObservabilityServer(health, 0, chosen.metrics_host, registry)
        log.warning(
            "%s: port %d is taken (%s); metrics and health are on port %d instead",
            component,
            wanted,
            exc.strerror or exc,
            server.port,
        )
    server.start()
    if lag is not None:
        lag.start()
    return Observability(health, server, lag)
