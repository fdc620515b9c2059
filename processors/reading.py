"""Fast reading of ingest records in the worker: timestamps as epoch milliseconds, not ``datetime``.

The engine turns every ``timestamp-millis`` field back into epoch milliseconds (``engine.to_ms``), and
fastavro's building of ``datetime`` objects for them (three per EventRecord) was about a third of the
worker's decoding time. Records written with a current schema in single-object framing are read with a copy
of that schema whose logical types are plain longs (the same bytes on the wire); anything else (history
versions, Confluent framing, unknown records) goes through the shared serde, whose result the engine reads
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inflow.schemas.avro_reader import Reader, raw_after, record_reader, span_reader
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PACK_RECORD
from inflow.schemas.plain import plain_schema, read_plain
from inflow.schemas.serde import AvroSerde

FAST = ("UserUpsert", "DeviceUpsert", "EventRecord", PACK_RECORD)
HEADER_SIZE = 10
EVENT = "EventRecord"
# What an event run passes on from an event's bytes (LaneProcessor.raw_event), in the schema's order.
RAW_EVENT = {
    "event_uuid": "both",
    "action": "both",
    "attributes_json": "both",
    "platform": "enc",
    "user_time": "long",
    "origin": "null",
}
RawEvent = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(slots=True)
class PackDecoder:
    """The readers of one pack's items, in order (see :meth:`IngestReader.pack_decoder`)."""

    decode: Callable[[bytes], tuple[str, dict[str, Any]]]
    # An event whose shared fields are the event before's: its RAW_EVENT fields and the record before
    # (whose shared fields it has); None when it is not such an event (then ``decode`` it).
    raw: Callable[[bytes], RawEvent | None]


class IngestReader:
    """``decode(bytes) -> (record name, record)`` like :meth:`AvroSerde.decode`, faster for ingest records:
    a compiled reader (:mod:`~inflow.schemas.avro_reader`) where the schema is flat, fastavro with the plain
    schema otherwise."""

    def __init__(self, serde: AvroSerde, names: tuple[str, ...] = FAST) -> None:
        self._serde = serde
        self._plain: dict[bytes, tuple[str, Any]] = {}
        self._compiled: dict[bytes, tuple[str, Reader]] = {}
        events = serde.catalog.get(EVENT)
        # The fields one Bulk event element repeats for each of its actions.
        self._events = span_reader(events.schema, "workspace_id", "device_id")
        self._raw_event = raw_after(events.schema, "workspace_id", "device_id", RAW_EVENT)
        self._event_header = events.header
        for name in names:
            entry = serde.catalog.get(name)
            read = record_reader(entry.schema)
            if read is not None:
                self._compiled[entry.header] = (entry.name, read)
            else:
                self._plain[entry.header] = (entry.name, plain_schema(entry.schema))

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        header = data[:HEADER_SIZE]
        compiled = self._compiled.get(header)
        if compiled is not None:
            name, read = compiled
            try:
                record, end = read(data, HEADER_SIZE)
            except Exception as exc:  # IndexError, ValueError, UnicodeDecodeError: as read_plain names them
                raise _refused(name, exc) from exc
            if end != len(data):
                raise _trailing(name, data, end)
            return name, record
        known = self._plain.get(header)
        if known is None:
            return self._serde.decode(data)
        name, schema = known
        return name, read_plain(data, HEADER_SIZE, schema, name)

    def pack_decoder(self) -> PackDecoder:
        """:meth:`decode` for the items of one pack, in order: an EventRecord whose workspace, request,
        user and device fields are the same bytes as in the event read before it (the events of one
        element) is read from its other fields only (:class:`~inflow.schemas.avro_reader.SpanReader`);
        ``raw`` takes such an event's fields without reading it into a record (an event run's path)."""
        span, header, raw_event = self._events, self._event_header, self._raw_event
        if span is None or raw_event is None:
            return PackDecoder(self.decode, lambda data: None)
        shared: bytes | None = None
        before: dict[str, Any] = {}

        def raw(data: bytes) -> RawEvent | None:
            if shared is None or data[:HEADER_SIZE] != header:
                return None
            try:
                got = raw_event(data, HEADER_SIZE, shared)
            except Exception:  # malformed: decode() says why
                return None
            return None if got is None else (got, before)

        def decode(data: bytes) -> tuple[str, dict[str, Any]]:
            nonlocal shared, before
            if data[:HEADER_SIZE] != header:
                shared = None  # another record in between: the next event is read whole
                return self.decode(data)
            try:
                got = None if shared is None else span.read_after(data, HEADER_SIZE, shared, before)
                if got is None:
                    record, end, start, stop = span.read(data, HEADER_SIZE)
                    shared, before = data[start:stop], record
                else:
                    record, end = got
            except Exception as exc:  # as in decode
                shared = None
                raise _refused(EVENT, exc) from exc
            if end != len(data):
                shared = None
                raise _trailing(EVENT, data, end)
            return EVENT, record

        return PackDecoder(decode, raw)


def _refused(name: str, exc: Exception) -> SerdeError:
    return SerdeError(f"cannot decode {name}: {type(exc).__name__}: {exc or 'truncated data'}")


def _trailing(name: str, data: bytes, end: int) -> SerdeError:
    return SerdeError(f"cannot decode {name}: {len(data) - end} trailing bytes after the record body")
