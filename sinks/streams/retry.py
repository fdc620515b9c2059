"""Where a failed batch goes next, as a StreamBatch record: retry tier 1, 2, 3 (30/60/120 s), then the DLQ.

The whole batch travels (same events, same ``moe_request_id``) with the history of every failed attempt.
A batch whose failure is permanent skips the remaining tiers and goes straight to the DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.base import Outcome

TIER_TOPICS = ("streams.retry.30s", "streams.retry.60s", "streams.retry.120s")
DLQ_TOPIC = "streams.dlq"
MAIN_TIER = -1  # a batch read from the events topic, before any retry


@dataclass(frozen=True, slots=True)
class ParkingTopic:
    """Where a failed batch is parked: short topic name (``streams.retry.60s`` or ``streams.dlq``) and
    the tier index (-1 for none)."""

    topic: str
    tier: int

    @property
    def is_dlq(self) -> bool:
        return self.topic == DLQ_TOPIC


def next_parking_topic(
    definition: StreamDefinition, failed_tier: int, permanent: bool = False
) -> ParkingTopic:
    """The tier after ``failed_tier`` when the stream's schedule has one, else (or when the failure is
    permanent) the DLQ."""
    tier = failed_tier + 1
    if not permanent and tier < len(definition.retry_delays_s):
        return ParkingTopic(TIER_TOPICS[tier], tier)
    return ParkingTopic(DLQ_TOPIC, -1)


def tier_of(short_topic: str) -> int:
    return TIER_TOPICS.index(short_topic)


def attempt_record(outcome: Outcome, source_topic: str, at: datetime) -> dict[str, Any]:
    return {"at": at, "status": outcome.status, "error": outcome.reason, "topic": source_topic}


def parked_batch(
    definition: StreamDefinition,
    previous: dict[str, Any],
    outcome: Outcome,
    source_topic: str,
    parking: ParkingTopic,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The StreamBatch for ``parking``: attempt count and history extended, due time set by the tier."""
    now = now or datetime.now(UTC)
    delay = definition.retry_delays_s[parking.tier] if not parking.is_dlq else 0.0
    return {
        "stream_id": definition.id,
        "moe_request_id": previous["moe_request_id"],
        "events_json": previous["events_json"],
        "event_uuids": list(previous.get("event_uuids", [])),
        "attempt": int(previous.get("attempt", 0)) + 1,
        "attempts": [*previous.get("attempts", []), attempt_record(outcome, source_topic, now)],
        "due_at": now + timedelta(seconds=delay),
        "created_at": previous.get("created_at", now),
    }


def dead_record(stream_id: str, batch: Any, outcome: Outcome, source_topic: str) -> dict[str, Any]:
    """A DLQ StreamBatch with no events for a record that could not be read; the reason names its position."""
    now = datetime.now(UTC)
    return {
        "stream_id": stream_id,
        "moe_request_id": batch.moe_request_id,
        "events_json": "[]",
        "event_uuids": [],
        "attempt": 1,
        "attempts": [attempt_record(outcome, source_topic, now)],
        "due_at": now,
        "created_at": now,
    }
