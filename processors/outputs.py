"""What the lane hands to Kafka: a record for one of the output topics, or a protocol message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INGEST = "ingest.records"
PROFILES = "profiles"
EVENTS = "events"
REJECTED = "processors.rejected"
OUTCOMES = "processors.outcomes"  # RecordOutcome: what became of each imported file row
AUDIT = "control.audit"  # Delete User requests and their outcome (with the admin changes)
PROTOCOL = "protocol"  # record_name of a worker protocol message (already encoded, in ``raw``)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 4x (one per event; never changed)
class Output:
    """One record to publish: catalogue topic short name, key, Avro record name and value; a protocol
    message also names its partition of ``ingest.records`` and carries its bytes in ``raw``. A
    ``tombstone`` is published with no value (a compacted topic then forgets the key); its ``record``
    only says whose it is (``workspace_id``)."""

    topic: str
    key: bytes
    record_name: str
    record: dict[str, Any]
    partition: int | None = None
    raw: bytes | None = None
    tombstone: bool = False
    encoded: bytes | None = None  # the record's Avro value, when the processor wrote it itself (next_event)
