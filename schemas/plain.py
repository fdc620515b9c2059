"""Reading Avro records with ``timestamp-millis`` fields as plain epoch milliseconds.

fastavro builds a ``datetime`` for every ``timestamp-millis`` field, which is about a third of its decoding
time for our records; readers that only need the milliseconds (the worker, the streams sink) read records of
a current schema with a copy of it whose logical types are plain longs (the same bytes on the wire).
"""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from inflow.schemas.exceptions import SerdeError


def plain_schema(schema: dict[str, Any]) -> Any:
    """The parsed schema with ``timestamp-millis`` fields (also inside unions) as plain longs, under its
    own name (fastavro's named-schema registry keeps both)."""
    plain = copy.deepcopy(schema)
    plain["name"] = f"{plain['name']}Plain"
    for field in plain["fields"]:
        kind = field["type"]
        if isinstance(kind, dict) and "logicalType" in kind:
            field["type"] = kind["type"]
        elif isinstance(kind, list):
            field["type"] = [k["type"] if isinstance(k, dict) and "logicalType" in k else k for k in kind]
    return parse_schema(plain)


def read_plain(data: bytes, header_size: int, schema: Any, name: str) -> dict[str, Any]:
    """The record after a ``header_size``-byte framing header, read with ``schema`` (from
    :func:`plain_schema`); :class:`SerdeError` for truncated, malformed or trailing bytes, as the serde."""
    buffer = BytesIO(data)
    buffer.seek(header_size)
    try:
        record = schemaless_reader(buffer, schema, None)
    except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError... as in the serde
        raise SerdeError(f"cannot decode {name}: {type(exc).__name__}: {exc or 'truncated data'}") from exc
    if buffer.tell() != len(data):
        raise SerdeError(
            f"cannot decode {name}: {len(data) - buffer.tell()} trailing bytes after the record body"
        )
    return record  # type: ignore[return-value]
