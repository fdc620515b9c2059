"""Prometheus metrics of the Streams sink, labelled by stream id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERED_EVENTS = Counter(
    "inflow_streams_delivered_events", "Events delivered with a 2xx answer", ["stream"]
)
DELIVERED_REQUESTS = Counter("inflow_streams_delivered_requests", "Requests answered with a 2xx", ["stream"])
RETRIED_BATCHES = Counter(
    "inflow_streams_retried_batches", "Failed batches parked in a retry topic", ["stream", "tier"]
)
DEAD_LETTERED_BATCHES = Counter("inflow_streams_dead_lettered_batches", "Batches sent to the DLQ", ["stream"])
INVALID_EVENTS = Counter(
    "inflow_streams_invalid_events", "Unreadable records of the events topic", ["stream"]
)
IN_FLIGHT = Gauge("inflow_streams_in_flight_requests", "HTTP requests in flight", ["stream"])
CONSUMER_LAG = Gauge(
    "inflow_streams_consumer_lag", "Records of the events topic not yet consumed", ["stream"]
)
REQUEST_LATENCY = Histogram(
    "inflow_streams_request_latency_seconds",
    "Time of one POST to the endpoint, whatever its outcome",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_DELAY = Histogram(
    "inflow_streams_delivery_delay_seconds",
    "From an event's arrival in the events topic to its delivery",
    ["stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
HELD = Gauge(
    "inflow_streams_held",
    "1 while a stream is held (secrets that do not decrypt, a refused value or address, workspace "
    "disabled, schema registry unreachable); the reason is logged",
    ["stream"],
)
REGISTRY_RETRIES = Counter(
    "inflow_streams_registry_retries",
    "Reads put off because the schema registry could not be reached (the records are read again)",
    ["stream"],
)
