"""A per-file Avro encoder for the import's hot loop: the fields that are the same for every row of a file
(workspace, run id, source, event name, nulls) are encoded once by fastavro, and only the fields that vary
per row (uuid, user id, attributes, time, origin) are encoded per row. Avro's binary encoding of a record is
the concatenation of its fields' encodings, so the spliced bytes are exactly fastavro's.

It is built from the schema at run time and checked against fastavro on the first row of every file; if a
field type is not one it knows, or the bytes differ, the plain fastavro encoder is used instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_writer

from schemas.serde import AvroSerde, Encoder

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FieldEncoder = Callable[[Any], bytes]


def _long(n: int) -> bytes:
    """Zig-zag varint, as Avro writes int and long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_LENGTHS = tuple(_long(n) for n in range(4096))  # string lengths are nearly always short


def _string(value: str) -> bytes:
    data = value.encode()
    n = len(data)
    return (_LENGTHS[n] if n < 4096 else _long(n)) + data


def _timestamp_millis(value: datetime) -> bytes:
    delta = value - _EPOCH  # as fastavro: whole milliseconds of the difference to the epoch
    return _long((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _string_map(value: Mapping[str, str]) -> bytes:
    if not value:
        return b"\x00"
    parts = [_long(len(value))]
    for k, v in value.items():
        parts.append(_string(k))
        parts.append(_string(v))
    parts.append(b"\x00")
    return b"".join(parts)


def _nullable(inner: FieldEncoder) -> FieldEncoder:
    def encode(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x02" + inner(value)

    return encode


def _field_encoder(schema: Any) -> FieldEncoder | None:
    """An encoder for the field types import records vary on; None for anything else."""
    if schema == "string":
        return _string
    if schema in ("long", "int"):
        return _long
    if schema == "boolean":
        return lambda v: b"\x01" if v else b"\x00"
    if isinstance(schema, dict):
        if schema.get("type") == "long" and schema.get("logicalType") == "timestamp-millis":
            return _timestamp_millis
        if schema.get("type") == "map" and schema.get("values") == "string":
            return _string_map
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        inner = _field_encoder(schema[1])
        return _nullable(inner) if inner else None
    return None


def _constant(schema: Any, value: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, value)
    return buffer.getvalue()


def template_encoder(
    serde: AvroSerde, record_name: str, topic: str, constants: Mapping[str, Any], sample: Mapping[str, Any]
) -> Encoder:
    """An encoder for records whose ``constants`` fields never change; fastavro's when it cannot be one."""
    plain = serde.encoder(record_name, topic=topic)
    expected = plain(sample)
    header = expected[: 5 if serde.framing == "confluent" else 10]
    consts: list[bytes] = [header]  # constant bytes before, between and after the varying fields
    varying: list[tuple[str, FieldEncoder]] = []
    for field in serde.catalog.get(record_name).parsed["fields"]:
        name, schema = field["name"], field["type"]
        if name in constants or (name not in sample and "default" in field):
            consts[-1] += _constant(schema, constants[name] if name in constants else field["default"])
            continue
        encoder = _field_encoder(schema)
        if encoder is None:
            return plain
        varying.append((name, encoder))
        consts.append(b"")
    first, steps = (
        consts[0],
        tuple((name, fn, const) for (name, fn), const in zip(varying, consts[1:], strict=True)),
    )

    def encode(record: Mapping[str, Any]) -> bytes:
        out = [first]
        for name, fn, const in steps:
            out.append(fn(record[name]))
            out.append(const)
        return b"".join(out)

    try:
        same = encode(sample) == expected
    except (KeyError, TypeError, AttributeError, ValueError):
        same = False
    return encode if same else plain
