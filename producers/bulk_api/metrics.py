"""Prometheus metrics of one gateway, in a registry of its own (several gateways may share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class GatewayMetrics:
    """Counters served at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "inflow_gateway_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "inflow_gateway_request_seconds",
            "Request latency, acknowledgement included",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.records = Counter(
            "inflow_gateway_records",
            "Records acknowledged by the broker",
            ["workspace", "topic"],
            registry=r,
        )
        self.rejected = Counter(
            "inflow_gateway_rejected_elements",
            "Elements rejected, by workspace and error type",
            ["workspace", "type"],
            registry=r,
        )
        self.rate_limited = Counter(
            "inflow_gateway_rate_limited", "Requests answered 429", ["workspace"], registry=r
        )
        self.delivery_failures = Counter(
            "inflow_gateway_delivery_failures",
            "Requests answered 503 because the broker did not acknowledge",
            registry=r,
        )
        self.views_ready = Gauge(
            "inflow_gateway_view_ready", "1 when a topic view is caught up", ["view"], registry=r
        )
