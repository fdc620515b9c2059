"""Bundles of seen marks (processors/bundles.py): what the seen changelog carries per batch."""

from __future__ import annotations

import pytest

from inflow.processors import bundles


def marks(n: int, size: int = 30) -> list[tuple[bytes, bytes | None]]:
    return [(f"W\x1fslot\x1f{i:0{size}d}".encode(), f"[3,{i},0]".encode()) for i in range(n)]


def test_a_bundle_holds_marks_and_deletes_in_order():
    writes = [*marks(3), (b"W\x1fgone", None), (b"\xff" * 300, b"x" * 200)]
    assert bundles.decode(bundles.encode(writes)) == writes


def test_bundles_split_within_the_room_and_keep_the_order():
    writes = marks(500)
    parts = bundles.chunks(writes, 2_000)
    assert len(parts) > 1 and all(len(p) <= 2_000 for p in parts)
    assert [w for p in parts for w in bundles.decode(p)] == writes


def test_restore_expands_bundles_between_single_mark_records_written_before_them():
    old, new = marks(2), marks(3, size=8)
    records = [old[0], (bundles.bundle_key(0, 0), bundles.encode(new)), old[1]]
    assert bundles.expand(records) == [old[0], *new, old[1]]
    assert bundles.expand(old) is old  # no bundle: nothing copied
    assert bundles.bundle_key(0, 0) != bundles.bundle_key(0, 0)  # unique: compaction never drops one
    assert len(bundles.bundle_key(2**31, 10**6)) <= bundles.KEY_ROOM


def test_a_truncated_bundle_is_refused():
    data = bundles.encode(marks(2))
    with pytest.raises(ValueError, match="truncated"):
        bundles.decode(data[:-3])
