"""Batches of Streams events: full at ``batch_size`` events, or due after ``linger_s`` seconds."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from inflow.sinks.streams.offsets import WorkUnit


@dataclass(eq=False)
class EventBatch(WorkUnit):
    """Events for one request; it also owns filtered-out records so their offsets commit with it."""

    moe_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    fragments: list[str] = field(default_factory=list)
    event_uuids: list[str] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    first_arrival_ms: list[int] = field(default_factory=list)  # message timestamps, for delivery delay

    def drop_arrivals(self, start_ms: int, end_ms: int) -> None:
        """Remove the events that reached the events topic in ``[start_ms, end_ms)``."""
        keep = [i for i, t in enumerate(self.first_arrival_ms) if not start_ms <= t < end_ms]
        if len(keep) != len(self.fragments):
            self.fragments = [self.fragments[i] for i in keep]
            self.event_uuids = [self.event_uuids[i] for i in keep]
            self.first_arrival_ms = [self.first_arrival_ms[i] for i in keep]


class BatchBuilder:
    """Holds the open batch and says when it must be sent."""

    def __init__(self, batch_size: int, linger_s: float) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.current = EventBatch()

    def add(self, fragment: str, event_uuid: str, arrival_ms: int) -> None:
        batch = self.current
        if not batch.fragments and not batch.partitions:
            batch.opened = time.monotonic()
        batch.fragments.append(fragment)
        batch.event_uuids.append(event_uuid)
        batch.first_arrival_ms.append(arrival_ms)

    @property
    def full(self) -> bool:
        return len(self.current.fragments) >= self.batch_size

    def due(self, now: float | None = None) -> bool:
        """Full, or holding anything (events or skipped records) for longer than the linger."""
        batch = self.current
        if self.full:
            return True
        if not batch.fragments and not batch.partitions:
            return False
        return (now if now is not None else time.monotonic()) - batch.opened >= self.linger_s

    def time_to_due(self, now: float) -> float | None:
        """Seconds until the open batch lingers out; None when it holds nothing."""
        batch = self.current
        if not batch.fragments and not batch.partitions:
            return None
        return max(0.0, batch.opened + self.linger_s - now)

    def take(self) -> EventBatch:
        """Close the open batch and open a new one."""
        batch, self.current = self.current, EventBatch()
        return batch
