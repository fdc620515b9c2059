"""What every stream destination is: ``await deliver(batch)`` answering delivered, retriable or permanent.

The export and retry loops only know this protocol; which class serves a stream is chosen from its
definition in :mod:`inflow.sinks.streams.destinations.registry`. A destination never raises for a failed
delivery: the failure comes back as an :class:`Outcome` with its reason, and the loops park the whole
batch in the next retry topic (retriable) or straight in the dead-letter queue (permanent).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """One request's worth of events: the same id and the same event text on every attempt."""

    moe_request_id: str
    events_json: str  # JSON array text of the events, resent byte for byte
    count: int  # number of events, for metrics


class Result(Enum):
    DELIVERED = "delivered"
    RETRIABLE = "retriable"  # may succeed later: walk the stream's retry tiers
    PERMANENT = "permanent"  # can never succeed as sent: straight to the dead-letter queue


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery attempt ended; ``status`` is the destination's own code (HTTP status) if any."""

    result: Result
    reason: str = ""
    status: int | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is Result.DELIVERED

    @property
    def permanent(self) -> bool:
        return self.result is Result.PERMANENT

    @classmethod
    def delivered(cls, status: int | None = None, latency_s: float = 0.0) -> Outcome:
        return cls(Result.DELIVERED, "", status, latency_s)

    @classmethod
    def retriable(cls, reason: str, status: int | None = None, latency_s: float = 0.0) -> Outcome:
        return cls(Result.RETRIABLE, reason, status, latency_s)

    @classmethod
    def failed_permanently(cls, reason: str, status: int | None = None, latency_s: float = 0.0) -> Outcome:
        return cls(Result.PERMANENT, reason, status, latency_s)


class Destination(Protocol):
    """Where one stream's batches go."""

    @property
    def safe_name(self) -> str:
        """Where it delivers, safe to log (no credentials, no query parameters)."""
        ...

    async def deliver(self, batch: OutgoingBatch) -> Outcome:
        """Deliver the batch once; never raises for a failure of the destination itself."""
        ...

    async def close(self) -> None:
        """Release connections; called once when the stream stops."""
        ...
