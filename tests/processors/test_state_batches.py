"""Lane state written once per batch: reads see earlier records, a rejection drops only its own writes."""

from __future__ import annotations

import json

from inflow.processors.state import JsonTable


def test_batch_reads_earlier_records_and_commits_each_changed_key_once():
    backing: dict[bytes, bytes] = {b"k": b'"old"'}
    table = JsonTable(backing)
    table.put(b"k", "first")
    table.stage()
    assert table.get(b"k") == "first" and backing[b"k"] == b'"old"'
    table.put(b"k", "second")
    table.put(b"n", [1, 2])
    table.stage()
    writes = table.commit()
    assert sorted(writes) == [(b"k", b'"second"'), (b"n", b"[1,2]")]
    assert json.loads(backing[b"k"]) == "second" and table.get(b"n") == [1, 2]


def test_rejected_record_discards_only_its_own_writes():
    backing: dict[bytes, bytes] = {}
    table = JsonTable(backing)
    table.put(b"a", 1)
    table.stage()
    table.put(b"a", 2)
    table.put(b"b", 3)
    table.discard()
    assert table.get(b"a") == 1 and table.get(b"b") is None
    assert table.commit() == [(b"a", b"1")]


def test_delete_of_a_committed_key_is_a_tombstone_and_revocation_drops_the_batch():
    backing: dict[bytes, bytes] = {b"a": b"1"}
    table = JsonTable(backing)
    table.delete(b"a")
    table.stage()
    assert table.get(b"a") is None
    assert table.commit() == [(b"a", None)] and b"a" not in backing
    table.put(b"c", 1)
    table.stage()
    table.drop_batch()
    assert table.commit() == [] and table.get(b"c") is None


def test_seen_marks_are_stored_as_the_json_of_their_position() -> None:
    import orjson

    from inflow.processors.state import State, encode_position

    for value in ([0, 0, 0], [23, 2**40, 17], [-1, 5, 0], 1, [1, 2], [True, 1, 2], [1.5, 2, 3]):
        assert encode_position(value) == orjson.dumps(value)
    state = State.in_memory()
    state.seen.put(b"k", [3, 12, 4])
    assert state.seen.commit() == [(b"k", b"[3,12,4]")]
    state.seen.clear_cache()
    assert state.seen.get(b"k") == [3, 12, 4]


def test_uids_are_the_uuid5_of_what_made_them() -> None:
    import uuid

    from inflow.processors import keys

    for name in ["", "user\x1fW\x1fcustomer_id\x1fu-1", "é€😀" * 40]:
        assert keys.uuid5_hex(name) == uuid.uuid5(keys._NAMESPACE, name).hex
    assert keys.new_uid("W", "slot", 2) == uuid.uuid5(keys._NAMESPACE, "user\x1fW\x1fslot\x1f2").hex
    assert keys.device_uid("W", "d") == uuid.uuid5(keys._NAMESPACE, "device\x1fW\x1fd").hex


def test_seen_marks_table_caches_only_what_it_found_and_writes_every_value_as_encode_position_does() -> None:
    import orjson

    from inflow.processors.state import MarkTable

    backing: dict[bytes, bytes] = {b"old": b"[1,2,3]"}
    marks = MarkTable(backing, cache_limit=10)
    assert marks.get(b"new") is None and marks._cache == {}  # a miss (a new record) is not cached
    assert marks.get(b"old") == [1, 2, 3] and marks._cache == {b"old": [1, 2, 3]}  # a duplicate's mark is
    marks.put(b"old", [1, 9, 0])
    marks.put(b"new", [2, 2**40, 17])
    marks.stage()
    writes = marks.commit()
    assert writes == [(b"old", b"[1,9,0]"), (b"new", b"[2,1099511627776,17]")]
    assert marks._cache == {b"old": [1, 9, 0]} and backing[b"new"] == b"[2,1099511627776,17]"
    # Values that are not three ints (a mark without a position, odd types) are written by encode_position.
    for value in (1, [True, 1, 2], [1.5, 2, 3], [1, 2]):
        marks.put(b"odd", value)
        marks.stage()
        assert marks.commit() == [(b"odd", orjson.dumps(value))]
    # A deletion takes the general path: a key that was never stored needs no tombstone.
    marks.delete(b"odd")
    marks.delete(b"never")
    marks.stage()
    assert marks.commit() == [(b"odd", None)] and b"odd" not in backing
