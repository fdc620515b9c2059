"""Packs of ingest records (schemas/packs.py): fastavro's bytes, split within a limit, order kept."""

from __future__ import annotations

import pytest

from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PACK_RECORD, PackEncoder, pack_groups, pack_messages, unpack
from inflow.schemas.serde import AvroSerde

SERDE = AvroSerde()


def records(n: int, size: int = 10) -> list[bytes]:
    return [
        SERDE.encode(
            "EventRecord",
            {
                "event_uuid": f"u{i}",
                "workspace_id": "W",
                "request_id": "r",
                "received_at": 1,
                "source": "api",
                "customer_id": "alice",
                "action": "a" * size,
                "attributes_json": "{}",
                "user_time": 1,
            },
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("count", [2, 63, 64, 300])
def test_a_pack_is_byte_for_byte_what_fastavro_writes(count):
    values = records(count)
    encoder = PackEncoder(SERDE)
    packed = encoder.encode(values)
    assert packed == SERDE.encode(PACK_RECORD, {"records": values})
    assert len(packed) == encoder.size(values)
    assert unpack(SERDE, packed) == values


def test_packs_split_within_the_room_keep_the_order_and_a_lone_record_stays_plain():
    values = records(40, size=100)
    encoder = PackEncoder(SERDE)
    room = 1000
    chunks = encoder.chunks(values, room)
    assert len(chunks) > 1
    assert all(len(c) <= room for c in chunks)
    assert [item for c in chunks for item in unpack(SERDE, c)] == values
    assert encoder.chunks(values[:1], room) == values[:1]  # not a pack: the single-record format
    big = records(1, size=2000)[0]
    assert encoder.chunks([values[0], big, values[1]], room) == [values[0], big, values[1]]


def test_pack_messages_groups_each_keys_records_in_order():
    a, b = records(3), records(2, size=20)
    messages = [("t", b"W:a", a[0]), ("t", b"W:b", b[0]), ("t", b"W:a", a[1]), ("x", b"k", b"v")]
    messages += [("t", b"W:b", b[1]), ("t", b"W:a", a[2])]
    out = pack_messages(messages, PackEncoder(SERDE), lambda topic: 100_000, "t")
    assert ("x", b"k", b"v") in out
    by_key = {key: unpack(SERDE, value) for topic, key, value in out if topic == "t"}
    assert by_key == {b"W:a": a, b"W:b": b}
    assert len(out) == 3


def test_a_pack_with_a_broken_item_still_reads_the_others():
    values = records(2)
    packed = PackEncoder(SERDE).encode([values[0], b"\xc3\x01garbage", values[1]])
    items = unpack(SERDE, packed)
    assert items[0] == values[0] and items[2] == values[2 - 1]
    with pytest.raises(SerdeError):
        SERDE.decode(items[1])


@pytest.mark.parametrize("room", [300, 1000, 5000, 100_000])
def test_each_chunk_is_the_pack_of_its_records_byte_for_byte(room):
    values = records(70, size=5) + records(3, size=9000) + records(70, size=1)
    encoder = PackEncoder(SERDE)
    chunks = encoder.chunks(values, room)
    read = [unpack(SERDE, c) if c not in values else [c] for c in chunks]
    assert [item for items in read for item in items] == values
    for chunk, items in zip(chunks, read, strict=True):
        assert chunk == (items[0] if len(items) == 1 else SERDE.encode(PACK_RECORD, {"records": items}))
        assert len(items) == 1 or len(chunk) <= room


def test_pack_groups_packs_each_keys_records_within_the_limit():
    a, b = records(100, size=50), records(1)
    out = pack_groups({b"W:a": a, b"W:b": b}, PackEncoder(SERDE), 2000, "t")
    assert out[-1] == ("t", b"W:b", b[0])  # a lone record as it is
    assert all(len(key) + len(value) <= 2000 for _, key, value in out)
    assert [item for _, key, value in out if key == b"W:a" for item in unpack(SERDE, value)] == a
