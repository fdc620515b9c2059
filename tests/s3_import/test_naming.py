"""MoEngage's file naming: prefixes, the five date formats, extensions, no sub-folders."""

from __future__ import annotations

import pytest

from inflow.producers.s3_import.naming import DateFormat, event_prefix, name_pattern, object_name


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        (DateFormat.MM_YYYY, "01_2022", ["13_2022", "1_2022", "01-2022", "012022"]),
        (DateFormat.DDMMYYYY, "31012022", ["32012022", "20220131", "3101202"]),
        (DateFormat.YYYYMMDD, "20220112", ["20221312", "2022011", "12012022x"]),
        (DateFormat.MON_YYYY, "jan_2022", ["Jan_2022", "january_2022", "jan2022"]),
        (DateFormat.YYYYMMDD_HHMM, "20220131_1259", ["20220131_2460", "20220131_1260", "20220131"]),
    ],
)
def test_each_date_format_matches_only_its_own_suffix(fmt: DateFormat, good: str, bad: list[str]) -> None:
    pattern = name_pattern("registered_user_data", fmt, "csv", encrypted=False)
    assert pattern.match(f"registered_user_data_{good}.csv")
    for suffix in bad:
        assert not pattern.match(f"registered_user_data_{suffix}.csv"), suffix


def test_prefixes_of_each_import_type() -> None:
    assert event_prefix("Purchase Summary") == "Purchase_Summary"
    assert name_pattern("Purchase_Summary", DateFormat.DDMMYYYY, "csv", False).match(
        "Purchase_Summary_31011997.csv"
    )
    assert name_pattern("MOE_APP_OPENED", DateFormat.YYYYMMDD, "csv", False).match(
        "MOE_APP_OPENED_20240101.csv"
    )
    assert name_pattern("anonymous_user_data", DateFormat.MON_YYYY, "csv", False).match(
        "anonymous_user_data_jan_2022.csv"
    )
    custom = name_pattern("abc", DateFormat.DDMMYYYY, "csv", False)
    assert custom.match("abc_31012024.csv") and not custom.match("abcd_31012024.csv")
    assert not custom.match("xabc_31012024.csv")


def test_extensions_plain_and_encrypted() -> None:
    plain_csv = name_pattern("p", DateFormat.YYYYMMDD, "csv", False)
    plain_json = name_pattern("p", DateFormat.YYYYMMDD, "ndjson", False)
    enc_csv = name_pattern("p", DateFormat.YYYYMMDD, "csv", True)
    enc_json = name_pattern("p", DateFormat.YYYYMMDD, "ndjson", True)
    assert plain_csv.match("p_20240101.csv") and not plain_csv.match("p_20240101.json")
    assert not plain_csv.match("p_20240101.csv.gz") and not plain_csv.match("p_20240101.csv.asc")
    assert plain_json.match("p_20240101.json") and not plain_json.match("p_20240101.csv")
    assert enc_csv.match("p_20240101.csv.asc") and enc_csv.match("p_20240101.csv.pgp")
    assert not enc_csv.match("p_20240101.csv")
    assert enc_json.match("p_20240101.json.asc") and enc_json.match("p_20240101.json.pgp")


def test_only_objects_directly_in_the_folder_count() -> None:
    assert object_name("a/b/file.csv", "a/b") == "file.csv"
    assert object_name("a/b/c/file.csv", "a/b") is None  # sub-folder
    assert object_name("a/bc/file.csv", "a/b") is None  # sibling folder sharing a prefix
    assert object_name("a/b/", "a/b") is None  # the folder marker itself
