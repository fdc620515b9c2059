"""Routing to identity lanes: every ingest record goes to the lane partition of its workspace.

The router reads only the workspace id, straight from the Avro bytes: every ingest record (UserUpsert,
DeviceUpsert, EventRecord) starts with ``event_uuid`` then ``workspace_id``, both strings, so the
router skips one string and reads the next instead of decoding the whole record. A test pins that
field order against the schemas.
"""

from __future__ import annotations

import json

from inflow.processors.exceptions import LaneFramingError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER = 10
CONFLUENT_HEADER = 5


def peek_workspace(data: bytes) -> str:
    """The workspace id of an ingest record, from its first two Avro string fields."""
    if not isinstance(data, bytes | bytearray):
        raise LaneFramingError("ingest message without a value")
    try:
        return second_string(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LaneFramingError(f"cannot read workspace_id from ingest record: {exc}") from exc


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
    except IndexError as exc:
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
    """Avro zig-zag varint."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise LaneFramingError("varint too long in ingest record")


def _skip_string(data: bytes, pos: int) -> int:
    size, pos = _read_long(data, pos)
    if size < 0 or pos + size > len(data):
        raise LaneFramingError("truncated event_uuid in ingest record")
    return pos + size


# A lane message carries a pack: several ingest records of one workspace, in their order, so the lane hop
# costs one Kafka message per workspace and router batch instead of one per record.
PACK_MAGIC = b"\xf0IPK1"
MAX_PACK_BYTES = 512 * 1024


def pack_records(records: list[bytes]) -> list[bytes]:
    """Length-prefixed records after a magic header, split so no pack exceeds MAX_PACK_BYTES."""
    return [pack(records[start:end]) for start, end in pack_spans([len(r) for r in records])]


def pack_spans(sizes: list[int], limit: int = MAX_PACK_BYTES) -> list[tuple[int, int]]:
    """``(start, end)`` of each pack of records of these sizes, none over ``limit`` bytes (MAX_PACK_BYTES
    or the lane topic's record limit when that is lower); a record over the limit goes alone."""
    spans: list[tuple[int, int]] = []
    start, size = 0, len(PACK_MAGIC)
    for index, record_size in enumerate(sizes):
        if size + 4 + record_size > limit and index > start:
            spans.append((start, index))
            start, size = index, len(PACK_MAGIC)
        size += 4 + record_size
    if sizes:
        spans.append((start, len(sizes)))
    return spans


def pack(records: list[bytes]) -> bytes:
    """One lane message holding ``records`` in order."""
    parts = [PACK_MAGIC]
    for record in records:
        parts += [len(record).to_bytes(4, "big"), record]
    return b"".join(parts)


def unpack_records(data: bytes) -> list[bytes]:
    """The records of a pack; a lane message that is not a pack is one record."""
    if not data.startswith(PACK_MAGIC):
        return [data]
    records, pos = [], len(PACK_MAGIC)
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise LaneFramingError("truncated record in lane pack")
        records.append(data[pos : pos + size])
        pos += size
    return records
