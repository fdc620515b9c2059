"""The dead-letter queue: list, show and redrive batches that failed every attempt.

Redrive puts a batch back in the first retry topic, due now, with its history kept; the running sink then
sends it (same ``moe_request_id``) and, if it fails again, walks the retry tiers to the DLQ once more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.errors import InflowError
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.control import publish
from inflow.sinks.streams.exceptions import DlqError
from inflow.sinks.streams.retry import DLQ_TOPIC, TIER_TOPICS


@dataclass(frozen=True, slots=True)
class DeadBatch:
    """One DLQ record and where it sits."""

    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def summary(self) -> dict[str, Any]:
        last = self.record["attempts"][-1] if self.record["attempts"] else {}
        return {
            "position": self.position,
            "stream_id": self.record["stream_id"],
            "moe_request_id": self.record["moe_request_id"],
            "events": len(self.record["event_uuids"]),
            "attempts": self.record["attempt"],
            "last_status": last.get("status"),
            "last_error": last.get("error", ""),
            "dead_at": last.get("at"),
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), **self.record, "events_json": json.loads(self.record["events_json"])}


def read_dlq(
    kafka: KafkaSettings, serde: AvroSerde, stream_id: str | None = None, timeout: float = 60.0
) -> list[DeadBatch]:
    """Every batch in the DLQ (optionally of one stream), oldest first per partition."""
    found: list[DeadBatch] = []

    def keep(msg: Message) -> None:
        try:
            _, record = serde.decode(msg.value() or b"", "StreamBatch")
        except InflowError:
            return
        if stream_id is None or record["stream_id"] == stream_id:
            found.append(DeadBatch(int(msg.partition() or 0), int(msg.offset() or 0), record))

    # Read from the beginning to the current end, group-less: the DLQ is not compacted, but reading it
    # whole is what the view does.
    CompactedView.read(kafka, kafka.topic(DLQ_TOPIC), timeout, apply=keep, name="streams-dlq")
    return sorted(found, key=lambda b: (b.partition, b.offset))


def select(batches: list[DeadBatch], ids: list[str]) -> list[DeadBatch]:
    """Batches named by ``moe_request_id`` or ``partition:offset``; an unknown name is an error."""
    chosen = []
    for ident in ids:
        match = [b for b in batches if ident in (b.record["moe_request_id"], b.position)]
        if not match:
            raise DlqError(f"no dead batch {ident!r} in the DLQ (give a moe_request_id or partition:offset)")
        chosen += [m for m in match if m not in chosen]
    return chosen


def redrive(
    kafka: KafkaSettings,
    serde: AvroSerde,
    batches: list[DeadBatch],
    progress: Callable[[DeadBatch], None] | None = None,
) -> list[DeadBatch]:
    """Re-park each batch that holds events in the first retry topic, due now; returns those re-parked.
    ``progress`` hears of every batch looked at, re-parked or not."""
    done = []
    for batch in batches:
        if not batch.record["event_uuids"] or batch.record["events_json"].strip() == "[]":
            if progress is not None:
                progress(batch)
            continue  # an unreadable record, or a batch too large to park, kept for its reason only
        record = dict(batch.record) | {"due_at": datetime.now(UTC)}
        publish(kafka, TIER_TOPICS[0], record["stream_id"], serde.encode("StreamBatch", record))
        done.append(batch)
        if progress is not None:
            progress(batch)
    return done
