"""MoEngage's CSV and NDJSON file rules, the readers by format, and column mapping, on in-memory streams."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import pytest

from inflow.producers.s3_import.definition import FileFormat
from inflow.producers.s3_import.exceptions import FileFormatError, RowError
from inflow.producers.s3_import.mapping import ColumnMapping, Role, compile_mapping
from inflow.producers.s3_import.reading import (
    READERS,
    CountingReader,
    Row,
    Table,
    csv_table,
    ndjson_table,
    read_csv,
    read_ndjson,
    reader_for,
    text_stream,
)


def csv_rows(data: bytes) -> tuple[list[str], list[Any]]:
    header, rows = read_csv(text_stream(CountingReader(io.BytesIO(data))))
    return header, list(rows)


def test_rows_are_numbered_and_bad_rows_travel_as_data() -> None:
    header, rows = csv_rows(b'a,b\n1,2\n\n3\n"x,y",z\n')
    assert header == ["a", "b"]
    assert [(r.number, r.cells, r.error) for r in rows] == [
        (1, ["1", "2"], None),
        (2, None, "empty row"),
        (3, None, "row has 1 columns, the header has 2"),
        (4, ["x,y", "z"], None),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,b\n", "Found zero data rows in the file"),
        (b"", "No data found"),
        (b"a,a\n1,2\n", "Duplicate column names in the header: a"),
        (b"a,,c\n1,2,3\n", "Column name missing in the header \\(column 2\\)"),
        (b"a,b\r\n1,2\r\n", "Only \\\\n line endings are supported"),
        (
            b"a,b\n1,caf\xe9\n",
            "Please save it as UTF-8 and re-upload \\('utf-8' codec can't decode byte 0xe9",
        ),
        (
            b'a,b\n1,"' + b"x" * 131_073 + b'"\n',
            "^Field larger than field limit \\(131072 characters, 128 KB\\): data row 1. Column value found",
        ),
        (b'a,b\n1,"unclosed\n2,3\n', "Column value found larger|Cannot parse the CSV"),
    ],
)
def test_file_level_errors(data: bytes, message: str) -> None:
    with pytest.raises(FileFormatError, match=message):
        csv_rows(data)


def test_a_cell_of_exactly_128_kb_is_accepted_and_bom_is_dropped() -> None:
    header, rows = csv_rows(b"\xef\xbb\xbfa,b\n1," + b"x" * 131_072 + b"\n")
    assert header == ["a", "b"] and len(rows[0].cells[1]) == 131_072


def test_ndjson_flattens_two_levels_into_dot_notation() -> None:
    data = b'{"user": {"id": "u1", "name": "A"}, "n": 1}\n\nnot json\n[1]\n{"user": {"id": "u2"}}\n'
    header, rows = read_ndjson(text_stream(CountingReader(io.BytesIO(data))), ["user.id", "n", "user"])
    assert header == ["user", "user.id", "user.name", "n"]
    got = [(r.number, r.cells, r.error and r.error.split(":")[0]) for r in rows]
    assert got == [
        (1, ["u1", 1, {"id": "u1", "name": "A"}], None),
        (2, None, "empty row"),
        (3, None, "not a JSON object"),
        (4, None, "not a JSON object"),
        (5, ["u2", "", {"id": "u2"}], None),
    ]
    with pytest.raises(FileFormatError, match="Found zero data rows"):
        read_ndjson(text_stream(CountingReader(io.BytesIO(b""))), ["a"])


def mapping(*entries: dict[str, Any], header: list[str]) -> Any:
    return compile_mapping(header, [ColumnMapping.model_validate(e) for e in entries], UTC, UTC)


def test_types_arrays_and_empty_cells() -> None:
    m = mapping(
        {"column": "id", "moe_attr": "uid"},
        {"column": "d", "moe_attr": "d", "type": "double"},
        {"column": "b", "moe_attr": "b", "type": "bool"},
        {"column": "s", "moe_attr": "s"},
        {"column": "nums", "moe_attr": "nums", "type": "double"},
        header=["id", "d", "b", "s", "nums"],
    )
    attrs, roles, ids = m.convert(["u1", "1.5", "FALSE", "[a|b|]", '[1|2|"abc"|3.5]'])
    assert roles == {Role.USER_ID: "u1"} and ids == {}
    assert attrs == {"d": 1.5, "b": False, "s": ["a", "b"], "nums": [1.0, 2.0, 3.5]}
    assert m.convert(["u2", "", "", "", ""])[0] == {}
    for cells, reason in (
        (["u", "x", "", "", ""], "'d': value 'x' is not a double"),
        (["u", "", "maybe", "", ""], "'b': value 'maybe' is not a bool"),
    ):
        with pytest.raises(RowError, match=reason):
            m.convert(cells)


def test_manifest_semantics_ignored_unmapped_and_skipped_columns() -> None:
    m = mapping(
        {"column": "ID", "moe_attr": "uid"},
        {"column": "Gone", "moe_attr": "gone"},
        {"column": "Secret", "moe_attr": "secret", "is_skipped": True},
        {"column": "Mail", "moe_attr": "email", "role": "identifier"},
        header=["ID", "Secret", "Extra", "Mail"],
    )
    assert m.ignored_manifest_columns == ["Gone"]
    assert m.unmapped_columns == ["Extra"]
    assert m.skipped_columns == ["Secret"]
    attrs, roles, ids = m.convert(["u1", "hidden", "x", "a@b.io"])
    assert attrs == {"email": "a@b.io"} and ids == {"email": "a@b.io"} and roles == {Role.USER_ID: "u1"}


def test_readers_are_looked_up_by_format_and_an_unknown_one_names_the_known_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sorted(READERS) == ["csv", "ndjson"]
    assert {reader_for(f) for f in FileFormat} == {csv_table, ndjson_table}  # every format has a reader
    with pytest.raises(FileFormatError, match="no reader for file format 'tsv'; known formats: csv, ndjson"):
        reader_for("tsv")

    def tsv_table(text: io.TextIOWrapper, mapped: Sequence[str]) -> Table:
        header = text.readline().rstrip("\n").split("\t")
        rows = (Row(n, line.rstrip("\n").split("\t")) for n, line in enumerate(text, 1))
        return Table(header, header, rows, [h for h in header if h not in mapped])

    monkeypatch.setitem(READERS, "tsv", tsv_table)  # adding a format is one entry
    table = reader_for("tsv")(text_stream(CountingReader(io.BytesIO(b"a\tb\n1\t2\n"))), ["a"])
    assert (table.header, table.unmapped, [r.cells for r in table.rows]) == (["a", "b"], ["b"], [["1", "2"]])


def test_tables_name_the_cells_of_a_row_and_the_unmapped_columns() -> None:
    csv = csv_table(text_stream(CountingReader(io.BytesIO(b"id,x,y\n1,2,3\n"))), ["id", "y"])
    assert (csv.header, csv.columns, csv.unmapped) == (["id", "x", "y"], ["id", "x", "y"], ["x"])
    data = b'{"user": {"id": "u1"}, "n": 1, "extra": 2}\n'
    nd = ndjson_table(text_stream(CountingReader(io.BytesIO(data))), ["user.id", "n"])
    assert (nd.columns, nd.unmapped, [r.cells for r in nd.rows]) == (["user.id", "n"], ["extra"], [["u1", 1]])
    preview = ndjson_table(text_stream(CountingReader(io.BytesIO(data))), [])
    assert preview.columns == ["user", "user.id", "n", "extra"]
