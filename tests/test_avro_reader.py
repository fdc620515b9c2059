"""The compiled Avro readers (schemas/avro_reader.py) read what fastavro reads, refuse what it refuses, and
the worker's ingest reader uses them for its flat records."""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from inflow.processors.reading import HEADER_SIZE, IngestReader
from inflow.schemas.avro_reader import record_reader
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PackEncoder
from inflow.schemas.plain import plain_schema
from inflow.schemas.serde import AvroSerde

SERDE = AvroSerde()
TEXTS = ["", "a", "é€😀", 'quote " and \\ back', "x" * 63, "y" * 64, "z" * 9000]
LONGS = [0, -1, 63, -64, 64, -65, 1_750_000_000_123, 2**62, -(2**63)]
EVERY_TYPE = {
    "type": "record",
    "name": "EveryType",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "flag", "type": "boolean"},
        {"name": "ns", "type": ["null", "string"]},
        {"name": "nl", "type": ["null", "long"]},
        {"name": "nt", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "ab", "type": {"type": "array", "items": "bytes"}},
        {"name": "as", "type": {"type": "array", "items": "string"}},
    ],
}


def random_record(rng: random.Random) -> dict[str, Any]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.4 else value

    return {
        "s": rng.choice(TEXTS),
        "b": rng.choice(TEXTS).encode(),
        "l": rng.choice(LONGS),
        "i": rng.choice([0, -1, 64, 2**31 - 1, -(2**31)]),
        "t": rng.choice([0, 1_750_000_000_123]),
        "flag": rng.random() < 0.5,
        "ns": maybe(rng.choice(TEXTS)),
        "nl": maybe(rng.choice(LONGS)),
        "nt": maybe(1_750_000_000_123),
        "m": {rng.choice(TEXTS): rng.choice(TEXTS) for _ in range(rng.randrange(4))},
        "ab": [rng.choice(TEXTS).encode() for _ in range(rng.randrange(70))],
        "as": [rng.choice(TEXTS) for _ in range(rng.randrange(3))],
    }


def encoded(record: dict[str, Any]) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parse_schema(EVERY_TYPE), record)
    return out.getvalue()


def test_compiled_reader_reads_what_fastavro_reads() -> None:
    read = record_reader(EVERY_TYPE)
    assert read is not None
    plain = plain_schema(EVERY_TYPE)
    rng = random.Random(7)
    for _ in range(400):
        data = b"head" + encoded(random_record(rng))
        record, end = read(data, 4)
        assert end == len(data)
        assert record == schemaless_reader(BytesIO(data[4:]), plain, None)


def test_arrays_and_maps_written_in_sized_blocks_are_read() -> None:
    # An array block with a negative count is followed by its size in bytes (other writers use it).
    read = record_reader({"type": "record", "name": "A", "fields": EVERY_TYPE["fields"][10:11]})
    assert read is not None
    data = bytes([3, 8, 2]) + b"x" + bytes([2]) + b"y" + bytes([0])  # count -2, 4 bytes, "x", "y", end
    assert read(data, 0) == ({"ab": [b"x", b"y"]}, len(data))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda data: data[:-1], id="truncated"),
        pytest.param(lambda data: data[:5], id="cut inside the first string"),
        pytest.param(lambda data: bytes([1]) + data[1:], id="negative length"),
        pytest.param(lambda data: bytes([4, 0xFF, 0xFE]) + data[3:], id="invalid utf-8"),
    ],
)
def test_bad_bytes_are_refused(bad: Any) -> None:
    read = record_reader(EVERY_TYPE)
    assert read is not None
    record = random_record(random.Random(1)) | {"s": "abc"}
    with pytest.raises((ValueError, IndexError, UnicodeDecodeError)):
        read(bad(encoded(record)), 0)


def test_union_index_out_of_range_is_refused() -> None:
    fields = [{"name": "ns", "type": ["null", "string"]}]
    read = record_reader({"type": "record", "name": "U", "fields": fields})
    assert read is not None
    with pytest.raises(ValueError, match="union index"):
        read(bytes([4]), 0)
    with pytest.raises(ValueError, match="boolean byte"):
        read2 = record_reader({"type": "record", "name": "B", "fields": [{"name": "f", "type": "boolean"}]})
        assert read2 is not None
        read2(bytes([7]), 0)


def test_unsupported_types_are_left_to_fastavro() -> None:
    for kind in [
        "double",
        {"type": "array", "items": "long"},
        ["null", "string", "long"],
        ["string", "null"],
    ]:
        schema = {"type": "record", "name": "X", "fields": [{"name": "f", "type": kind}]}
        assert record_reader(schema) is None


@pytest.mark.parametrize("name", ["EventRecord", "UserUpsert", "DeviceUpsert"])
def test_ingest_reader_reads_ingest_records_as_the_serde(name: str) -> None:
    reader = IngestReader(SERDE)
    entry = SERDE.catalog.get(name)
    plain = plain_schema(entry.schema)
    rng = random.Random(3)
    for _ in range(50):
        record = sample(entry.schema["fields"], rng)
        data = SERDE.encode(name, record)
        got_name, got = reader.decode(data)
        assert got_name == name
        assert got == schemaless_reader(BytesIO(data[HEADER_SIZE:]), plain, None)
    with pytest.raises(SerdeError, match=f"cannot decode {name}: .*"):
        reader.decode(data[:-1] if data[-1] else data[:12])
    with pytest.raises(SerdeError, match="1 trailing bytes"):
        reader.decode(data + b"\x00")


def test_ingest_reader_reads_packs() -> None:
    reader = IngestReader(SERDE)
    items = [
        SERDE.encode(
            "EventRecord", sample(SERDE.catalog.get("EventRecord").schema["fields"], random.Random(n))
        )
        for n in range(3)
    ]
    name, pack = reader.decode(PackEncoder(SERDE).encode(items))
    assert (name, pack["records"]) == ("IngestPack", items)


def sample(fields: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """A record of an ingest schema with values of each field's type."""
    out: dict[str, Any] = {}
    for field in fields:
        kind = field["type"]
        if isinstance(kind, list):
            out[field["name"]] = (
                None if rng.random() < 0.3 else sample([{"name": "v", "type": kind[1]}], rng)["v"]
            )
        elif isinstance(kind, dict) and kind.get("type") == "map":
            out[field["name"]] = {rng.choice(TEXTS): rng.choice(TEXTS) for _ in range(rng.randrange(3))}
        elif isinstance(kind, dict) or kind == "long":
            out[field["name"]] = rng.choice([0, 1_750_000_000_123])
        elif kind == "int":
            out[field["name"]] = rng.choice([0, -330, 19800])
        elif kind == "boolean":
            out[field["name"]] = rng.random() < 0.5
        else:
            out[field["name"]] = rng.choice(TEXTS)
    return out


def test_a_packs_events_read_with_their_shared_fields_give_what_decode_gives() -> None:
    """The pack decoder reads an event whose workspace..device fields repeat the event before it from its
    other fields only; every record comes out as decode() reads it, and bad ones are refused the same."""
    from tests.processors import records as r

    reader = IngestReader(SERDE)
    rng = random.Random(11)
    items: list[bytes] = []
    for n in range(200):
        who = rng.choice(["ann", "bob", "é😀"])
        element = {"device_id": rng.choice([None, "d1"]), "user_identifiers": rng.choice([{}, {"a": "b"}])}
        received = r.BASE_MS + n * 1000 + rng.choice([0, 0, 0, 1])  # one request's events share it
        for k in range(rng.randrange(1, 6)):
            event = r.event("W", who, rng.choice(["Bought", "Viewed"]), at=n + k, **element)
            event["platform"] = rng.choice([None, "ANDROID"])
            event["received_at"] = received
            items.append(SERDE.encode("EventRecord", event))
        if rng.random() < 0.2:
            items.append(SERDE.encode("UserUpsert", r.user("W", who, at=n)))
        if rng.random() < 0.1:
            items.append(items[-1][:-2])  # truncated
        if rng.random() < 0.05:
            items.append(items[-1] + b"\x00")  # trailing
    span = reader._events
    assert span is not None
    whole_read_after, taken = span.read_after, []

    def counted(*args: Any) -> Any:
        got = whole_read_after(*args)
        taken.append(got is not None)
        return got

    span.read_after = counted  # type: ignore[method-assign]
    decode = reader.pack_decoder().decode
    shared_reads = 0
    for item in items:
        try:
            expected = reader.decode(item)
        except SerdeError as exc:
            with pytest.raises(SerdeError) as got:
                decode(item)
            assert str(got.value).split(":")[0] == str(exc).split(":")[0]
            continue
        assert decode(item) == expected
        shared_reads += 1
    assert shared_reads > 400
    assert sum(taken) > 200  # the shared fields were taken from the event before, not read again
