"""Fast reading of EnrichedEvent records for the export loop.

fastavro's ``schemaless_reader`` costs about 20 µs for one EnrichedEvent (its per-call setup dominates a
record this small), which was a third of the sink's CPU per delivered event. Records written with the
current schema in single-object framing are read by a decoder compiled here from that schema: straight-line
Python over the bytes (one slice and ``decode`` per string, varints of one byte read inline), a few µs per
record (:func:`inflow.schemas.avro_reader.record_reader`, the worker's reader of ingest records, tested
against fastavro there); the fields the sink never reads (``platform`` and the two timestamps) are stepped
over, not decoded, and left out of the dict. Otherwise, and for anything else (history versions, Confluent
framing), records go through the plain reader of :mod:`inflow.schemas.plain` or the shared serde.
Truncated, malformed or trailing bytes are a :class:`~inflow.schemas.exceptions.SerdeError`, as there.
"""

from __future__ import annotations

from typing import Any

from inflow.schemas.avro_reader import record_reader
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.plain import plain_schema, read_plain
from inflow.schemas.serde import AvroSerde

RECORD = "EnrichedEvent"
# Fields the sink never reads: checked and stepped over, not decoded (not in the records read here).
UNUSED = frozenset({"platform", "received_at", "ingested_at"})


class EnrichedEventReader:
    """``read(bytes) -> dict`` with the fast path for the current schema."""

    def __init__(self, serde: AvroSerde) -> None:
        entry = serde.catalog.get(RECORD)
        self._plain = plain_schema(entry.schema)
        self._header = entry.header
        self._header_size = len(entry.header)
        self._serde = serde
        self._fast = record_reader(entry.schema, UNUSED)

    def read(self, data: bytes) -> dict[str, Any]:
        if data[: self._header_size] != self._header:
            return self._serde.decode(data, RECORD)[1]
        if self._fast is not None:
            try:
                record, end = self._fast(data, self._header_size)
            except Exception as exc:  # IndexError, UnicodeDecodeError, ValueError... as in read_plain
                raise SerdeError(f"cannot decode {RECORD}: {type(exc).__name__}: {exc}") from exc
            if end != len(data):
                raise SerdeError(f"cannot decode {RECORD}: {len(data) - end} trailing bytes after the record")
            return record
        return read_plain(data, self._header_size, self._plain, RECORD)
