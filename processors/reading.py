"""Fast reading of ingest records in the worker: timestamps as epoch milliseconds, not ``datetime``.

The engine turns every ``timestamp-millis`` field back into epoch milliseconds (``engine.to_ms``), and
fastavro's building of ``datetime`` objects for them (three per EventRecord) was about a third of the
worker's decoding time. Records written with a current schema in single-object framing are read with a copy
of that schema whose logical types are plain longs (the same bytes on the wire); anything else (history
versions, Confluent framing, unknown records) goes through the shared serde, whose result the engine reads
the same way.
"""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PACK_RECORD
from inflow.schemas.serde import AvroSerde

FAST = ("UserUpsert", "DeviceUpsert", "EventRecord", PACK_RECORD)
HEADER_SIZE = 10


class IngestReader:
    """``decode(bytes) -> (record name, record)`` like :meth:`AvroSerde.decode`, faster for ingest records."""

    def __init__(self, serde: AvroSerde, names: tuple[str, ...] = FAST) -> None:
        self._serde = serde
        self._plain: dict[bytes, tuple[str, Any]] = {}
        for name in names:
            entry = serde.catalog.get(name)
            self._plain[entry.header] = (entry.name, _plain_schema(entry.schema))

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        known = self._plain.get(data[:HEADER_SIZE])
        if known is None:
            return self._serde.decode(data)
        name, schema = known
        buffer = BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buffer, schema, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError... as in the serde
            raise SerdeError(
                f"cannot decode {name}: {type(exc).__name__}: {exc or 'truncated data'}"
            ) from exc
        if buffer.tell() != len(data):
            raise SerdeError(
                f"cannot decode {name}: {len(data) - buffer.tell()} trailing bytes after the record body"
            )
        return name, record  # type: ignore[return-value]


def _plain_schema(schema: dict[str, Any]) -> Any:
    """The schema with ``timestamp-millis`` fields as plain longs, under its own name (fastavro's named
    schema registry keeps both)."""
    plain = copy.deepcopy(schema)
    plain["name"] = f"{plain['name']}Plain"
    for field in plain["fields"]:
        kind = field["type"]
        if isinstance(kind, dict) and "logicalType" in kind:
            field["type"] = kind["type"]
        elif isinstance(kind, list):
            field["type"] = [k["type"] if isinstance(k, dict) and "logicalType" in k else k for k in kind]
    return parse_schema(plain)
