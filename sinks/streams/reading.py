"""Fast reading of EnrichedEvent records for the export loop.

The sink never uses the two ``timestamp-millis`` fields, and building ``datetime`` objects for them is a
third of fastavro's decoding time. Records written with the current schema in single-object framing are
read with a copy of the schema whose logical types are plain longs (same bytes on the wire); anything else
(history versions, Confluent framing) goes through the shared serde.
"""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde

RECORD = "EnrichedEvent"


class EnrichedEventReader:
    """``read(bytes) -> dict`` with the fast path for the current schema."""

    def __init__(self, serde: AvroSerde) -> None:
        entry = serde.catalog.get(RECORD)
        plain = copy.deepcopy(entry.schema)
        plain["name"] = f"{RECORD}Plain"  # its own name, so fastavro's named-schema registry keeps both
        for field in plain["fields"]:
            if isinstance(field["type"], dict) and "logicalType" in field["type"]:
                field["type"] = field["type"]["type"]
        self._plain = parse_schema(plain)
        self._header = entry.header
        self._header_size = len(entry.header)
        self._serde = serde

    def read(self, data: bytes) -> dict[str, Any]:
        if data[: self._header_size] != self._header:
            return self._serde.decode(data, RECORD)[1]
        buffer = BytesIO(data)
        buffer.seek(self._header_size)
        try:
            record = schemaless_reader(buffer, self._plain, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError... as in the serde
            raise SerdeError(
                f"cannot decode {RECORD}: {type(exc).__name__}: {exc or 'truncated data'}"
            ) from exc
        if buffer.tell() != len(data):
            raise SerdeError(
                f"cannot decode {RECORD}: {len(data) - buffer.tell()} trailing bytes after the record body"
            )
        return record  # type: ignore[return-value]
