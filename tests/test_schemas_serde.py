"""The Avro schemas and serde: round trips, docs, wire format checked by Apache ``avro``, evolution, errors.

Pure tests (no Kafka); the Schema Registry client is exercised against a real local HTTP endpoint.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import avro.compatibility
import avro.io
import avro.schema
import pytest
import yaml
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from inflow.schemas.catalog import (
    HISTORY_DIR,
    SCHEMA_DIR,
    SchemaEntry,
    fingerprint_of,
    load_catalog,
    record_names,
    schema_json,
)
from inflow.schemas.exceptions import RegistryError, SerdeError
from inflow.schemas.registry import SchemaRegistryClient
from inflow.schemas.serde import AvroSerde, default_serde

T0 = datetime(2024, 4, 8, 9, 29, 45, 726000, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(seconds: float = 0) -> datetime:
    """A millisecond-precision UTC time near T0 (timestamp-millis keeps no microseconds)."""
    return T0 + timedelta(milliseconds=round(seconds * 1000))


SAMPLES: dict[str, dict[str, Any]] = {
    "UserUpsert": {
        "event_uuid": "0b5a3f4e-6f0d-4a61-9b38-3d2c9a7b1e01",
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "request_id": "oWvxnUuo",
        "received_at": ts(),
        "source": "api",
        "client_ip": "203.0.113.7",
        "customer_id": "john@example.com",
        "anonymous_id": None,
        "user_identifiers": {"moe_mobile": "+919876500001", "u_em": "john@example.com"},
        "update_existing_only": False,
        "attributes_json": json.dumps(
            {
                "name": "JohnDoe",
                "first_name": "John",
                "platforms": [{"platform": "ANDROID", "active": "true"}],
                "addValueToArrayField": {"interests": ["running"]},
            }
        ),
        "unset_attributes_json": json.dumps([{"type": "prefix", "attr": "tmp_", "case_sensitive": True}]),
        "origin": None,
    },
    "DeviceUpsert": {
        "event_uuid": "6d1f7c52-8f0e-5b8a-a2b4-1f0e9d8c7b02",
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "request_id": "run-20240408-0001",
        "received_at": ts(1),
        "source": "s3_import",
        "client_ip": None,
        "customer_id": "john@example.com",
        "anonymous_id": None,
        "device_id": "device-123",
        "attributes_json": json.dumps({"platform": "ANDROID", "push_id": "fcm:abc", "model": "Pixel 8"}),
        "origin": "devices-daily/devices_20240408.csv/17",
    },
    "EventRecord": {
        "event_uuid": "9e2c7d11-3a4b-4c5d-8e6f-7a8b9c0d1e03",
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "request_id": "oWvxnUuo",
        "received_at": ts(2),
        "source": "api",
        "client_ip": "198.51.100.23",
        "customer_id": None,
        "anonymous_id": None,
        "user_identifiers": {"moe_mobile": "+919876500001"},
        "device_id": "device-123",
        "action": "ProductAdded",
        "attributes_json": json.dumps({"product": "Accessories", "color": "Black", "Brand": "Adidas"}),
        "platform": "TV",
        "moe_os_type": "AndroidTV",
        "app_version": "1.2.3",
        "user_time": ts(-3600),
        "current_time": ts(-3600),
        "user_timezone_offset": 19800,
        "origin": None,
    },
    "UserProfile": {
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "uid": "6613a1b2c3d4e5f601234567",
        "customer_id": "john@example.com",
        "anonymous_ids": ["anon-1", "anon-2"],
        "identifiers": {"moe_mobile": "+919876500001"},
        "attributes_json": json.dumps(
            {"u_n": "JohnDoe", "u_em": "john@example.com", "interests": ["running"]}
        ),
        "platforms": ["ANDROID", "web"],
        "devices_json": json.dumps(
            [{"moengage_device_id": "d-1", "device_id": "device-123", "platform": "ANDROID"}]
        ),
        "first_seen": ts(-86400 * 30),
        "last_seen": ts(),
        "merged_into": None,
        "merged_uids": ["6613a1b2c3d4e5f609999999"],
        "updated_at": ts(3),
        "revision": 42,
        "deleted": False,
    },
    "EnrichedEvent": {
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "event_uuid": "9e2c7d11-3a4b-4c5d-8e6f-7a8b9c0d1e03",
        "event_name": "Notification Received Android",
        "event_code": "NOTIFICATION_RECEIVED_MOE",
        "event_time": 1580967474,
        "event_type": "CAMPAIGN_EVENT",
        "event_source": "MOENGAGE",
        "uid": "6613a1b2c3d4e5f601234567",
        "customer_id": "john@example.com",
        "event_attributes_json": json.dumps({"campaign_id": "c-1", "campaign_channel": "Push"}),
        "user_attributes_json": json.dumps(
            {"moengage_user_id": "6613a1b2c3d4e5f601234567", "u_n": "JohnDoe"}
        ),
        "device_attributes_json": json.dumps({"moengage_device_id": "d-1", "model": "Pixel 8"}),
        "push_id": "fcm:abc",
        "email_id": None,
        "mobile_number": None,
        "platform": "ANDROID",
        "received_at": ts(2),
        "ingested_at": ts(2.5),
    },
    "StreamBatch": {
        "stream_id": "analytics-endpoint",
        "moe_request_id": "5b1f0c0e-1c1d-4e2f-8a3b-4c5d6e7f8a90",
        "events_json": json.dumps([{"event_name": "ProductAdded", "event_uuid": "9e2c7d11"}]),
        "event_uuids": ["9e2c7d11-3a4b-4c5d-8e6f-7a8b9c0d1e03"],
        "attempt": 2,
        "attempts": [
            {"at": ts(10), "status": 503, "error": "503 Service Unavailable", "topic": "inflow.events"},
            {
                "at": ts(41),
                "status": None,
                "error": "timeout after 10 s",
                "topic": "inflow.streams.retry.30s",
            },
        ],
        "due_at": ts(101),
        "created_at": ts(9),
    },
    "WorkspaceCredential": {
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "key_hash": "scrypt$n=16384,r=8,p=1$c2FsdA$aGFzaA",
        "key_version": 2,
        "created_at": ts(-86400),
        "rotated_at": ts(-60),
        "disabled": False,
        "identifiers": ["moe_mobile", "u_em"],
        "users_per_minute": 10000,
        "events_per_minute": 30000,
        "projects": [{"code": "EU", "name": "Europe", "workspace_id": "ACME-EU"}],
    },
    "ImportLedgerEntry": {
        "import_name": "daily-users",
        "folder": "s3://acme-imports/users",
        "file_name": "users_20240408.csv",
        "state": "DONE",
        "owner": "poller-host1-4242",
        "run_id": "run-20240408-0001",
        "claimed_at": ts(-120),
        "updated_at": ts(),
        "status": "PARTIAL_SUCCESS",
        "etag": '"9b2cf535f27731c974343645a3985328"',
        "rows_acked": 10_000,
        "attempts": 1,
    },
    "ImportRun": {
        "run_id": "run-20240408-0001",
        "import_name": "daily-users",
        "folder": "s3://acme-imports/users",
        "file_name": "users_20240408.csv",
        "file_size": 1_048_576,
        "started_at": ts(-120),
        "completed_at": ts(),
        "rows_total": 10_000,
        "rows_added": 9_000,
        "rows_updated": 950,
        "rows_failed": 40,
        "rows_skipped": 10,
        "status": "PARTIAL_SUCCESS",
        "message": "40 rows failed: invalid mobile number",
        "error_report_key": "reports/run-20240408-0001.csv",
        "workspace_id": "ACME01",
        "import_type": "USERS",
        "attempt": 1,
        "rows_written": 9_990,
        "rows_applied": 9_990,
        "aux_data_added_count": 0,
        "aux_data_failed_count": 0,
        "updated_at": ts(),
    },
    "RecordOutcome": {
        "workspace_id": "ACME01",
        "event_uuid": "2d4f7c1e-9a3b-5c6d-8e7f-0a1b2c3d4e5f",
        "record_name": "UserUpsert",
        "origin": "daily-users/users_20240408.csv/17",
        "request_id": "run-20240408-0001",
        "outcome": "created",
        "reason": "",
        "applied_at": ts(),
    },
    "StreamState": {
        "stream_id": "analytics-endpoint",
        "paused": True,
        "mode": "resume",
        "changed_at": ts(),
        "paused_offsets_json": json.dumps({"inflow.events": {"0": 1200, "1": 1187}}),
        "paused_at": ts(-30),
    },
    "ImportDefinition": {
        "name": "daily-users",
        "workspace_id": "DAO6UGZ73D9RTK8B5W96TPYN",
        "definition_json": json.dumps(
            {"type": "registered_users", "bucket": "acme-imports", "secret": "enc:v1:abc"}
        ),
        "archived": False,
        "created_at": ts(-86400),
        "updated_at": ts(),
    },
    "StreamDefinition": {
        "stream_id": "analytics-endpoint",
        "definition_json": json.dumps({"url": "https://example.com/hook", "auth": {"type": "none"}}),
        "deleted": False,
        "updated_at": ts(),
    },
}


class InMemoryRegistry:
    """A Schema Registry stand-in with the two methods AvroSerde uses, ids assigned like Confluent's."""

    def __init__(self) -> None:
        self.subjects: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.lookups = 0

    def register(self, subject: str, schema_json: str) -> int:
        existing = [i for i, s in self.schemas.items() if s == schema_json]
        schema_id = existing[0] if existing else 100 + len(self.schemas)
        self.schemas[schema_id] = schema_json
        self.subjects[subject] = schema_id
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        self.lookups += 1
        return json.loads(self.schemas[schema_id])


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde()


def with_defaults(record_name: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a decoder returns for a record: every field, defaults where omitted."""
    fields = load_catalog().get(record_name).schema["fields"]
    return {f["name"]: record[f["name"]] if f["name"] in record else f["default"] for f in fields}


def sample(name: str) -> dict[str, Any]:
    """A realistic record of every field (fields added after the sample was written take their default).

    A record without a hand-written sample gets a generated one, so a new schema is covered at once.
    """
    if name not in SAMPLES:
        return generated(load_catalog().get(name).schema)
    return with_defaults(name, SAMPLES[name])


def generated(schema: Any) -> Any:
    """A deterministic value of every field of a schema (the non-null branch of optional ones)."""
    if isinstance(schema, list):
        return generated(next((b for b in schema if b != "null"), "null"))
    if isinstance(schema, str):
        primitives = {"null": None, "boolean": True, "int": 3, "long": 7, "float": 0.5, "double": 1.5}
        return {**primitives, "string": "x", "bytes": b"b"}[schema]
    if schema.get("logicalType") == "timestamp-millis":
        return T0
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: generated(f["type"]) for f in schema["fields"]}
    if kind == "array":
        return [generated(schema["items"])]
    if kind == "map":
        return {"k": generated(schema["values"])}
    if kind == "enum":
        return schema["symbols"][0]
    return generated(kind)


def walk_named(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record schema inside a schema (nested records in arrays, maps and unions included)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk_named(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            yield schema
            for field in schema["fields"]:
                yield from walk_named(field["type"])
        elif schema.get("type") == "array":
            yield from walk_named(schema["items"])
        elif schema.get("type") == "map":
            yield from walk_named(schema["values"])


def strip_logical_types(schema: Any) -> Any:
    """The schema with ``{"type": "long", "logicalType": ...}`` written as ``"long"``."""
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and isinstance(schema.get("type"), str) and len(schema) == 2:
            return schema["type"]
        return {k: strip_logical_types(v) for k, v in schema.items()}
    return schema


def avro_read(schema: dict[str, Any], body: bytes, reader: dict[str, Any] | None = None) -> Any:
    """Decode an Avro body with the Apache ``avro`` library, independent of fastavro."""
    writer_schema = avro.schema.parse(json.dumps(schema))
    reader_schema = avro.schema.parse(json.dumps(reader)) if reader else writer_schema
    datum_reader = avro.io.DatumReader(writer_schema, reader_schema)
    return datum_reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))


# --- the schema files -------------------------------------------------------------------------------


def test_one_file_per_record_and_samples_name_real_records() -> None:
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")) == record_names()
    assert set(SAMPLES) <= set(record_names())
    assert schema_json("StreamState") == json.loads((SCHEMA_DIR / "StreamState.avsc").read_text())
    assert schema_json("StreamState") is not schema_json("StreamState")
    for name in ("UserUpsert", "DeviceUpsert", "EventRecord", "UserProfile", "EnrichedEvent", "StreamBatch"):
        assert name in record_names()


def test_catalogue_parsed_once_and_indexed_by_short_and_full_name() -> None:
    assert load_catalog() is load_catalog()
    assert AvroSerde().catalog is AvroSerde().catalog
    catalog = load_catalog()
    for name in record_names():
        assert catalog.get(name) is catalog.get(f"io.inflow.{name}")
    with pytest.raises(
        SerdeError, match=r"unknown record 'Nope'; known records: AdminToken, AuditRecord, DeleteRequest, "
    ):
        catalog.get("Nope")


@pytest.mark.parametrize("path", sorted([*SCHEMA_DIR.glob("*.avsc"), *HISTORY_DIR.glob("*.avsc")]), ids=str)
def test_every_record_and_field_has_a_doc(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["namespace"] == "io.inflow"
    records = list(walk_named(schema))
    assert records
    for record in records:
        assert record.get("doc", "").strip(), f"{record['name']} has no doc"
        for field in record["fields"]:
            assert field.get("doc", "").strip(), f"{record['name']}.{field['name']} has no doc"


@pytest.mark.parametrize("name", record_names())
def test_optional_fields_default_to_null(name: str) -> None:
    for record in walk_named(load_catalog().get(name).schema):
        for field in record["fields"]:
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert field["type"][0] == "null" and field.get("default", "missing") is None, field["name"]


def test_timestamps_are_timestamp_millis_except_streams_event_time() -> None:
    enriched = {f["name"]: f["type"] for f in load_catalog().get("EnrichedEvent").schema["fields"]}
    assert enriched["event_time"] == "long"
    assert enriched["received_at"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_topic_catalogue_values_name_existing_records() -> None:
    topics = yaml.safe_load((SCHEMA_DIR.parent / "config" / "topics.yaml").read_text())["topics"]
    # A topic that carries several record types lists them separated by "|".
    values = {name.strip() for t in topics.values() for name in t["value"].split("|")}
    assert values - {"JSON"} <= set(record_names())  # JSON: a control record that is not Avro


def test_schemas_parse_with_apache_avro_too() -> None:
    for name in record_names():
        avro.schema.parse(json.dumps(load_catalog().get(name).schema))


# --- round trips and wire format ----------------------------------------------------------------------


@pytest.mark.parametrize("name", record_names())
def test_round_trip_every_record(serde: AvroSerde, name: str) -> None:
    data = serde.encode(name, sample(name))
    assert data[:10] == load_catalog().get(name).header
    assert serde.decode(data) == (name, sample(name))
    assert serde.decode(data, expected=name)[1] == sample(name)
    assert serde.decode(data, expected=f"io.inflow.{name}")[1] == sample(name)


def test_omitted_optional_fields_decode_to_defaults(serde: AvroSerde) -> None:
    minimal = {
        "event_uuid": "u-1",
        "workspace_id": "W",
        "request_id": "r",
        "received_at": ts(),
        "source": "api",
        "customer_id": "c-1",
    }
    _, record = serde.decode(serde.encode("UserUpsert", minimal))
    assert record == with_defaults("UserUpsert", minimal)
    assert record["user_identifiers"] == {} and record["attributes_json"] == "{}"
    assert record["update_existing_only"] is False


def test_timestamps_accept_epoch_millis_and_decode_to_aware_utc(serde: AvroSerde) -> None:
    millis = int((ts() - EPOCH).total_seconds() * 1000)
    record = {**sample("StreamState"), "changed_at": millis}
    _, decoded = serde.decode(serde.encode("StreamState", record))
    assert decoded["changed_at"] == ts() and decoded["changed_at"].tzinfo is not None


def test_encoder_and_encode_many_match_encode(serde: AvroSerde) -> None:
    records = [sample("EventRecord"), {**sample("EventRecord"), "action": "Checkout"}]
    assert serde.encode_many("EventRecord", records) == [serde.encode("EventRecord", r) for r in records]
    assert serde.encoder("EventRecord") is serde.encoder("io.inflow.EventRecord")
    assert serde.encoder("EventRecord")(records[1]) == serde.encode("EventRecord", records[1])
    assert default_serde() is default_serde()
    assert default_serde().framing == "single-object"


def test_fingerprint_matches_the_avro_spec_test_vector() -> None:
    # apache/avro share/test/data/schema-tests.txt: "int" has CRC-64-AVRO 8247732601305521295
    # (0x7275d51a3f395c8f), written little-endian after C3 01 as in Avro's own single-object header tests.
    canonical, fingerprint = fingerprint_of(parse_schema("int"))
    assert canonical == '"int"'
    assert fingerprint == (8247732601305521295).to_bytes(8, "little") == bytes.fromhex("8f5c393f1ad57572")


@pytest.mark.parametrize("name", record_names())
def test_header_fingerprint_agrees_with_apache_avro(name: str) -> None:
    # Apache avro (Python) writes a logical-type primitive as {"type":"long"} in the canonical form, unlike
    # the spec's [PRIMITIVES] rule and Java's SchemaNormalization ("long"), which fastavro follows. Without
    # logical types both libraries must produce the same fingerprint as our header.
    entry = load_catalog().get(name)
    assert '"logicalType"' not in entry.canonical_form
    apache = avro.schema.parse(json.dumps(strip_logical_types(entry.schema)))
    assert apache.canonical_form == entry.canonical_form
    assert entry.header == b"\xc3\x01" + apache.fingerprint("CRC-64-AVRO")


@pytest.mark.parametrize("name", record_names())
def test_single_object_bytes_decode_with_apache_avro(serde: AvroSerde, name: str) -> None:
    data = serde.encode(name, sample(name))
    entry = load_catalog().get(name)
    assert data[:2] == b"\xc3\x01" and data[2:10] == entry.fingerprint
    assert avro_read(entry.schema, data[10:]) == sample(name)


@pytest.mark.parametrize("name", record_names())
def test_apache_avro_bytes_decode_with_serde(serde: AvroSerde, name: str) -> None:
    entry = load_catalog().get(name)
    body = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(json.dumps(entry.schema))).write(
        sample(name), avro.io.BinaryEncoder(body)
    )
    assert serde.decode(entry.header + body.getvalue()) == (name, sample(name))


def test_accepts_bytearray_and_memoryview(serde: AvroSerde) -> None:
    data = serde.encode("StreamState", sample("StreamState"))
    assert serde.decode(bytearray(data))[1] == sample("StreamState")
    assert serde.decode(memoryview(data))[1] == sample("StreamState")


# --- schema evolution ---------------------------------------------------------------------------------


def history_entries() -> list[SchemaEntry]:
    return list(load_catalog().history)


def test_history_holds_an_older_user_upsert() -> None:
    versions = {(e.name, e.version) for e in history_entries()}
    assert ("UserUpsert", 1) in versions
    v1 = next(e for e in history_entries() if (e.name, e.version) == ("UserUpsert", 1))
    assert v1.fingerprint != load_catalog().get("UserUpsert").fingerprint
    assert load_catalog().by_fingerprint[v1.fingerprint] is v1


def test_v1_user_upsert_bytes_decode_into_the_current_schema(serde: AvroSerde) -> None:
    v1 = next(e for e in history_entries() if (e.name, e.version) == ("UserUpsert", 1))
    old = {k: v for k, v in sample("UserUpsert").items() if k != "unset_attributes_json"}
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, old)
    name, record = serde.decode(v1.header + body.getvalue(), expected="UserUpsert")
    assert name == "UserUpsert"
    assert record == {**old, "unset_attributes_json": None}
    # Apache avro agrees on the resolution of the same bytes.
    assert avro_read(v1.schema, body.getvalue(), reader=load_catalog().get("UserUpsert").schema) == record


@pytest.mark.parametrize("entry", history_entries(), ids=lambda e: e.label)
def test_current_schema_reads_every_history_version(entry: SchemaEntry) -> None:
    current = load_catalog().get(entry.name)
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()
    result = checker.get_compatibility(
        reader=avro.schema.parse(json.dumps(current.schema)),
        writer=avro.schema.parse(json.dumps(entry.schema)),
    )
    assert result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible, result.messages
    old_fields = {f["name"] for f in entry.schema["fields"]}
    added = [f["name"] for f in current.schema["fields"] if f["name"] not in old_fields]
    assert all("default" in f for f in current.schema["fields"] if f["name"] in added), added


@pytest.mark.parametrize("entry", history_entries(), ids=lambda e: e.label)
def test_bytes_of_every_history_version_decode_into_current_records(
    serde: AvroSerde, entry: SchemaEntry
) -> None:
    old = generated(entry.schema)
    body = io.BytesIO()
    schemaless_writer(body, entry.parsed, old)
    name, record = serde.decode(entry.header + body.getvalue(), expected=entry.name)
    assert (name, record) == (entry.name, with_defaults(entry.name, old))


def test_history_must_name_a_current_record(tmp_path: Path) -> None:
    for path in SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    history = tmp_path / "history"
    history.mkdir()
    (history / "Gone.v1.avsc").write_text(
        json.dumps({"type": "record", "name": "Gone", "namespace": "io.inflow", "fields": []})
    )
    with pytest.raises(SerdeError, match="defines io.inflow.Gone, which has no current schema"):
        load_catalog(tmp_path)


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message: no Avro framing"),
        (
            b'{"customer_id": "x"}',
            r"unknown Avro framing: first byte 0x7b; expected single-object C3 01 or Confluent 00",
        ),
        (b"\xc3\x02" + b"\x00" * 12, "unknown Avro framing: first bytes 0xc3 0x02"),
        (b"\xc3\x01\x8f\x5c", "truncated single-object header: 4 bytes, need 10"),
        (b"\x00\x00\x01", "truncated Confluent header: 3 bytes, need 5"),
        (
            b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + b"\x02",
            "unknown schema fingerprint 0123456789abcdef",
        ),
        (b"\x00\x00\x00\x00\x07rest", r"Confluent-framed message \(schema id 7\) but no Schema Registry"),
    ],
)
def test_undecodable_framing_raises_serde_error(serde: AvroSerde, data: bytes, message: str) -> None:
    with pytest.raises(SerdeError, match=message):
        serde.decode(data)


def test_truncated_body_names_the_record(serde: AvroSerde) -> None:
    data = serde.encode("EventRecord", sample("EventRecord"))
    for cut in (11, len(data) // 2, len(data) - 1):
        with pytest.raises(SerdeError, match=r"cannot decode EventRecord: EOFError") as info:
            serde.decode(data[:cut])
        assert isinstance(info.value.__cause__, EOFError)


def test_trailing_garbage_is_refused(serde: AvroSerde) -> None:
    data = serde.encode("StreamState", sample("StreamState"))
    with pytest.raises(SerdeError, match="cannot decode StreamState: 3 trailing bytes after the record body"):
        serde.decode(data + b"xyz")


def test_garbage_body_after_a_valid_header(serde: AvroSerde) -> None:
    header = load_catalog().get("UserProfile").header
    with pytest.raises(SerdeError, match="cannot decode UserProfile"):
        serde.decode(header + b"\xff" * 40)


def test_wrong_expected_record(serde: AvroSerde) -> None:
    data = serde.encode("EventRecord", sample("EventRecord"))
    with pytest.raises(
        SerdeError, match="expected record UserUpsert but the message was written as io.inflow.EventRecord"
    ):
        serde.decode(data, expected="UserUpsert")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in sample("StreamState").items() if k != "stream_id"}, "stream_id"),
        ({**sample("StreamState"), "stream_id": 42}, "cannot encode StreamState"),
        ({**sample("StreamState"), "pasued": False}, "more fields than the schema specifies: pasued"),
        ({**sample("StreamState"), "changed_at": "yesterday"}, "cannot encode StreamState"),
        ({**sample("StreamState"), "stream_id": "\ud800"}, "cannot encode StreamState: UnicodeEncodeError"),
    ],
    ids=["missing-required", "wrong-type", "unknown-key", "bad-timestamp", "lone-surrogate"],
)
def test_bad_records_raise_serde_error(serde: AvroSerde, record: dict[str, Any], message: str) -> None:
    with pytest.raises(SerdeError, match=message) as info:
        serde.encode("StreamState", record)
    assert info.value.__cause__ is not None


def test_lax_serde_ignores_unknown_keys() -> None:
    lax = AvroSerde(strict=False)
    data = lax.encode("StreamState", {**sample("StreamState"), "extra": 1})
    assert lax.decode(data)[1] == sample("StreamState")


def test_unknown_record_name_on_encode(serde: AvroSerde) -> None:
    with pytest.raises(SerdeError, match="unknown record 'UserUpsertt'"):
        serde.encode("UserUpsertt", {})


# --- Confluent framing ----------------------------------------------------------------------------------


def test_confluent_framing_round_trip_and_subjects() -> None:
    registry = InMemoryRegistry()
    serde = AvroSerde(registry=registry)
    assert serde.framing == "confluent"
    data = serde.encode("EventRecord", sample("EventRecord"), topic="inflow.ingest.records")
    schema_id = registry.subjects["inflow.ingest.records-value"]
    assert data[0] == 0 and data[1:5] == schema_id.to_bytes(4, "big")
    assert serde.decode(data, expected="EventRecord") == ("EventRecord", sample("EventRecord"))
    assert registry.lookups == 0  # our own ids are known without a round trip
    serde.encode("UserProfile", sample("UserProfile"))
    assert "io.inflow.UserProfile-value" in registry.subjects


def test_confluent_bytes_resolve_through_the_registry_once() -> None:
    registry = InMemoryRegistry()
    data = AvroSerde(registry=registry).encode("ImportRun", sample("ImportRun"))
    reader = AvroSerde(registry=registry)
    assert reader.decode(data) == ("ImportRun", sample("ImportRun"))
    assert reader.decode(data) == ("ImportRun", sample("ImportRun"))
    assert registry.lookups == 1


def test_both_framings_decode_whatever_the_configuration() -> None:
    registry = InMemoryRegistry()
    confluent, plain = AvroSerde(registry=registry), AvroSerde()
    single = plain.encode("StreamState", sample("StreamState"))
    framed = confluent.encode("StreamState", sample("StreamState"))
    assert confluent.decode(single)[1] == sample("StreamState")
    with pytest.raises(SerdeError, match="no Schema Registry is configured"):
        plain.decode(framed)


def test_confluent_old_writer_schema_resolves_into_current() -> None:
    registry = InMemoryRegistry()
    v1 = next(e for e in history_entries() if (e.name, e.version) == ("UserUpsert", 1))
    schema_id = registry.register("inflow.ingest.records-value", json.dumps(v1.schema))
    old = {k: v for k, v in sample("UserUpsert").items() if k != "unset_attributes_json"}
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, old)
    data = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
    assert AvroSerde(registry=registry).decode(data)[1] == {**old, "unset_attributes_json": None}


def test_confluent_schema_of_an_unknown_record() -> None:
    registry = InMemoryRegistry()
    foreign = {
        "type": "record",
        "name": "Other",
        "namespace": "com.acme",
        "fields": [{"name": "a", "type": "int"}],
    }
    schema_id = registry.register("acme-value", json.dumps(foreign))
    with pytest.raises(
        SerdeError, match=f"schema id {schema_id} is record com.acme.Other, which has no schema"
    ):
        AvroSerde(registry=registry).decode(b"\x00" + schema_id.to_bytes(4, "big") + b"\x02")


# --- the HTTP registry client against a real local endpoint ----------------------------------------------


class _RegistryHandler(BaseHTTPRequestHandler):
    """Just enough of the Schema Registry REST API: register and fetch by id."""

    schemas: dict[int, str] = {}
    requests: list[tuple[str, str, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, self.headers.get("Authorization")))
        if not self.path.startswith("/subjects/") or not self.path.endswith("/versions"):
            self._reply(404, {"error_code": 40401, "message": "Subject not found"})
            return
        schema_id = next((i for i, s in self.schemas.items() if s == body["schema"]), len(self.schemas) + 1)
        self.schemas[schema_id] = body["schema"]
        self._reply(200, {"id": schema_id})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.requests.append(("GET", self.path, self.headers.get("Authorization")))
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id not in self.schemas:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._reply(200, {"schema": self.schemas[schema_id]})

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass


@pytest.fixture
def registry_url() -> Iterator[str]:
    _RegistryHandler.schemas, _RegistryHandler.requests = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RegistryHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://sr-user:s3cret@127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_client_over_http(registry_url: str) -> None:
    serde = AvroSerde(registry_url)
    data = serde.encode("StreamBatch", sample("StreamBatch"), topic="inflow.streams.dlq")
    serde.encode("StreamBatch", sample("StreamBatch"), topic="inflow.streams.dlq")
    assert AvroSerde(registry_url).decode(data) == ("StreamBatch", sample("StreamBatch"))
    methods = [(method, path) for method, path, _ in _RegistryHandler.requests]
    assert methods == [("POST", "/subjects/inflow.streams.dlq-value/versions"), ("GET", "/schemas/ids/1")]
    expected_auth = "Basic " + base64.b64encode(b"sr-user:s3cret").decode()
    assert {auth for _, _, auth in _RegistryHandler.requests} == {expected_auth}


def test_registry_client_errors(registry_url: str) -> None:
    client = SchemaRegistryClient(registry_url)
    assert "s3cret" not in client.url
    with pytest.raises(
        RegistryError, match="answered 404 to GET /schemas/ids/99: .*Schema not found"
    ) as info:
        client.schema_by_id(99)
    assert info.value.retriable is False
    with pytest.raises(RegistryError, match="must be http"):
        SchemaRegistryClient("file:///etc/passwd")
    with pytest.raises(RegistryError, match="unreachable") as unreachable:
        SchemaRegistryClient("http://127.0.0.1:9", timeout=2).schema_by_id(1)
    assert unreachable.value.retriable is True


# --- property test ------------------------------------------------------------------------------------

_text = st.text(max_size=24)
_optional_text = st.none() | _text
_millis = st.integers(min_value=-2_208_988_800_000, max_value=4_102_444_800_000)  # 1900..2100
_timestamp = _millis.map(lambda ms: EPOCH + timedelta(milliseconds=ms))
_json_object = st.dictionaries(
    st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(max_size=8), max_size=4
).map(json.dumps)

_event_records = st.fixed_dictionaries(
    {
        "event_uuid": st.uuids().map(str),
        "workspace_id": _text,
        "request_id": _text,
        "received_at": _timestamp | _millis,
        "source": st.sampled_from(["api", "s3_import"]),
        "action": st.text(min_size=1, max_size=24),
        "user_time": _timestamp | _millis,
    },
    optional={
        "client_ip": _optional_text,
        "customer_id": _optional_text,
        "anonymous_id": _optional_text,
        "user_identifiers": st.dictionaries(_text, _text, max_size=3),
        "device_id": _optional_text,
        "attributes_json": _json_object,
        "platform": st.none() | st.sampled_from(["ANDROID", "iOS", "web", "TV", "unknown"]),
        "moe_os_type": _optional_text,
        "app_version": _optional_text,
        "current_time": st.none() | _timestamp,
        "user_timezone_offset": st.none() | st.integers(min_value=-54000, max_value=54000),
        "origin": _optional_text,
    },
)


def _as_datetime(value: Any) -> Any:
    return EPOCH + timedelta(milliseconds=value) if isinstance(value, int) else value


@settings(max_examples=200, deadline=None)
@given(_event_records)
def test_event_record_round_trip_property(record: dict[str, Any]) -> None:
    serde = default_serde()
    expected = with_defaults("EventRecord", record)
    expected["received_at"] = _as_datetime(expected["received_at"])
    expected["user_time"] = _as_datetime(expected["user_time"])
    data = serde.encode("EventRecord", record)
    assert serde.decode(data, expected="EventRecord") == ("EventRecord", expected)
    assert avro_read(load_catalog().get("EventRecord").schema, data[10:]) == expected
