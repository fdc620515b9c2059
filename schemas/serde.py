"""Avro serde for every Kafka record of Inflow, in the style of confluent-kafka-python's serializers.

Wire formats (docs/ARCHITECTURE.md, "Records on the wire"):

* single-object encoding (default): ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the
  schema's Parsing Canonical Form + Avro binary body; resolvable from ``schemas/`` alone;
* Confluent framing (when a Schema Registry is configured): ``00`` + 4-byte big-endian schema id + body.

Decoders accept both. The writer schema is found by fingerprint among the current schemas and the older
versions in ``schemas/history/`` (or by registry id), and the record is read with the *current* schema as
reader schema, so bytes written before a backward-compatible change decode into current records.

Values: ``timestamp-millis`` fields accept epoch milliseconds (int) or an aware ``datetime`` and decode to
an aware UTC ``datetime`` (fastavro's logical-type mapping).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from inflow.schemas.catalog import (
    SCHEMA_DIR,
    SINGLE_OBJECT_MAGIC,
    Catalog,
    SchemaEntry,
    fingerprint_of,
    load_catalog,
)
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.registry import SchemaRegistry, SchemaRegistryClient

Record = dict[str, Any]
Encoder = Callable[[Mapping[str, Any]], bytes]

SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_SIZE = 5


@dataclass(frozen=True, slots=True)
class _Reader:
    """How to read one writer schema: the writer's parsed form and, when it differs, the current reader."""

    name: str
    full_name: str
    label: str
    writer: Any
    reader: Any  # None when the writer schema is the current one (no resolution needed)


class AvroSerde:
    """Encode and decode Inflow records; one instance per process, cheap to share between threads."""

    def __init__(
        self,
        schema_registry_url: str | None = None,
        *,
        registry: SchemaRegistry | None = None,
        schema_dir: Path = SCHEMA_DIR,
        history_dir: Path | None = None,
        strict: bool = True,
    ) -> None:
        """``registry`` (any object with register/schema_by_id) wins over ``schema_registry_url``.

        ``strict`` rejects records with unknown keys or a missing field that has no default, so a typo
        cannot silently drop data.
        """
        self._catalog: Catalog = load_catalog(schema_dir, history_dir)
        self._schema_dir = schema_dir
        self._history_dir = history_dir or schema_dir / "history"
        self._registry = registry or (
            SchemaRegistryClient(schema_registry_url) if schema_registry_url else None
        )
        self._strict = strict
        self._encoders: dict[tuple[str, str | None], Encoder] = {}
        self._by_fingerprint = {
            fp: _reader_for(e, self._catalog) for fp, e in self._catalog.by_fingerprint.items()
        }
        self._by_id: dict[int, _Reader] = {}

    @property
    def catalog(self) -> Catalog:
        """The schemas this serde reads and writes."""
        return self._catalog

    @property
    def framing(self) -> str:
        """``"confluent"`` when a registry is configured, else ``"single-object"``."""
        return "confluent" if self._registry is not None else "single-object"

    def encoder(self, record_name: str, *, topic: str | None = None) -> Encoder:
        """A bound encoder for one record type, for hot loops (no per-call lookups).

        With a registry the schema is registered once under ``<topic>-value`` (or ``<full name>-value``).
        """
        encoder = self._encoders.get((record_name, topic))
        if encoder is None:
            entry = self._catalog.get(record_name)
            encoder = self._encoders.get((entry.full_name, topic))
            if encoder is None:
                encoder = _make_encoder(entry, self._header_for(entry, topic), self._strict)
                self._encoders[(entry.full_name, topic)] = encoder
            self._encoders[(record_name, topic)] = encoder
        return encoder

    def encode(self, record_name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Encode one record of the named type with the configured framing."""
        return self.encoder(record_name, topic=topic)(record)

    def encode_many(
        self, record_name: str, records: Iterable[Mapping[str, Any]], *, topic: str | None = None
    ) -> list[bytes]:
        """Encode a batch of records of one type."""
        encode = self.encoder(record_name, topic=topic)
        return [encode(record) for record in records]

    def decode(self, data: bytes | bytearray | memoryview, expected: str | None = None) -> tuple[str, Record]:
        """Decode either framing into ``(short record name, record)``; ``expected`` guards the record type."""
        reader, offset = self._resolve(data)
        if expected is not None and expected not in (reader.name, reader.full_name):
            raise SerdeError(f"expected record {expected} but the message was written as {reader.full_name}")
        return reader.name, _read_body(reader, data, offset)

    def _header_for(self, entry: SchemaEntry, topic: str | None) -> bytes:
        """Single-object header, or register the schema and build the Confluent header."""
        if self._registry is None:
            return entry.header
        subject = f"{topic or entry.full_name}-value"
        try:
            schema_id = self._registry.register(subject, json.dumps(entry.schema, separators=(",", ":")))
        except SerdeError:
            raise
        except Exception as exc:
            raise SerdeError(f"cannot register {entry.name} under subject {subject}: {exc}") from exc
        if not 0 <= schema_id < 2**32:
            raise SerdeError(f"schema registry returned id {schema_id} for {subject}, outside 0..2^32-1")
        self._by_id.setdefault(schema_id, _reader_for(entry, self._catalog))
        return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")

    def _resolve(self, data: bytes | bytearray | memoryview) -> tuple[_Reader, int]:
        """Find the writer schema from the framing header; returns the reader and the body offset."""
        size = len(data)
        if size >= SINGLE_OBJECT_HEADER_SIZE and data[:2] == SINGLE_OBJECT_MAGIC:
            fingerprint = bytes(data[2:SINGLE_OBJECT_HEADER_SIZE])
            reader = self._by_fingerprint.get(fingerprint)
            if reader is None:
                raise SerdeError(
                    f"unknown schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, little-endian): "
                    f"not a current schema in {self._schema_dir} nor a version in {self._history_dir} "
                    "(written by a newer schema version not deployed here?)"
                )
            return reader, SINGLE_OBJECT_HEADER_SIZE
        if size >= CONFLUENT_HEADER_SIZE and data[0] == CONFLUENT_MAGIC:
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
            return self._reader_for_id(schema_id), CONFLUENT_HEADER_SIZE
        raise SerdeError(_framing_problem(data))

    def _reader_for_id(self, schema_id: int) -> _Reader:
        """Resolve a Confluent schema id through the registry once, then from the cache."""
        reader = self._by_id.get(schema_id)
        if reader is not None:
            return reader
        if self._registry is None:
            raise SerdeError(
                f"Confluent-framed message (schema id {schema_id}) but no Schema Registry is configured"
            )
        try:
            schema = self._registry.schema_by_id(schema_id)
        except SerdeError:
            raise
        except Exception as exc:
            raise SerdeError(f"cannot fetch schema id {schema_id} from the registry: {exc}") from exc
        reader = self._reader_for_schema(schema, f"schema id {schema_id}")
        self._by_id[schema_id] = reader
        return reader

    def _reader_for_schema(self, schema: dict[str, Any], source: str) -> _Reader:
        """Reader for a registry schema: ours by fingerprint, else resolved into our current one."""
        try:
            parsed = parse_schema(schema)
            _, fingerprint = fingerprint_of(parsed)
        except Exception as exc:
            raise SerdeError(f"invalid Avro schema for {source}: {exc}") from exc
        known = self._by_fingerprint.get(fingerprint)
        if known is not None:
            return known
        full_name = str(parsed.get("name", "")) if isinstance(parsed, dict) else ""
        current = self._catalog.current.get(full_name)
        if current is None:
            raise SerdeError(
                f"{source} is record {full_name or '?'}, which has no schema in {self._schema_dir}"
            )
        return _Reader(current.name, current.full_name, f"{current.name} ({source})", parsed, current.parsed)


def _reader_for(entry: SchemaEntry, catalog: Catalog) -> _Reader:
    """Reader for a catalogue entry: history versions resolve into the current schema of the same name."""
    current = catalog.current[entry.full_name]
    resolve_into = None if entry is current else current.parsed
    return _Reader(entry.name, entry.full_name, entry.label, entry.parsed, resolve_into)


def _make_encoder(entry: SchemaEntry, header: bytes, strict: bool) -> Encoder:
    """Close over the parsed schema and precomputed header so each call is one fastavro write."""
    parsed, name = entry.parsed, entry.name

    def encode(record: Mapping[str, Any]) -> bytes:
        buffer = BytesIO()
        buffer.write(header)
        try:
            schemaless_writer(buffer, parsed, record, strict_allow_default=strict)
        except Exception as exc:  # fastavro raises ValueError, TypeError, AttributeError, OverflowError...
            raise SerdeError(f"cannot encode {name}: {type(exc).__name__}: {exc}") from exc
        return buffer.getvalue()

    return encode


def _read_body(reader: _Reader, data: bytes | bytearray | memoryview, offset: int) -> Record:
    """Read the Avro body after the header; leftover bytes mean corruption or a wrong schema."""
    buffer = BytesIO(data)
    buffer.seek(offset)
    try:
        record = schemaless_reader(buffer, reader.writer, reader.reader)
    except Exception as exc:  # EOFError, UnicodeDecodeError, SchemaResolutionError, IndexError...
        reason = str(exc) or "truncated data"
        raise SerdeError(f"cannot decode {reader.label}: {type(exc).__name__}: {reason}") from exc
    trailing = len(data) - buffer.tell()
    if trailing:
        raise SerdeError(f"cannot decode {reader.label}: {trailing} trailing bytes after the record body")
    if not isinstance(record, dict):
        raise SerdeError(f"cannot decode {reader.label}: body is not a record")
    return record


def _framing_problem(data: bytes | bytearray | memoryview) -> str:
    """Say precisely why a message is neither single-object nor Confluent framed."""
    expected = "expected single-object C3 01 or Confluent 00"
    if len(data) == 0:
        return f"empty message: no Avro framing ({expected})"
    first = data[0]
    if first == CONFLUENT_MAGIC:
        return f"truncated Confluent header: {len(data)} bytes, need {CONFLUENT_HEADER_SIZE}"
    if first == SINGLE_OBJECT_MAGIC[0] and len(data) == 1 or data[:2] == SINGLE_OBJECT_MAGIC:
        return f"truncated single-object header: {len(data)} bytes, need {SINGLE_OBJECT_HEADER_SIZE}"
    if first == SINGLE_OBJECT_MAGIC[0]:
        return f"unknown Avro framing: first bytes 0xc3 0x{data[1]:02x}; {expected}"
    return f"unknown Avro framing: first byte 0x{first:02x}; {expected}"


_default_serde: AvroSerde | None = None


def default_serde() -> AvroSerde:
    """A process-wide single-object serde over ``schemas/`` for callers without a registry."""
    global _default_serde
    if _default_serde is None:
        _default_serde = AvroSerde()
    return _default_serde
