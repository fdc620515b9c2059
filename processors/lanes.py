"""Reading a record's leading strings without decoding it, and the ownership line of the worker's log.

Every ingest record (UserUpsert, DeviceUpsert, EventRecord) starts with ``event_uuid`` then
``workspace_id``, both strings, and an EnrichedEvent starts with ``workspace_id`` then ``event_uuid``;
:func:`second_string` reads the second one straight from the Avro bytes (benchmarks count distinct events
this way). A test pins that field order against the schemas.
"""

from __future__ import annotations

import json

from inflow.processors.exceptions import LaneFramingError
from inflow.schemas.avro_template import read_long

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER = 10
CONFLUENT_HEADER = 5


def second_string(data: bytes) -> bytes:
    """The raw second field of a record whose first two fields are strings (ingest records: the workspace
    id; EnrichedEvent: the event_uuid), after either framing header, without decoding the record."""
    if data[:2] == SINGLE_OBJECT_MAGIC:
        pos = SINGLE_OBJECT_HEADER
    elif data[:1] == b"\x00":
        pos = CONFLUENT_HEADER
    else:
        raise LaneFramingError(f"not an Avro ingest record: first bytes {data[:2].hex() or 'empty'}")
    try:
        pos = _skip_string(data, pos)
        size, pos = _read_long(data, pos)
    except ValueError as exc:
        raise LaneFramingError(f"cannot read workspace_id from ingest record: {exc}") from exc
    if size < 0 or pos + size > len(data):
        raise LaneFramingError("truncated workspace_id in ingest record")
    return bytes(data[pos : pos + size])


OWNED_LOG = "lane partitions owned by this worker"


def owned_in_log(text: str) -> list[int]:
    """The lane partitions a worker's log says it owns since its last rebalance (tests and benchmark)."""
    lines = [line for line in text.splitlines() if OWNED_LOG in line]
    return list(json.loads(lines[-1].rsplit(":", 1)[1])) if lines else []


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_long(data, pos)
    except ValueError as exc:
        raise LaneFramingError(f"{exc} in ingest record") from None


def _skip_string(data: bytes, pos: int) -> int:
    size, pos = _read_long(data, pos)
    if size < 0 or pos + size > len(data):
        raise LaneFramingError("truncated event_uuid in ingest record")
    return pos + size
