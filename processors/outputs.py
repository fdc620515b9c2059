"""What the lane hands to Kafka: a record for one of the output topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROFILES = "profiles"
EVENTS = "events"
REJECTED = "processors.rejected"


@dataclass(frozen=True, slots=True)
class Output:
    """One record to publish: catalogue topic short name, key, Avro record name and value."""

    topic: str
    key: bytes
    record_name: str
    record: dict[str, Any]
