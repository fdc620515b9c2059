"""The 19 datetime formats MoEngage accepts, with and without TZD, UTC and app timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from inflow.producers.s3_import.datetimes import DATETIME_FORMATS, parser_for
from inflow.producers.s3_import.exceptions import RowError

D = datetime(2024, 1, 31, tzinfo=UTC)
DT = datetime(2024, 1, 31, 13, 45, 59, tzinfo=UTC)
DTF = datetime(2024, 1, 31, 13, 45, 59, 933000, tzinfo=UTC)
CASES = [
    ("YYYY-MM-DD", "2024-01-31", D),
    ("YYYY/MM/DD", "2024/01/31", D),
    ("DD/MM/YYYY", "31/01/2024", D),
    ("DD-MM-YYYY", "31-01-2024", D),
    ("DD-MM-YYYY hh:mm:ss", "31-01-2024 13:45:59", DT),
    ("DD/MM/YYYY hh:mm:ss", "31/01/2024 13:45:59", DT),
    ("YYYY-MM-DD hh:mm:ss", "2024-01-31 13:45:59", DT),
    ("YYYY/MM/DD hh:mm:ss", "2024/01/31 13:45:59", DT),
    ("DD-MM-YYYYThh:mm:ss.s", "31-01-2024T13:45:59.933", DTF),
    ("DD/MM/YYYYThh:mm:ss.s", "31/01/2024T13:45:59.933", DTF),
    ("DD-MM-YYYYThh:mm:ssTZD", "31-01-2024T21:45:59+08:00", DT),
    ("DD/MM/YYYYThh:mm:ssTZD", "31/01/2024T05:45:59-08:00", DT),
    ("YYYY-MM-DD hh:mm:ss.s", "2024-01-31 13:45:59.933", DTF),
    ("YYYY/MM/DD hh:mm:ss.s", "2024/01/31 13:45:59.933", DTF),
    ("YYYY-MM-DDThh:mm:ssTZD", "2024-01-31T13:45:59Z", DT),
    ("YYYY/MM/DDThh:mm:ssTZD", "2024/01/31T13:45:59Z", DT),
    ("YYYY-MM-DDThh:mm:ss.sTZD", "2024-01-31T13:45:59.933Z", DTF),
    ("YYYY/MM/DDThh:mm:ss.sTZD", "2024/01/31T14:45:59.933+01:00", DTF),
    ("YYYY-MM-DD hh:mm:ss.sTZD", "2024-01-31 13:45:59.933+00:00", DTF),
]


def test_the_list_is_moengages_list_of_19() -> None:
    assert len(DATETIME_FORMATS) == 19 and {c[0] for c in CASES} == set(DATETIME_FORMATS)


@pytest.mark.parametrize(("fmt", "value", "expected"), CASES)
def test_each_format_parses_to_utc(fmt: str, value: str, expected: datetime) -> None:
    assert parser_for(fmt)(value, UTC) == expected


@pytest.mark.parametrize(("fmt", "value", "_"), CASES)
def test_each_format_rejects_another_shape(fmt: str, value: str, _: datetime) -> None:
    with pytest.raises(RowError, match=f"does not match datetime format {fmt}"):
        parser_for(fmt)(value.replace("2024", "24", 1), UTC)


def test_fraction_of_any_length_and_app_timezone() -> None:
    parse = parser_for("YYYY-MM-DD hh:mm:ss.s")
    assert parse("2024-01-31 13:45:59.957299", UTC).microsecond == 957299
    assert parse("2024-01-31 13:45:59.9572991", UTC).microsecond == 957299
    ist = parser_for("YYYY-MM-DD hh:mm:ss")("2024-01-31 10:00:00", ZoneInfo("Asia/Kolkata"))
    assert ist == datetime(2024, 1, 31, 4, 30, tzinfo=UTC)
    tzd = parser_for("YYYY-MM-DDThh:mm:ssTZD")("2024-01-31T10:00:00Z", ZoneInfo("Asia/Kolkata"))
    assert tzd == datetime(2024, 1, 31, 10, 0, tzinfo=UTC)  # an explicit TZD wins over the app timezone


def test_impossible_dates_and_unknown_formats() -> None:
    with pytest.raises(RowError, match="not a valid date-time"):
        parser_for("YYYY-MM-DD")("2024-02-30", UTC)
    with pytest.raises(ValueError, match="unsupported datetime_format 'MM/DD/YYYY'"):
        parser_for("MM/DD/YYYY")
