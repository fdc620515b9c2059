"""Fast reading of ingest records in the worker: timestamps as epoch milliseconds, not ``datetime``.

The engine turns every ``timestamp-millis`` field back into epoch milliseconds (``engine.to_ms``), and
fastavro's building of ``datetime`` objects for them (three per EventRecord) was about a third of the
worker's decoding time. Records written with a current schema in single-object framing are read with a copy
of that schema whose logical types are plain longs (the same bytes on the wire); anything else (history
versions, Confluent framing, unknown records) goes through the shared serde, whose result the engine reads
the same way.
"""

from __future__ import annotations

from typing import Any

from inflow.schemas.avro_reader import Reader, record_reader
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PACK_RECORD
from inflow.schemas.plain import plain_schema, read_plain
from inflow.schemas.serde import AvroSerde

FAST = ("UserUpsert", "DeviceUpsert", "EventRecord", PACK_RECORD)
HEADER_SIZE = 10


class IngestReader:
    """``decode(bytes) -> (record name, record)`` like :meth:`AvroSerde.decode`, faster for ingest records:
    a compiled reader (:mod:`~inflow.schemas.avro_reader`) where the schema is flat, fastavro with the plain
    schema otherwise."""

    def __init__(self, serde: AvroSerde, names: tuple[str, ...] = FAST) -> None:
        self._serde = serde
        self._plain: dict[bytes, tuple[str, Any]] = {}
        self._compiled: dict[bytes, tuple[str, Reader]] = {}
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
                reason = f"{type(exc).__name__}: {exc or 'truncated data'}"
                raise SerdeError(f"cannot decode {name}: {reason}") from exc
            if end != len(data):
                trailing = len(data) - end
                raise SerdeError(f"cannot decode {name}: {trailing} trailing bytes after the record body")
            return name, record
        known = self._plain.get(header)
        if known is None:
            return self._serde.decode(data)
        name, schema = known
        return name, read_plain(data, HEADER_SIZE, schema, name)
