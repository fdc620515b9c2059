"""The workers' own messages on ``ingest.records``: forwards, identifier claims, merges, state moves.

They travel on the ingest topic itself, produced to an explicit partition, so each partition's log is the
one ordered history of everything that changes its state: records from the gateway and the importer, and
what other partitions' workers ask of it. ``docs/IDENTITY.md`` describes the protocol and its failure
cases. Framing: ``MAGIC``, a 4-byte header length, the header (JSON), then an opaque payload (the
forwarded Avro record, or packed state writes). Avro ingest records start with ``\\xc3\\x01`` or ``\\x00``,
so the two never mix up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inflow.processors import jsoncodec
from inflow.processors.exceptions import LaneFramingError

MAGIC = b"\xf0IPR1"
FORWARD = "fwd"  # an ingest record applied where its user lives   {ws, slot | None} + record bytes
CLAIM = "claim"  # identifier value -> slot, at the value's home    {ws, name, value, slot}
SHIP = "ship"  # send slot ``hi``'s user to slot ``lo`` (lo < hi)     {ws, hi, lo, retain?}
CARRY = "carry"  # a user's profile and devices, merged at ``to``   {ws, frm, to, profile, devices, retain?}
REPOINT = "repoint"  # an index entry that named ``frm`` names ``to``  {ws, name, value, frm, to}
MERGE = "merge"  # a Merge User request, at the retained user's entry  {ws, value, slot, request}
RELEASE = "release"  # an erased user's index entry is deleted      {ws, name, value, slots}
MOVE = "move"  # state written under a new partition count          {epoch, frm} + packed writes
MARK = "mark"  # partition ``frm`` finished moving for ``epoch``      {epoch, frm, old}
KINDS = frozenset({FORWARD, CLAIM, SHIP, CARRY, REPOINT, MERGE, RELEASE, MOVE, MARK})


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    header: dict[str, Any]
    payload: bytes = b""


def is_protocol(data: bytes) -> bool:
    return data[:5] == MAGIC


def encode(kind: str, header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = jsoncodec.dumps_bytes({"k": kind, **header})
    return b"".join((MAGIC, len(head).to_bytes(4, "big"), head, payload))


def decode(data: bytes) -> Message:
    if not is_protocol(data) or len(data) < 9:
        raise LaneFramingError("not a worker protocol message")
    size = int.from_bytes(data[5:9], "big")
    if 9 + size > len(data):
        raise LaneFramingError("truncated worker protocol message")
    try:
        header = jsoncodec.loads(data[9 : 9 + size])
    except ValueError as exc:
        raise LaneFramingError(f"worker protocol header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("k") not in KINDS:
        raise LaneFramingError(f"unknown worker protocol message {str(header)[:80]!r}")
    kind = header.pop("k")
    return Message(kind, header, bytes(data[9 + size :]))


def pack_writes(writes: list[tuple[int, bytes, bytes]]) -> bytes:
    """State writes ``(table index, key, value)`` as one payload."""
    parts = []
    for table, key, value in writes:
        parts += [bytes([table]), len(key).to_bytes(4, "big"), key, len(value).to_bytes(4, "big"), value]
    return b"".join(parts)


def unpack_writes(payload: bytes) -> list[tuple[int, bytes, bytes]]:
    writes, pos = [], 0
    while pos < len(payload):
        table = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 5], "big")
        key = payload[pos + 5 : pos + 5 + size]
        pos += 5 + size
        size = int.from_bytes(payload[pos : pos + 4], "big")
        value = payload[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if pos > len(payload):
            raise LaneFramingError("truncated state move")
        writes.append((table, bytes(key), bytes(value)))
    return writes
