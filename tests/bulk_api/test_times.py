"""Time values and the reference's derivation rules (section 2.3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inflow.producers.bulk_api.times import TimeValueError, derive_times, parse_time

T = datetime(2020, 5, 25, 11, 3, 35, tzinfo=UTC)  # 1590404615
T_MS = 1590404615000
RECEIVED = 1767225600000  # 2026-01-01


@pytest.mark.parametrize(
    "value",
    [
        1590404615,
        1590404615000,
        "1590404615",
        "1590404615000",
        1590404615.0,
        "2020-05-25T11:03:35Z",
        "2020-05-25T11:03:35",
    ],
)
def test_epoch_seconds_milliseconds_and_iso_are_the_same_instant(value):
    assert parse_time(value).wall_ms == T_MS


def test_iso_with_an_offset_keeps_the_wall_clock_and_the_offset():
    parsed = parse_time("2020-05-25T16:33:35+05:30")
    assert parsed.wall_ms == T_MS + 19800_000 and parsed.offset_s == 19800
    assert parse_time("2020-05-25").wall_ms == int(datetime(2020, 5, 25, tzinfo=UTC).timestamp()) * 1000


@pytest.mark.parametrize("value", ["2019-15-12", "yesterday", True, {"a": 1}, [], float("inf"), -5, 10**30])
def test_unreadable_times_are_rejected(value):
    with pytest.raises(TimeValueError):
        parse_time(value)


def test_nothing_given_uses_the_receive_time():
    times = derive_times(None, None, None, RECEIVED)
    assert times.event_ms == RECEIVED and times.current_ms is None


def test_current_time_wins_and_is_utc():
    local = parse_time(1590404615 + 19800)
    times = derive_times(local, parse_time(1590404615), 19800, RECEIVED)
    assert times.event_ms == T_MS and times.current_ms == T_MS and times.offset_s == 19800


def test_user_time_with_offset_derives_utc():
    assert derive_times(parse_time(1590404615 + 19800), None, 19800, RECEIVED).event_ms == T_MS


def test_user_time_alone_uses_the_account_offset_or_its_own_zone():
    assert (
        derive_times(parse_time(1590404615 + 3600), None, None, RECEIVED, default_offset_s=3600).event_ms
        == T_MS
    )
    assert derive_times(parse_time("2020-05-25T16:33:35+05:30"), None, None, RECEIVED).event_ms == T_MS


def test_current_time_with_an_explicit_zone_is_converted():
    assert derive_times(None, parse_time("2020-05-25T16:33:35+05:30"), None, RECEIVED).event_ms == T_MS
