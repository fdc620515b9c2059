"""The one Avro varint reader (schemas.avro_template.read_long) and the framing errors built on it."""

from __future__ import annotations

import pytest

from inflow.processors.exceptions import LaneFramingError
from inflow.processors.lanes import second_string
from inflow.schemas.avro_template import long_bytes, read_long


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 8191, 1_796_285_237_646, -(2**63), 2**63 - 1])
def test_read_long_reads_what_long_bytes_writes(value: int) -> None:
    data = b"\x07" + long_bytes(value) + b"\x09"
    assert read_long(data, 1) == (value, len(data) - 1)


def test_read_long_refuses_truncated_and_overlong_varints() -> None:
    with pytest.raises(ValueError, match="ends inside"):
        read_long(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="longer than a 64-bit"):
        read_long(b"\xff" * 11, 0)


def test_second_string_names_the_framing_fault() -> None:
    header = b"\x00\x00\x00\x00\x01"
    record = header + long_bytes(2) + b"ab" + long_bytes(3) + b"xyz"
    assert second_string(record) == b"xyz"
    with pytest.raises(LaneFramingError, match="ends inside a varint in ingest record"):
        second_string(header + long_bytes(2) + b"ab" + b"\x80")
    with pytest.raises(LaneFramingError, match="truncated workspace_id"):
        second_string(header + long_bytes(2) + b"ab" + long_bytes(10) + b"x")
    with pytest.raises(LaneFramingError, match="not an Avro ingest record"):
        second_string(b"{}")
