"""Bundles: a batch's seen marks sent to their changelog as a few records instead of one per event.

Every applied record leaves a seen mark (de-duplication on event_uuid), so with one changelog record per
mark the seen changelog carried as many records as the events topic, and the worker paid a producer call
(and the broker a record) for each. A batch's marks of one lane partition now travel as bundles: a record
whose key starts with :data:`BUNDLE_PREFIX` (a NUL byte, which no state key starts with) and whose value
holds the marks (``key``, ``value`` or a delete) in the order written. Each bundle's key is unique, so
compaction never drops one; the seen changelog's retention (the de-duplication window) deletes them, as it
deleted single marks. The restorer expands bundles into their marks (:func:`expand`); single mark records
written before bundles existed are restored as they were.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from inflow.schemas.avro_template import long_bytes, read_long

BUNDLE_PREFIX = b"\x00inflow\x00bundle\x00"
OVERHEAD = 24  # bytes an entry may add in a bundle beyond its key and value (varints), with margin
KEY_ROOM = 96  # a bundle's key: the prefix, a partition, nanoseconds and an index, with margin
Write = tuple[bytes, bytes | None]


def bundle_key(partition: int, index: int) -> bytes:
    """Unique per bundle: partition, the time it was made, its index in the batch."""
    return BUNDLE_PREFIX + f"{partition}:{time.time_ns()}:{index}".encode()


def encode(writes: Iterable[Write]) -> bytes:
    parts: list[bytes] = []
    for key, value in writes:
        _entry(parts, key, value)
    return b"".join(parts)


_DELETED = long_bytes(-1)


def _entry(parts: list[bytes], key: bytes, value: bytes | None) -> int:
    """Append one mark's encoding to ``parts``; the bytes it takes in a bundle, at most (with margin)."""
    parts.append(long_bytes(len(key)))
    parts.append(key)
    if value is None:
        parts.append(_DELETED)
        return len(key) + OVERHEAD
    parts.append(long_bytes(len(value)))
    parts.append(value)
    return len(key) + len(value) + OVERHEAD


def chunks(writes: list[Write], room: int) -> list[bytes]:
    """``writes`` in order as bundles of at most ``room`` bytes (an entry over ``room`` alone is never made:
    the lane rejects the record whose mark it would be). One pass: each mark is encoded as it is sized."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for key, value in writes:
        mark = len(parts)
        grow = _entry(parts, key, value)
        if mark and size + grow > room:  # this mark starts the next bundle
            out.append(b"".join(parts[:mark]))
            del parts[:mark]
            size = 0
        size += grow
    if parts:
        out.append(b"".join(parts))
    return out


def decode(data: bytes) -> list[Write]:
    """The marks of a bundle, in order; ValueError when it is truncated."""
    writes: list[Write] = []
    pos, end = 0, len(data)
    while pos < end:
        length, pos = read_long(data, pos)
        key = data[pos : pos + length]
        pos += length
        length, pos = read_long(data, pos)
        if length < 0:
            writes.append((key, None))
            continue
        writes.append((key, data[pos : pos + length]))
        pos += length
    if pos != end:
        raise ValueError("truncated bundle")
    return writes


def expand(records: list[Write]) -> list[Write]:
    """Changelog records with every bundle replaced by its marks (other records as they are)."""
    if not any(key.startswith(BUNDLE_PREFIX) for key, _ in records):
        return records
    out: list[Write] = []
    for key, value in records:
        if key.startswith(BUNDLE_PREFIX):
            out += decode(value or b"")
        else:
            out.append((key, value))
    return out
