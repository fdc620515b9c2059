"""The export loop's EnrichedEvent reader (compiled decoder) and the formatter's fast path, against the
general paths they stand in for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from inflow.schemas.avro_reader import record_reader
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.plain import read_plain
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.payload import EventFormatter
from inflow.sinks.streams.reading import UNUSED, EnrichedEventReader
from tests.streams.conftest import enriched

SERDE = AvroSerde()
ENCODE = SERDE.encoder("EnrichedEvent")


def records() -> list[dict]:
    return [
        enriched(),
        enriched(customer_id=None, push_id="tok", platform=None, event_time=0),
        enriched(
            event_name="Achat réussi ✓",
            user_attributes_json='{"moengage_user_id":"u-1","notes":"' + "x" * 5000 + '"}',
            email_id="a@b",
            mobile_number="+33",
            event_time=-5,
            received_at=datetime(2001, 1, 1, tzinfo=UTC),
        ),
        enriched(event_attributes_json="", event_source="", uid="é" * 100),
    ]


@pytest.mark.parametrize("record", records())
def test_compiled_decoder_reads_what_fastavro_reads_without_the_unused_fields(record):
    reader = EnrichedEventReader(SERDE)
    assert reader._fast is not None
    data = ENCODE(record)
    expected = read_plain(data, len(SERDE.catalog.get("EnrichedEvent").header), reader._plain, "x")
    got = reader.read(data)
    assert got == {k: v for k, v in expected.items() if k not in UNUSED}
    assert set(expected) - set(got) == UNUSED


def test_broken_records_are_refused_with_the_reason():
    reader = EnrichedEventReader(SERDE)
    data = ENCODE(enriched())
    header = len(SERDE.catalog.get("EnrichedEvent").header)
    with pytest.raises(SerdeError, match="trailing bytes"):
        reader.read(data + b"\x00")
    for cut in (header + 1, len(data) // 2, len(data) - 1):
        with pytest.raises(SerdeError, match="cannot decode EnrichedEvent"):
            reader.read(data[:cut])
    bad_utf8 = data.replace(b"Purchase", b"Purc\xffase", 1)
    with pytest.raises(SerdeError, match="UnicodeDecodeError"):
        reader.read(bad_utf8)
    # customer_id's union index: the byte before "cust-1"'s length
    at = data.index(b"cust-1") - 2
    with pytest.raises(SerdeError, match="union index"):
        reader.read(data[:at] + b"\x04" + data[at + 1 :])
    with pytest.raises(SerdeError, match="data ends inside a field"):
        reader.read(data[:header] + b"\x01" + data[header + 1 :])  # a negative string length


def test_unknown_field_kinds_leave_the_record_to_fastavro():
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "double"}]}
    assert record_reader(schema) is None


def test_fast_fragment_is_byte_for_byte_the_general_one():
    fast = EventFormatter(StreamDefinition(id="s", url="http://h/x"))
    event = enriched(event_uuid="e-1", event_name='Say "hé"', customer_id=None)
    expected = (
        '{"event_name":"Say \\"h\\u00e9\\"","event_code":"Purchase","event_uuid":"e-1",'
        '"event_time":1580967474,"event_type":"USER_ACTION_EVENT","event_source":"MOENGAGE","uid":null,'
        '"event_attributes":{"amount":10},"user_attributes":{"moengage_user_id":"u-1","city":"Paris"},'
        '"device_attributes":{"moengage_device_id":"d-1","os":"android"}}'
    )
    assert fast.fragment(event) == expected
    # Attribute text with surrounding blanks takes the general path: the same event object comes out.
    padded = event | {"event_attributes_json": ' {"amount":10} '}
    assert fast.fragment(padded) == expected
    # A user object without moengage_user_id gets it added (general path), as before.
    no_id = json.loads(fast.fragment(event | {"user_attributes_json": '{"city":"Paris"}'}))
    assert no_id["user_attributes"] == {"moengage_user_id": "u-1", "city": "Paris"}
